"""New tracks are numbered in the input order (the sorted walk), whichever decoder finishes first.

Tracks were catalogued as each decoder finished inspecting its file, so ids followed the decoders' timing: two
extractions of one collection numbered it otherwise, and every matrix, tie and sample in id order differed. Here one
file is made slow to read (its decoders sleep whenever they open it, as on a slow disk: an audit hook in their
processes) so that the others overtake it; its id must still be its place in the input. The same kind of hook holds
a file's reading back to show that progress is heard at each commit, not at the next file read. The Ray engine's
test of the same is tests/test_scale_ray.py's (on the Ray modules' shared cluster): this module needs no Ray.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from worker_hooks import SLOW_OPEN

from mess.audio.decode import probe
from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.models.registry import load_model
from mess.search.rerank import build_reranker
from mess.search.vectors import VectorSpec, load_vectors
from mess.store import FeatureStore

POLICY = WindowPolicy(window_seconds=4.0, max_windows=2)
N_FILES = 6
SILENT = "silence.ogg"  # one of the six: refused (silent), yet catalogued and numbered with the others
SLOW_SECONDS = 0.5  # each time a decoder opens the slow file (an inspection opens it 2 or 3 times)

Slow = Callable[[str], dict[str, str]]


@pytest.fixture(scope="module")
def collection(wesnoth_tracks: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six shortest Wesnoth tracks (:data:`SILENT` among them), copied into a folder of their own."""
    shortest = sorted(wesnoth_tracks, key=lambda p: probe(p).duration)[:N_FILES]
    folder = tmp_path_factory.mktemp("music")
    for path in shortest:
        shutil.copyfile(path, folder / path.name)
    assert (folder / SILENT).is_file()
    return folder


@pytest.fixture
def slow(tmp_path: Path) -> Slow:
    """``slow(name)``: the environment of processes whose every opening of a file named ``name`` takes
    :data:`SLOW_SECONDS` longer; each such opening is logged under ``tmp_path / "slowed"`` (``slowed`` below)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_OPEN)
    (tmp_path / "slowed").mkdir()

    def env(name: str) -> dict[str, str]:
        return {"PYTHONPATH": os.pathsep.join([str(hook), *sys.path]), "MESS_TEST_SLOW_FILE": name,
                "MESS_TEST_SLOW_SECONDS": str(SLOW_SECONDS), "MESS_TEST_SLOW_LOG": str(tmp_path / "slowed")}

    return env


def slowed(tmp_path: Path) -> list[str]:
    """The names of the files whose opening the hook of :func:`slow` delayed, once per opening."""
    return [name for log in sorted((tmp_path / "slowed").iterdir()) for name in log.read_text().split()]


def _extract(store_dir: Path, paths: list[Path], env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
             **options: object) -> dict[Path, int]:
    """Extract ``paths`` with dsp, its decoders in ``env``; the catalogue's id of each path."""
    with monkeypatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        with contextlib.closing(FeatureStore(store_dir)) as store:
            summary = extract(store, paths, load_model("dsp"), POLICY, **options)  # type: ignore[arg-type]
            assert [Path(p).name for p, _ in summary.failed] == [p.name for p in paths if p.name == SILENT]
            return {Path(t.path): t.id for t in store.tracks()}


def in_id_order(ids: dict[Path, int]) -> list[Path]:
    return sorted(ids, key=lambda p: ids[p])


def test_ids_follow_the_sorted_paths_when_the_first_file_is_slow_to_read(
        collection: Path, slow: Slow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = find_audio([collection])
    assert [p.name for p in paths] == sorted(p.name for p in collection.iterdir())  # the walk's order: by name
    ids = _extract(tmp_path / "store", paths, slow(paths[0].name), monkeypatch, workers=2)
    assert set(slowed(tmp_path)) == {paths[0].name}  # its decoder was slowed (the others went ahead)
    assert in_id_order(ids) == paths
    assert sorted(ids.values()) == list(range(1, N_FILES + 1))


def test_one_collection_extracted_twice_under_other_timings_gets_one_numbering(
        collection: Path, slow: Slow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another file slowed, with and without the plan's header reading (which takes a decoder first): the same id
    for each path."""
    paths = find_audio([collection])
    runs = [(paths[0], {"workers": 2}), (paths[2], {"workers": 2, "on_total": lambda seconds: None})]
    numberings = [_extract(tmp_path / f"store{i}", paths, slow(p.name), monkeypatch, **options)
                  for i, (p, options) in enumerate(runs)]
    assert set(slowed(tmp_path)) == {p.name for p, _ in runs}
    assert numberings[0] == numberings[1]
    assert in_id_order(numberings[0]) == paths


def test_a_resumed_run_keeps_the_known_ids_and_numbers_new_files_in_input_order(
        collection: Path, slow: Slow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = find_audio([collection])
    half = paths[1::2]
    before = _extract(tmp_path / "store", half, {}, monkeypatch, workers=1)
    after = _extract(tmp_path / "store", paths, slow(paths[0].name), monkeypatch, workers=2)
    assert {p: after[p] for p in half} == before
    new = [p for p in paths if p not in before]
    assert in_id_order({p: after[p] for p in new}) == new
    assert min(after[p] for p in new) > max(before.values())


def test_reranked_scores_do_not_follow_the_decoders_timing(
        collection: Path, slow: Slow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-ranking goes by row (exact ties to the lower one; sums in row order), and rows follow ids. With a FLAC and
    a WAV of one recording (two contents: the codec is hashed) that tie exactly, two extractions under other timings
    re-rank alike, path by path, to the last bit. Before, the rows came in another order and scores differed (by up
    to 1.7e-16 here: BLAS's sums in another order)."""
    music = tmp_path / "music"
    shutil.copytree(collection, music)
    audio, rate = sf.read(music / "victory2.ogg", dtype="int16")
    sf.write(music / "zz-victory2.flac", audio, rate)
    sf.write(music / "zz-victory2.wav", audio, rate, subtype="PCM_16")
    paths = find_audio([music])
    reranked = []
    for name, options in (("slowed", {"workers": 2}), ("one", {"workers": 1})):
        ids = _extract(tmp_path / name, paths, slow(paths[0].name) if name == "slowed" else {}, monkeypatch,
                       **options)
        with contextlib.closing(FeatureStore(tmp_path / name, readonly=True)) as store:
            run = store.run("dsp")
            vs = load_vectors(store, run, VectorSpec.from_options(), store.tracks(run))
            path = {i: p for p, i in ids.items()}
            rows = [path[int(i)] for i in vs.ids]
            unit = {p: u for p, u in zip(rows, vs.unit(), strict=True)}
            assert np.array_equal(unit[music / "zz-victory2.flac"], unit[music / "zz-victory2.wav"])  # the tie
            scores = build_reranker(vs.unit()).rows(np.arange(len(rows)))
            reranked.append({(a, b): float(scores[i, j]) for i, a in enumerate(rows) for j, b in enumerate(rows)})
    assert reranked[0] == reranked[1]


def test_rows_held_for_order_are_all_handed_on_when_one_never_comes() -> None:
    """Ray's inspected rows are catalogued in the input order; should one row never come, the rows after it are still
    handed on (in order), not silently held back."""
    from mess.scale.ray_extract import _in_order

    paths = ["a", "b", "c", "d"]
    arrived = [{"path": "c"}, {"path": "a"}, {"path": "d"}, {"path": "b"}]
    assert [r["path"] for r in _in_order(arrived, paths)] == paths
    assert [r["path"] for r in _in_order([{"path": "d"}, {"path": "a"}, {"path": "c"}], paths)] == ["a", "c", "d"]


_GATE = """
import os, sys, time

_name, _marker, _log = os.environ["MESS_TEST_GATE_FILE"], os.environ["MESS_TEST_GATE_MARKER"], \\
    os.environ["MESS_TEST_GATE_LOG"]


def _gate(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and \\
            os.path.basename(os.fsdecode(args[0])) == _name:
        deadline = time.monotonic() + 20
        while not os.path.exists(_marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(_log, "a") as f:
            f.write("released\\n" if os.path.exists(_marker) else "timed out\\n")


sys.addaudithook(_gate)
"""


def test_progress_counts_a_commit_when_it_happens_not_when_the_next_file_is_read(
        collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress hook hears of the first file's committed vectors while the next file is still being read (here:
    its decoder may not open it until the hook has heard). Before, it heard only after the next file was read: a
    stalled read held the bar at 0 audio-seconds, and the benchmark's time to the first embedded file counted a
    group's inference more."""
    first, second = sorted(p for p in collection.iterdir() if p.name != SILENT)[:2]
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_GATE)
    marker, log = tmp_path / "heard", tmp_path / "gate.log"
    for key, value in {"PYTHONPATH": os.pathsep.join([str(hook), *sys.path]), "MESS_TEST_GATE_FILE": second.name,
                       "MESS_TEST_GATE_MARKER": str(marker), "MESS_TEST_GATE_LOG": str(log)}.items():
        monkeypatch.setenv(key, value)
    heard: list[tuple[int, float]] = []

    def on_progress(done: int, audio_seconds: float) -> None:
        heard.append((done, audio_seconds))
        if audio_seconds > 0:
            marker.touch()

    with contextlib.closing(FeatureStore(tmp_path / "store")) as store:
        summary = extract(store, [first, second], load_model("dsp"), POLICY, batch_size=1, workers=1,
                          on_progress=on_progress)
    assert summary.done == 2 and not summary.failed
    assert log.read_text().split() and set(log.read_text().split()) == {"released"}
    assert heard[-1] == (2, summary.audio_seconds)
