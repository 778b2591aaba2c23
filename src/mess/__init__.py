"""Music Embedding Similarity Search."""

from mess.audio.jit_cache import use_private_cache

# Before anything imports librosa: numba must cache into a folder of this process's own.
use_private_cache()
