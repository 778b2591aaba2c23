"""Names every layer shares: the kinds of vector set a run offers, and the tags that can define "similar".

This module imports nothing from mess (it is the bottom layer of the import contract).
"""

from __future__ import annotations

import zipfile
import zlib
from typing import Final, Literal

VectorKind = Literal["layer", "group", "aspect", "fused", "learned", "all"]
FUSED: VectorKind = "fused"  # vectors of `mess fuse apply`, stored as the run's derived set of this name
LEARNED: VectorKind = "learned"  # the head shipped for a model (mess.models.head), applied to all layers

DEFAULT_NORM: Final = "zscore"  # per-dimension z-scores, then L2 per layer: best on real soundtracks (docs/quality.md)

PROBE_KINDS = ("ridge", "mlp")  # `mess probe --probe`: each writes its own report (see mess.store.reports)

ENCODED_R2: Final = 0.3  # aspects the probe predicts worse than this are neither evidence nor a search space

LABEL_FIELDS = ("artist", "album", "genre", "composer", "title")  # track tags that can define relevance

# What np.load raises on a cut short or damaged .npz file (found by truncating and flipping bytes of real ones):
# a cache or index file that raises one of these is treated as missing, never as a traceback.
NPZ_ERRORS: Final = (OSError, KeyError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error)
