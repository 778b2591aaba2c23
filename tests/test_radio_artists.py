"""Radio spreads artists by the artists module's identity: spelling variants and guest credits are one artist."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mess.artists.profiles import build_artists
from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.playlists.playlist import artist_key
from mess.playlists.radio import radio
from mess.query import resolve_query
from mess.store import FeatureStore, Run, Track, TrackVectors

DIM = 8
BEYONCE = ["Beyoncé", "Beyoncé feat. Jay-Z", unicodedata.normalize("NFD", "Beyoncé"), "Beyonce"]


def _add(store: FeatureStore, run: Run, name: str, vector: np.ndarray, artist: str, title: str) -> None:
    store.upsert_track(Path(f"/music/{name}.flac"), name, 1, 0.0, {"duration": 10.0},
                       {"artist": artist, "album": None, "title": title, "genre": None, "composer": None})
    store.write_vectors(run, [TrackVectors(name, [vector], [vector[None]], [0.0])])


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[tuple[FeatureStore, Run]]:
    """A Beyoncé cluster (seed 'Beyoncé - Halo', three variant spellings) far from 4 other artists x 2 tracks."""
    rng = np.random.default_rng(0)
    fs = FeatureStore(tmp_path / "store")
    run = fs.ensure_run(run_key(ModelInfo("toy", "r1", 16000, ("l0",), (DIM,)), WindowPolicy()))
    centre = rng.normal(size=DIM) * 4
    for i, (artist, title) in enumerate(zip(BEYONCE, ["Halo", "Crazy in Love", "Sweet", "Halo"], strict=True)):
        _add(fs, run, f"b{i}", (centre + rng.normal(size=DIM) * 0.3).astype(np.float32), artist, title)
    for a in range(4):
        other = rng.normal(size=DIM) * 4
        for j in range(2):
            _add(fs, run, f"o{a}{j}", (other + rng.normal(size=DIM) * 0.3).astype(np.float32), f"Other {a}", f"T{j}")
    yield fs, run
    fs.close()


def _track(tid: int, artist: str | None, composer: str | None = None) -> Track:
    return Track(id=tid, path=f"/m/{tid}", content_hash=f"h{tid}", duration=1.0, artist=artist, album=None,
                 title=None, genre=None, composer=composer)


def test_artist_key_is_the_artists_module_identity() -> None:
    tracks = [_track(i, a) for i, a in enumerate(BEYONCE)]
    assert len({artist_key(t) for t in tracks}) == 1
    assert len({build_artists(tracks).row_of(t) for t in tracks}) == 1
    assert artist_key(_track(5, "  ", composer="J. S. Bach")) == artist_key(_track(6, "j.s. bach"))
    assert artist_key(_track(7, None)) == ""
    assert artist_key(_track(8, "Dance With the Dead")) != artist_key(_track(9, "Dance"))


def test_radio_spreads_spelling_variants_and_skips_the_seed_song_under_another_spelling(
        store: tuple[FeatureStore, Run]) -> None:
    fs, run = store
    seed = resolve_query(fs, "/music/b0.flac", run)
    playlist = radio(fs, run, [seed], 9)
    titles = [(t.artist, t.title) for t in playlist.tracks]
    assert ("Beyonce", "Halo") not in titles  # the seed song, tagged without the accent
    assert len(playlist) == 9 and {"Beyoncé feat. Jay-Z", BEYONCE[2]} <= {t.artist for t in playlist.tracks}
    artists = build_artists(fs.tracks(run))
    rows = [artists.row_of(t) for t in (seed.track, *playlist.tracks)]
    assert all(len(set(rows[i:i + 4])) == len(rows[i:i + 4]) for i in range(len(rows))), titles  # window 3
