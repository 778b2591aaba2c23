"""The small decisions of `mess artists` (mess.artists.analysis), in process: options refused, where the matrix
goes, which comparison and space the saved hybrid weights were learned with, the tags file, the centring note."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mess.artists.analysis import (
    FEW_ARTISTS,
    ArtistOptions,
    Hybrid,
    SpaceChoice,
    _matrix_prefix,
    centring_note,
    load_tags,
    saved_comparison,
    saved_selection,
)
from mess.artists.profiles import ArtistError
from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.store import FeatureStore


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    fs = FeatureStore(tmp_path / "store")
    yield fs
    fs.close()


def _saved(store: FeatureStore, data: object) -> None:
    """A weights file as `mess artists hybrid` writes it (or as a user left it)."""
    store.reports_dir.mkdir(parents=True, exist_ok=True)
    (store.reports_dir / "artists_hybrid.json").write_text(json.dumps(data), encoding="utf-8")


def test_artist_options_refuse_an_unknown_method_and_fewer_tracks_allowed_than_required() -> None:
    with pytest.raises(ArtistError, match="unknown method 'cosine'"):
        ArtistOptions(method="cosine")
    with pytest.raises(ArtistError, match=r"--min-tracks \(4\) is larger than --max-tracks \(3\)"):
        ArtistOptions(min_tracks=4, max_tracks=3)
    same = ArtistOptions(method="chamfer", min_tracks=3, max_tracks=3)  # every artist has at most, and needs, 3
    assert (same.method, same.min_tracks, same.max_tracks) == ("chamfer", 3, 3)


def test_a_space_is_given_by_a_layer_an_aspect_or_the_fused_vectors() -> None:
    assert not SpaceChoice().given
    assert SpaceChoice(layer="mfcc").given and SpaceChoice(aspect="timbre").given and SpaceChoice(fused=True).given
    assert SpaceChoice(layer="0").given  # a layer index, as typed


def test_the_centring_note_is_said_below_few_artists_and_its_numbers_are_centred_cosines() -> None:
    """The note's figures (two centred artists score -1, three about -0.5) hold whatever the vectors: centred on
    their mean, k artists' vectors sum to 0."""
    rng = np.random.default_rng(0)
    for k, claimed in ((2, -1.0), (3, -0.5)):
        v = rng.normal(size=(k, 64))
        c = v - v.mean(axis=0)
        cos = (c @ c.T) / np.outer(np.linalg.norm(c, axis=1), np.linalg.norm(c, axis=1))
        assert cos[~np.eye(k, dtype=bool)].mean() == pytest.approx(claimed, abs=0.1)
        note = centring_note(k, "--no-center")
        assert note is not None and note.startswith(f"only {k} artists") and note.endswith(
            "--no-center compares them as they are")
    assert centring_note(FEW_ARTISTS - 1, "center=false") is not None
    assert "center=false compares" in centring_note(1, "center=false")
    assert centring_note(FEW_ARTISTS, "--no-center") is None and centring_note(40, "--no-center") is None


def test_the_matrix_goes_to_a_prefix_a_folder_or_the_reports_and_never_to_a_pipe(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    assert _matrix_prefix(None, reports, "artists-matrix-x") == reports / "artists-matrix-x"
    folder = tmp_path / "out"
    folder.mkdir()
    assert _matrix_prefix(folder, reports, "artists-matrix-x") == folder / "artists-matrix-x"
    for given in ("heat.png", "heat.csv", "heat.PNG", "heat.Csv"):  # -o heat.png: heat.png and heat.csv
        assert _matrix_prefix(tmp_path / given, reports, "n") == tmp_path / "heat"
    for given in ("heat", "heat.svg", "my.matrix"):  # any other ending is part of the prefix
        assert _matrix_prefix(tmp_path / given, reports, "n") == tmp_path / given
    dotted = tmp_path / "v1.2.png"
    assert _matrix_prefix(dotted, reports, "n") == tmp_path / "v1.2"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ArtistError, match="not a device or a pipe"):
        _matrix_prefix(fifo, reports, "n")


def test_the_saved_weights_comparison_fills_what_was_not_passed_and_says_what_was(store: FeatureStore) -> None:
    notes: list[str] = []
    mean_centred = ArtistOptions()
    assert saved_comparison(store, mean_centred, Hybrid(), notes.append) == mean_centred  # no weights saved
    _saved(store, {"method": "chamfer", "centered": False, "weights": {"audio": 1.0}})
    used = saved_comparison(store, mean_centred, Hybrid(), notes.append)
    assert (used.method, used.center) == ("chamfer", False) and notes == []
    used = saved_comparison(store, mean_centred, Hybrid(method_given=True), notes.append)
    assert (used.method, used.center) == ("mean", False)
    assert notes == ["the saved hybrid weights were learned with --method chamfer; using --method mean as asked, so "
                     "the audio component is not the one they were learned on"]
    notes.clear()
    used = saved_comparison(store, mean_centred, Hybrid(center_given=True), notes.append)
    assert (used.method, used.center) == ("chamfer", True)
    assert notes == ["the saved hybrid weights were learned without centring; using --center as asked, so the audio "
                     "component is not the one they were learned on"]
    notes.clear()
    raw = ArtistOptions(center=False)
    _saved(store, {"method": "mean", "centered": True})
    used = saved_comparison(store, raw, Hybrid(method_given=True, center_given=True), notes.append)
    assert (used.method, used.center) == ("mean", False)
    assert notes == ["the saved hybrid weights were learned with centring; using --no-center as asked, so the audio "
                     "component is not the one they were learned on"]  # the method agrees: nothing said of it
    notes.clear()
    for method, centered in (("cosine", "yes"), (None, 1), (["chamfer"], None)):  # hand-edited: not ours to use
        _saved(store, {"method": method, "centered": centered})
        assert saved_comparison(store, raw, Hybrid(method_given=True, center_given=True), notes.append) == raw
    assert notes == []
    (store.reports_dir / "artists_hybrid.json").write_bytes(b'{"method": "chamfer"')  # cut short
    assert saved_comparison(store, raw, Hybrid(), notes.append) == raw
    _saved(store, ["chamfer", False])
    assert saved_comparison(store, raw, Hybrid(), notes.append) == raw and notes == []


def test_the_saved_weights_space_is_used_for_their_model_and_said_for_another_run(store: FeatureStore) -> None:
    info = ModelInfo("synthetic", "r1", 16000, ("a", "b"), (4, 4))
    run = store.ensure_run(run_key(info, WindowPolicy()))
    other = store.ensure_run(run_key(info, WindowPolicy(window_seconds=2.0)))
    notes: list[str] = []
    assert saved_selection(store, run, notes.append) == {} and notes == []
    _saved(store, {"model": "synthetic", "run_id": run.id, "space": "b", "selection": {"layer": "b"}})
    assert saved_selection(store, run, notes.append) == {"layer": "b"} and notes == []
    assert saved_selection(store, other, notes.append) == {"layer": "b"}  # the same layers: used, and said
    assert notes == [f"the saved weights were learned on synthetic run {run.id}; the audio component here is run "
                     f"{other.id}'s (pass --model synthetic@{run.id} to use theirs)"]
    notes.clear()
    _saved(store, {"model": "musicnn-msd", "run_id": run.id, "space": "penultimate", "selection": {"layer": "x"}})
    assert saved_selection(store, run, notes.append) == {}
    assert notes == ["the saved weights were learned on musicnn-msd (penultimate); the audio component here is "
                     "synthetic's (pass --model musicnn-msd to use theirs)"]
    notes.clear()
    _saved(store, {"selection": ["b"]})  # no model or run named: this run's; a selection that is not an object
    assert saved_selection(store, run, notes.append) == {} and notes == []
    _saved(store, {"selection": {"fused": True}})
    assert saved_selection(store, run, notes.append) == {"fused": True} and notes == []


def test_a_tags_file_maps_each_artist_to_a_list_of_strings(tmp_path: Path) -> None:
    assert load_tags(None) is None
    good = tmp_path / "tags.json"
    good.write_text(json.dumps({"Alpha": ["rock", "indie"], "Beta": []}), encoding="utf-8")
    assert load_tags(good) == {"Alpha": ["rock", "indie"], "Beta": []}
    for bad in (["rock"], {"Alpha": "rock"}, {"Alpha": ["rock", 1]}, {"Alpha": None}):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad), encoding="utf-8")
        with pytest.raises(ArtistError, match="must map each artist to a list of tags"):
            load_tags(path)
    with pytest.raises(ArtistError, match="no such tags file"):
        load_tags(tmp_path / "missing.json")


@pytest.mark.parametrize("selection", [{"layer": ["b"]}, {"aspect": ["timbre"]}, {"layer": 1.5}, {"fused": "no"}],
                         ids=["layer-a-list", "aspect-a-list", "layer-a-number", "fused-a-word"])
def test_a_hand_edited_saved_selection_that_is_malformed_is_an_artist_error(store: FeatureStore,
                                                                            selection: dict) -> None:
    """`similar --hybrid` without --layer read the saved selection as it stood: a layer or an aspect written as a
    list ended in a TypeError traceback (int() of a list, an unhashable list), a layer written as 1.5 searched layer
    1 and a fused written as "no" searched the fused vectors."""
    import hashlib

    from mess.artists.analysis import similar_artists
    from mess.store import TrackVectors

    run = store.ensure_run(run_key(ModelInfo("synthetic", "r1", 16000, ("a", "b"), (8, 8)), WindowPolicy()))
    rng = np.random.default_rng(1)
    for a in range(4):
        for t in range(2):
            digest = hashlib.sha1(f"{a}-{t}".encode()).hexdigest()
            store.upsert_track(Path(f"/music/{a}{t}.flac"), digest, 1, 0.0, {"duration": 30.0},
                               {"artist": f"Artist {a}"})
            layers = [rng.normal(size=8).astype(np.float32) for _ in range(2)]
            store.write_vectors(run, [TrackVectors(digest, layers, [v[None] for v in layers], [0.0])])
    _saved(store, {"weights": {"audio": 1.0}, "model": "synthetic", "run_id": run.id, "selection": {"layer": "b"}})
    good = similar_artists(store, "Artist 0", 2, ArtistOptions(min_tracks=1), SpaceChoice(), hybrid=Hybrid())
    assert good.space == "b"
    _saved(store, {"weights": {"audio": 1.0}, "model": "synthetic", "run_id": run.id, "selection": selection})
    with pytest.raises(ArtistError, match="malformed weights file .*artists_hybrid.json"):
        similar_artists(store, "Artist 0", 2, ArtistOptions(min_tracks=1), SpaceChoice(), hybrid=Hybrid())
