"""Music Embedding Similarity Search."""

from mess.audio.jit_cache import before_numba

# Before anything imports librosa: numba must cache into a folder of this process's own.
before_numba()
