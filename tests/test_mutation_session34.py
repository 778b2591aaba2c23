"""What mutation testing of session 33's new code found untested (notes/mutation_session34.md): Ray's inspected rows
handed on in input order as soon as they can be, the advice's extract options, the reader's look at the store lock,
the duplicate guard's audio comparisons, the re-ranked scores' rounding and a file never read left out of the
catalogue. Expected answers come from the
definitions (the order the rows arrive in), shlex and the window policy's own JSON, real processes holding the lock,
the fixture's copies of one recording, and numpy."""

from __future__ import annotations

import shlex
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from test_same_recording import COPIES, originals  # noqa: F401 -- its fixture: FLACs of 4 tracks, copies of the first

from mess.audio.decode import probe
from mess.audio.windows import WindowPolicy
from mess.store import FeatureStore, RunKey, Track
from mess.store.lock import StoreLock

# ---------------------------------------------------------------- Ray's rows in input order


def test_each_inspected_row_is_handed_on_as_soon_as_the_rows_before_it_have_come() -> None:
    """Rows arrive as Ray's tasks finish; each path's row goes on (to be catalogued) once every path before it has
    come, not when the last row has: a driver killed mid-way has catalogued a prefix of the input."""
    from mess.scale.ray_extract import _in_order

    paths = [f"p{i}" for i in range(7)]
    arrival = ["p2", "p0", "p1", "p5", "p3", "p6", "p4"]
    pulled: list[str] = []

    def rows():  # noqa: ANN202
        for path in arrival:
            pulled.append(path)
            yield {"path": path}

    handed = [(row["path"], len(pulled)) for row in _in_order(rows(), paths)]
    first_with_all = [min(k for k in range(1, len(arrival) + 1) if set(paths[:i + 1]) <= set(arrival[:k]))
                      for i in range(len(paths))]
    assert handed == list(zip(paths, first_with_all, strict=True))


# ---------------------------------------------------------------- the advice's extract options


def _run(store: FeatureStore, policy: WindowPolicy, model: str = "mine"):  # noqa: ANN202
    return store.ensure_run(RunKey(model, "r1", policy.to_json(), 16000, ("layer",), (4,)))


def _policy(options: str) -> WindowPolicy:
    """The window policy `mess extract` makes of the advised ``options`` (its defaults where they say nothing)."""
    words = shlex.split(options)
    kept = dict(zip(words[::2], words[1::2], strict=True))
    defaults = WindowPolicy()
    return WindowPolicy(window_seconds=float(kept.get("--window", defaults.window_seconds)),
                        max_windows=int(kept.get("--max-windows", defaults.max_windows)))


@pytest.mark.parametrize("window, count", [(30.0, 4), (4.0, 2), (2.5, 7), (12.3456789, 4), (1234567.0, 1)])
def test_the_advised_window_options_make_the_runs_own_policy(tmp_path: Path, window: float, count: int) -> None:
    """The advice `mess extract FOLDER OPTIONS` embeds files into the run, not a new one: its --window and
    --max-windows give the run's policy back exactly (a window of 12.3456789 s was advised as 12.3457: another
    run); the defaults are left out."""
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = _run(store, WindowPolicy(window_seconds=window, max_windows=count))
        options = store.extract_options(run)
    assert _policy(options).to_json() == run.policy, options
    assert ("--window" in options) == (window != WindowPolicy().window_seconds), options
    assert ("--max-windows" in options) == (count != WindowPolicy().max_windows), options


def test_the_advice_names_a_model_files_path_and_preset_quoted_and_only_the_name_else(tmp_path: Path) -> None:
    """A run made from a model file: --model its path (quoted for a shell) and --preset the preset it recorded; a
    record without a preset, none; a damaged record or none at all: --model the run's name."""
    path = str(tmp_path / "my models" / "it's.onnx")
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = _run(store, WindowPolicy())
        assert store.extract_options(run) == "--model mine"
        store.set_model_source(run, {"kind": "onnx", "path": path, "preset": "discogs effnet", "revision": "r1"})
        assert shlex.split(store.extract_options(run)) == ["--model", path, "--preset", "discogs effnet"]
        store.set_model_source(run, {"kind": "onnx", "path": path, "revision": "r1"})
        assert shlex.split(store.extract_options(run)) == ["--model", path]
        store.model_source_path(run).write_text("[1, 2]")  # damaged: not a JSON object of strings
        assert store.extract_options(run) == "--model mine"


# ---------------------------------------------------------------- a reader's look at the store lock

_HOLD = """
import sys
from pathlib import Path
from mess.store.lock import StoreLock, StoreBusy
try:
    with StoreLock(Path(sys.argv[1])).hold("mess extract", wait=False):
        print("took it", flush=True)
except StoreBusy as exc:
    print(exc, flush=True)
"""


def test_asking_whether_a_writer_runs_leaves_the_lock_free_and_makes_no_lock_file(tmp_path: Path) -> None:
    """Where no process holds the lock, the reader's look takes it for a moment and lets it go: a writer started
    after it takes the lock at once (without waiting); where the store has no lock file yet, the look makes none."""
    root = tmp_path / "store"
    root.mkdir()
    lock = StoreLock(root)
    assert lock.writer() is None
    assert not lock.path.exists() and list(root.iterdir()) == []
    lock.path.touch()
    assert lock.writer() is None
    assert not lock.held
    after = subprocess.run([sys.executable, "-c", _HOLD, str(root)], capture_output=True, text=True, timeout=60)
    assert after.stdout.strip() == "took it", after.stdout + after.stderr


# ---------------------------------------------------------------- the duplicate guard's audio comparisons


def _at(degrees: float) -> np.ndarray:
    """The unit vector at ``degrees`` in a plane (cosines between two are the cosines of their angles' difference)."""
    return np.array([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))], dtype=np.float32)


def _track(tid: int, path: Path) -> Track:
    return Track(id=tid, path=str(path), content_hash=f"h{tid}", duration=probe(path).duration, artist=None,
                 album=None, title=None, genre=None, composer=None)


def test_the_guard_compares_the_audio_of_close_tracks_the_closest_first_and_of_a_seed_file(
        originals: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 -- the fixture
    """A kept FLAC and its MP3 copy (the fixture made it) at a cosine of 0.94 (between VERIFY_COSINE and
    DUPLICATE_COSINE): the same recording, by their audio; at 0.64, under VERIFY_COSINE, not compared, not a
    duplicate. Two kept tracks close to a candidate: the closest is compared first, and the copy found there ends it
    (one comparison). An outside seed kept with its file is compared as a track is; one kept without a file is not
    (no comparison, no error). Each pair is compared once; with nothing kept, nothing is a duplicate."""
    from mess.playlists import playlist
    from mess.playlists.playlist import DuplicateGuard
    from mess.search.query import DUPLICATE_COSINE, VERIFY_COSINE

    flac, other = originals[0], originals[1]
    mp3 = flac.parent / "mp3-128.mp3"
    assert "mp3-128.mp3" in COPIES and float(_at(0) @ _at(20)) < DUPLICATE_COSINE
    assert float(_at(0) @ _at(50)) < VERIFY_COSINE <= float(_at(30) @ _at(-10))
    calls: list[tuple[str, str]] = []
    real = playlist.compared

    def counted(a: str, a_duration: float | None, b: str, b_duration: float | None):  # noqa: ANN202
        calls.append((Path(a).name, Path(b).name))
        return real(a, a_duration, b, b_duration)

    monkeypatch.setattr(playlist, "compared", counted)
    a, copy = _track(1, flac), _track(2, mp3)
    assert DuplicateGuard(2).duplicate(_at(20), copy) is False  # nothing kept yet
    guard = DuplicateGuard(2)
    guard.add(_at(0), a)
    assert not guard.duplicate(_at(50), copy) and calls == []  # too far to compare
    assert guard.duplicate(_at(20), copy) and guard.duplicate(_at(20), copy)
    assert calls == [(flac.name, mp3.name)]  # compared once

    calls.clear()
    two = DuplicateGuard(2)
    two.add(_at(30), _track(3, other))
    two.add(_at(0), a)
    assert two.duplicate(_at(-10), copy)  # 0.98 to the FLAC, 0.77 to the other track
    assert calls == [(flac.name, mp3.name)]

    calls.clear()
    behind = DuplicateGuard(2)  # the other track closest (0.996), not the same; then the FLAC (0.91) of one length
    behind.add(_at(0), _track(3, other))
    behind.add(_at(30), a)
    assert behind.duplicate(_at(5), copy) and probe(other).duration == probe(flac).duration
    assert calls == [(other.name, mp3.name), (flac.name, mp3.name)]

    calls.clear()
    seeded = DuplicateGuard(2)
    seeded.add(_at(0), None, content_hash="outside", file=(str(flac), probe(flac).duration))
    assert seeded.duplicate(_at(20), copy) and calls == [(flac.name, mp3.name)]
    unseen = DuplicateGuard(2)
    unseen.add(_at(0), None, content_hash="uploaded")
    assert not unseen.duplicate(_at(20), copy)
    assert calls == [(flac.name, mp3.name)]


# ---------------------------------------------------------------- re-ranked scores to 12 decimals


def test_re_ranked_scores_are_the_formulas_to_twelve_decimals() -> None:
    """Scores are rounded to 12 decimals (a copy's ~1e-16 read as -0.0000): every score is its own rounding to 12
    decimals, the dense formula's (tests/test_search_rerank_outside.py, float64) to float32's precision, and no zero
    is negative."""
    from test_search_rerank import clusters
    from test_search_rerank_outside import collection_scores, k_reciprocal

    from mess.search.rerank import build_reranker

    unit = clusters(30, seed=3)
    unit = np.concatenate([unit, unit[:2]])  # two exact copies: scores of 0 with their originals
    got = build_reranker(unit).rows(np.arange(len(unit)))
    want = k_reciprocal(collection_scores(unit), 10, 3, 0.3)[0]
    assert np.array_equal(got, np.round(got, 12))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert not np.signbit(got[got == 0]).any() and (got == 0).sum() >= 4


# ---------------------------------------------------------------- torch devices asked for


@pytest.mark.parametrize("visible", [0, 1, 2])
def test_a_device_torch_lacks_is_named_with_the_devices_it_has(visible: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--device` refusals before a model loads: MPS where torch has none; a CUDA index at or past the GPUs torch
    sees, naming them; plain `cuda` is cuda:0. ``visible``: 0 is this CPU machine's own count, 1 and 2 are set in
    torch's report (no machine of the tests has a GPU)."""
    import torch

    from mess.cli.common import device_missing

    if visible:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    elif torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert device_missing("cpu") is None
    mps = None if torch.backends.mps.is_available() else "--device mps asked for, but MPS is not available"
    assert device_missing("mps") == mps
    for index in range(visible):
        assert device_missing(f"cuda:{index}") is None
    assert (device_missing("cuda") is None) == (visible > 0)
    seen = f"{visible} CUDA GPU(s) are visible (cuda:0..cuda:{visible - 1})" if visible else "no CUDA GPU is visible"
    for device in (f"cuda:{visible}", f"cuda:{visible + 1}"):
        assert device_missing(device) == f"--device {device} asked for, but {seen}"


# ---------------------------------------------------------------- a file never read is not catalogued


def test_a_file_gone_before_it_was_read_is_named_failed_and_not_catalogued(tmp_path: Path) -> None:
    """A file that fails before it is inspected (here: removed between the walk and the run) has no content hash;
    it is reported by name and left out of the catalogue, not catalogued with an empty hash; when it is back, the
    next run catalogues and embeds it. Expected: the paths the test wrote and removed."""
    import soundfile as sf
    from tones import write_tones

    from mess.audio.discover import find_audio
    from mess.extract.pipeline import extract
    from mess.models.dsp import DspModel

    music = tmp_path / "music"
    files = write_tones(music, 3, seconds=3.0, sr=22050, wave=lambda i, t: 0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t))
    gone = files[1]
    kept = gone.read_bytes()
    paths = find_audio([music])
    gone.unlink()
    store = FeatureStore(tmp_path / "store")
    policy = WindowPolicy(window_seconds=2.0, max_windows=1)
    summary = extract(store, paths, DspModel(), policy)
    assert summary.done == 2 and [Path(p) for p, _ in summary.failed] == [gone]
    assert store.track_at(gone) is None
    assert sorted(Path(t.path) for t in store.tracks()) == [files[0], files[2]]
    assert all(t.content_hash for t in store.tracks())
    gone.write_bytes(kept)
    assert extract(store, find_audio([music]), DspModel(), policy).done == 1
    back = store.track_at(gone)
    assert back is not None and back.content_hash and back.duration == pytest.approx(sf.info(gone).duration)
