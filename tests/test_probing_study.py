"""`mess probe`'s decisions around the probes, in process and without audio (mess.probing.study and controls):
what is refused before any target is computed, when a probe may replace the stored aspect map and what it stores,
the shuffled control's rows, and the random-init control's refusals."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.models.base import FILE_REVISION, ModelInfo
from mess.probing.controls import ControlError, _as_catalogued, random_init_run, shuffled_rows
from mess.probing.probes import ProbeError, ProbeScores
from mess.probing.report import ProbeReport
from mess.probing.study import ProbeOptions, _artist, probe_run, probed_every_layer, save_aspect_map, unmapped_reason
from mess.probing.targets import ASPECTS, TARGET_NAMES, TARGETS
from mess.store import FeatureStore, Run, TrackVectors


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    fs = FeatureStore(tmp_path / "store")
    yield fs
    fs.close()


def _run(store: FeatureStore, name: str = "synthetic", revision: str = "r1", n_tracks: int = 0,
         folder: Path = Path("/nowhere")) -> Run:
    """A run of two 4-wide layers 'a' and 'b' over ``n_tracks`` tracks at ``folder``/tN.wav (files not written)."""
    run = store.ensure_run(run_key(ModelInfo(name, revision, 16000, ("a", "b"), (4, 4)), WindowPolicy()))
    rng = np.random.default_rng(0)
    for i in range(n_tracks):
        digest = hashlib.sha1(f"{name}-{i}".encode()).hexdigest()
        store.upsert_track(folder / f"t{i}.wav", digest, 1, 0.0, {"duration": 30.0}, {"artist": f"A{i}"})
        layers = [rng.normal(size=4).astype(np.float32) for _ in range(2)]
        store.write_vectors(run, [TrackVectors(digest, layers, [v[None] for v in layers], [0.0])])
    return run


def _scores(layers: tuple[str, ...], by_layer: dict[str, dict[str, float]]) -> ProbeScores:
    """R^2 of every target: ``by_layer[layer][aspect]`` for each target of the aspect (NaN for an aspect not given)."""
    r2 = np.array([[by_layer[layer].get(t.aspect, np.nan) for t in TARGETS] for layer in layers])
    return ProbeScores(layers, TARGET_NAMES, r2, np.zeros_like(r2))


def test_a_probe_refuses_unknown_controls_probes_and_too_few_tracks_before_computing_targets(
        store: FeatureStore) -> None:
    run = _run(store, n_tracks=3)  # files that do not exist: a refusal must come before any target is computed
    with pytest.raises(ProbeError, match=r"^unknown control 'bogus'; use shuffled, random-init or none$"):
        probe_run(store, run, ProbeOptions(controls=("shuffled", "zzz", "bogus")))
    with pytest.raises(ProbeError, match=r"^unknown probe 'svm'; use ridge or mlp$"):
        probe_run(store, run, ProbeOptions(probe="svm"))
    with pytest.raises(ProbeError, match=r"^synthetic has 3 tracks in the store; probing needs at least 4$"):
        probe_run(store, run, ProbeOptions(controls=("shuffled", "random-init"), probe="mlp"))
    four = _run(store, name="four", n_tracks=4)  # enough tracks in the store; their files are gone: no targets
    with pytest.raises(ProbeError, match=r"^probing needs at least 4 tracks, got 0$"):
        probe_run(store, four, ProbeOptions(controls=()))


def test_only_a_probe_of_every_layer_that_maps_an_aspect_replaces_the_stored_map(store: FeatureStore) -> None:
    run = _run(store)
    store.set_aspect_map(run, [("timbre", "b", 0.9, 0.1)])
    kept = store.aspect_map(run)

    def report(conditions: dict[str, ProbeScores], missing: int = 0) -> ProbeReport:
        return ProbeReport("synthetic", "r1", run.id, {}, 12, "folds", "ridge", 1.0, conditions,
                           missing=[(f"/gone{i}.wav", "removed") for i in range(missing)], tracks_digest="d")

    some = report({"trained": _scores(("a",), {"a": dict.fromkeys(ASPECTS, 0.5)})})
    assert not probed_every_layer(run, some)
    assert unmapped_reason(run, some) == ("the probe covered 1 of 2 layers; only a probe of every layer maps "
                                          "aspects")
    twice = report({"trained": _scores(("a", "a"), {"a": dict.fromkeys(ASPECTS, 0.5)})})  # one layer, counted once
    assert unmapped_reason(run, twice).startswith("the probe covered 1 of 2 layers")
    constant = report({"trained": _scores(("a", "b"), {"a": {}, "b": {}})})  # every target constant: all NaN
    assert probed_every_layer(run, constant)
    assert unmapped_reason(run, constant) == ("no aspect could be mapped (every proxy target is the same on these "
                                              "tracks)")
    for refused in (some, twice, constant):
        assert save_aspect_map(store, run, refused) is False
    assert store.aspect_map(run) == kept
    # 'a' predicts timbre (0.6 vs 0.2), 'b' every other aspect (0.7 vs 0.3); shuffled targets reach 0.1 on timbre
    # and nothing elsewhere (a negative control score takes nothing off)
    trained = {"a": {x: 0.6 if x == "timbre" else 0.3 for x in ASPECTS},
               "b": {x: 0.2 if x == "timbre" else 0.7 for x in ASPECTS}}
    shuffled = {"a": {x: 0.1 if x == "timbre" else -0.4 for x in ASPECTS}, "b": dict.fromkeys(ASPECTS, -0.2)}
    full = report({"trained": _scores(("b", "a"), trained), "shuffled": _scores(("b", "a"), shuffled)}, missing=2)
    assert probed_every_layer(run, full) and unmapped_reason(run, full) is None
    assert save_aspect_map(store, run, full) is True
    assert store.aspect_map(run) == {x: "a" if x == "timbre" else "b" for x in ASPECTS}
    assert store.aspect_scores(run) == pytest.approx({x: 0.5 if x == "timbre" else 0.7 for x in ASPECTS})
    assert store.aspect_map_tracks(run) == 14  # the run's tracks: 12 probed and 2 without targets
    assert store.aspect_map_probed_at(run) == full.probed_at and store.aspect_map_digest(run) == "d"


def test_tracks_are_grouped_by_their_main_artist_else_their_composer() -> None:
    from mess.store import Track

    def track(artist: str | None, composer: str | None = None) -> Track:
        return Track(1, "/m/t.wav", "h", 30.0, artist, None, None, None, composer)

    assert _artist(track("Alpha feat. Beta")) == _artist(track("alpha")) == _artist(track("Alpha (with Gamma)"))
    assert _artist(track("Alpha")) != _artist(track("Beta"))
    assert _artist(track(None, "J. S. Bach")) == _artist(track("J. S. Bach")) is not None
    assert _artist(track("Various Artists", "Beta")) == _artist(track("Beta"))  # names no artist: the composer
    assert _artist(track(None)) is None and _artist(track("  ", None)) is None


def test_shuffled_targets_keep_each_row_whole_and_are_the_same_for_one_seed() -> None:
    y = np.arange(40, dtype=np.float64).reshape(10, 4)  # row i holds 4i .. 4i+3: a row split apart would show
    a = shuffled_rows(y, 3)
    assert a.shape == y.shape and sorted(map(tuple, a)) == sorted(map(tuple, y))
    assert (np.diff(a, axis=1) == 1).all() and (a[:, 0] % 4 == 0).all()
    assert not np.array_equal(a, y) and np.array_equal(shuffled_rows(y, 3), a)
    assert not np.array_equal(shuffled_rows(y, 4), a)
    assert np.array_equal(shuffled_rows(y), shuffled_rows(y, 0))  # 'seed 0', as the report's note says


def test_the_random_init_control_refuses_what_it_cannot_rebuild(store: FeatureStore, tmp_path: Path) -> None:
    twin = _run(store, name="synthetic-random-init")
    with pytest.raises(ControlError, match=r"^synthetic-random-init is already a random-init control$"):
        random_init_run(store, twin)
    onnx = _run(store, name="tagger", revision=FILE_REVISION + "ab12")
    with pytest.raises(ControlError, match=r"^tagger was extracted with a model file \(\.onnx\)"):
        random_init_run(store, onnx)
    other = _run(store, name="synthetic")
    with pytest.raises(ControlError, match=r"^dsp loads model 'dsp', not the probed 'synthetic'$"):
        random_init_run(store, other, source="dsp")
    gone = _run(store, name="musicnn-msd", revision="x", n_tracks=2, folder=tmp_path / "gone")
    with pytest.raises(ControlError, match=r"^none of the musicnn-msd tracks are on disk any more"):
        random_init_run(store, gone)


def test_a_file_is_as_catalogued_only_while_its_stamp_holds(store: FeatureStore, tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    path.write_bytes(b"RIFF" + bytes(100))
    stat = path.stat()
    store.upsert_track(path, "h1", stat.st_size, stat.st_mtime, {"duration": 1.0}, {})
    track = next(t for t in store.tracks() if t.path == str(path))
    assert _as_catalogued(store, track)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touched since
    assert not _as_catalogued(store, track)
    path.unlink()
    assert not _as_catalogued(store, track)
