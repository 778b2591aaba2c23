"""Music Embedding Similarity Search."""

import os
from pathlib import Path

# librosa compiles with numba and caches the machine code (cache=True). Left to itself numba
# writes that cache into site-packages, where concurrent first runs can leave index and code
# files that disagree, and every later run crashes with SIGSEGV. mess keeps its own cache
# folder (unless the user chose one) and fills it under a lock: see mess.audio.jit_cache.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                              / "mess" / "numba"))
