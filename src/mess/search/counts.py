"""Counts a caller gives the search (how many results, how many neighbours), checked once for every function."""

from __future__ import annotations

import numpy as np


def whole_count(value: object, name: str, of: str, least: int) -> int:
    """``value`` as an int (a numpy integer too: faiss and slices take no other), ValueError naming ``name`` where it
    is no whole number of ``of``, ``least`` or more (a bool, 2.5, -1)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ValueError(f"{name} must be a whole number of {of}, {least} or more; got {value!r}")
    return int(value)
