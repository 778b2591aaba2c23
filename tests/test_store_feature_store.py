"""FeatureStore's catalog queries, read in-process on a real store: tracks found by name, failures, runs, the aspect
map and derived sets. Expected answers come from the fixture's own geometry (which file has which name, content and
vectors), from hashlib and from numpy."""

from __future__ import annotations

from pathlib import Path

import pytest

from mess.store import FeatureStore, StoreError


def _file(store: FeatureStore, path: str, content_hash: str) -> int:
    return store.upsert_track(Path(path), content_hash, 10, 1.0, {}, {})


def test_a_file_name_is_matched_in_its_own_case_before_any_other(tmp_path: Path) -> None:
    """SQLite's LIKE ignores ASCII case: `mess similar intro.ogg` was refused as naming two tracks (listing
    'Intro.ogg', another file) though one file alone is named intro.ogg."""
    store = FeatureStore(tmp_path)
    upper = _file(store, "/m/a/Intro.ogg", "h1")
    lower = _file(store, "/m/b/intro.ogg", "h2")
    assert store.track("intro.ogg").id == lower and store.track("Intro.ogg").id == upper
    theme = _file(store, "/m/c/Theme.OGG", "h3")
    assert store.track("theme.ogg").id == theme  # no file of that exact name: a name in another case still finds it
    _file(store, "/m/d/THEME.ogg", "h4")
    with pytest.raises(StoreError, match="2 tracks are named 'theme.ogg'"):
        store.track("theme.ogg")
    store.close()
