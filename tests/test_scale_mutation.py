"""`mess.scale` in-process: the Ray engine's driver logic, its row functions and its actor, against the local engine.

Ray itself is replaced by :class:`LocalRay`, which runs the row functions and the actor class in this process as Ray
Data would (rows in, rows out; batches as dicts of arrays); the real decoding processes, model and store are used.
What needs a cluster (worker deaths, actors restarted, a killed driver) stays in tests/test_scale_ray.py.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import socket
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from store_vectors import assert_same_vectors, vectors_by_path
from tones import write_tones

from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.models.dsp import DspModel
from mess.scale import embedder, ray_extract, tasks
from mess.scale.embedder import Embedder, ModelMismatch, split_row
from mess.scale.ray_extract import ScaleError, _check_reachable, _default_actors, extract_ray
from mess.scale.tasks import decode_row, inspect_row
from mess.store import FeatureStore

POLICY = WindowPolicy(window_seconds=2.0, max_windows=2)


class LocalDataset:
    """Ray Data's ``Dataset`` as ray_extract uses it, run in this process: ``map``, ``map_batches``, ``iter_rows``."""

    def __init__(self, rows: Callable[[], Iterator[dict[str, Any]]], log: dict[str, Any]) -> None:
        self.rows, self.log = rows, log

    def map(self, fn: Callable[..., dict[str, Any]], *, num_cpus: int, fn_kwargs: dict[str, Any]) -> LocalDataset:
        return LocalDataset(lambda: (fn(dict(r), **fn_kwargs) for r in self.rows()), self.log)

    def map_batches(self, fn: Callable[..., dict[str, Any]], *, batch_size: int, batch_format: str, compute: Any,
                    num_cpus: int, num_gpus: int, fn_constructor_kwargs: dict[str, Any] | None = None,
                    fn_kwargs: dict[str, Any] | None = None) -> LocalDataset:
        """An actor class (``fn_constructor_kwargs``) or a task function (``fn_kwargs``), its pool's size logged."""
        kwargs = fn_constructor_kwargs if isinstance(fn, type) else fn_kwargs
        self.log.update(batch_size=batch_size, actors=compute, num_gpus=num_gpus, actor_kwargs=kwargs)

        def rows() -> Iterator[dict[str, Any]]:
            actor = fn(**kwargs) if isinstance(fn, type) else functools.partial(fn, **kwargs)
            todo = list(self.rows())
            for at in range(0, len(todo), batch_size):
                chunk = todo[at:at + batch_size]
                batch = {k: _column([r[k] for r in chunk]) for k in chunk[0]}
                out = actor(batch)
                for i in range(len(out["path"])):
                    yield {k: v[i] for k, v in out.items()}
        return LocalDataset(rows, self.log)

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        for row in self.rows():
            if "clock" in self.log:
                self.log["clock"] += 1.0  # a second passes per row delivered
            for _ in range(self.log.get("deliveries", 1)):  # a retried task's output delivered again
                yield row
            self.log["delivered"] = self.log.get("delivered", 0) + 1
            if self.log.get("die_after") == self.log["delivered"]:
                raise KeyboardInterrupt  # the driver stopped mid-run


def _column(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class LocalRay(types.SimpleNamespace):
    """The ``ray`` module as ray_extract uses it, already initialised (so no cluster is joined or shut down)."""

    def __init__(self, resources: dict[str, float] | None = None) -> None:
        log: dict[str, Any] = {}

        def from_items(items: list[dict[str, Any]], *, override_num_blocks: int) -> LocalDataset:
            log.setdefault("blocks", []).append((len(items), override_num_blocks))
            return LocalDataset(lambda: iter([dict(i) for i in items]), log)

        data = types.SimpleNamespace(from_items=from_items, ActorPoolStrategy=lambda size: size,
                                     TaskPoolStrategy=lambda size: size)
        super().__init__(log=log, data=data, is_initialized=lambda: True, shutdown=lambda: log.update(shut=True),
                         cluster_resources=lambda: dict({"CPU": 2.0} if resources is None else resources))


@pytest.fixture
def local_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalRay]:
    fake = LocalRay()
    monkeypatch.setattr(ray_extract, "ray", fake)
    yield fake
    # the decoder a Ray worker keeps for its life, started here in the test's own process: stopped, so that tests
    # counting this process's decoders later (test_extract_mutation, test_session32_mutation) count theirs alone
    tasks._DECODER.stop()
    embedder._LOADED.clear()  # the model a Ray worker keeps (a test's stand-in for it, say): not the next test's


def _tones(folder: Path, n: int, seconds: float = 5.0, sr: int = 16000) -> list[Path]:
    return write_tones(folder, n, seconds=seconds, sr=sr,
                       wave=lambda i, t: 0.3 * np.sin(2 * np.pi * (110 + 37 * i) * t))


def test_the_ray_engine_stores_what_the_local_engine_stores(local_ray: LocalRay, tmp_path: Path) -> None:
    music = tmp_path / "music"
    _tones(music, 4)
    _tones(music / "short", 1, seconds=1.0)  # one window shorter than the policy's
    shutil.copy(music / "tone00.wav", music / "copy.wav")  # same content: embedded once
    (music / "corrupt.ogg").write_bytes(b"OggS" + bytes(range(256)) * 8)
    _tones(music / "low", 1, sr=4000)[0].rename(music / "phone.wav")  # a low rate: a warning, as locally
    paths = find_audio([music])
    paths.append(music / "gone.wav")  # vanished between the walk and its reading
    local = FeatureStore(tmp_path / "local")
    want = extract(local, paths, DspModel(), POLICY, batch_size=2)
    remote = FeatureStore(tmp_path / "ray")
    got = extract_ray(remote, paths, "dsp", POLICY, batch_size=2)
    assert (got.done, got.copies, got.skipped) == (want.done, want.copies, want.skipped) == (6, 1, 0)
    assert sorted(got.failed) == sorted(want.failed) and len(got.failed) == 2
    assert got.warnings == want.warnings and len(want.warnings) == 1
    # every window decoded: 5 tones of 5 s (two 2 s windows each) and the 1 s one
    assert got.audio_seconds == pytest.approx(want.audio_seconds) == pytest.approx(5 * 2 * 2.0 + 1.0)
    assert_same_vectors(vectors_by_path(remote, "dsp", starts=True), vectors_by_path(local, "dsp", starts=True))
    assert sorted(remote.failures(remote.run("dsp"))) == sorted(local.failures(local.run("dsp")))
    assert {t.path: t.duration for t in remote.tracks(remote.run("dsp"))} == \
        {t.path: t.duration for t in local.tracks(local.run("dsp"))}
    assert "shut" not in local_ray.log  # a Ray this call did not start is left running
    # the dataset is cut into blocks of 2 files: 9 files to catalogue, 7 contents to embed (the corrupt one too)
    assert local_ray.log["blocks"] == [(9, 5), (7, 4)]
    assert local_ray.log["actors"] == 2 and local_ray.log["num_gpus"] == 0  # one actor per CPU of the cluster
    again = extract_ray(remote, [p for p in paths if p.suffix == ".wav" and p.exists()], "dsp", POLICY)
    assert (again.done, again.skipped, again.copies, again.failed) == (0, 7, 0, [])


def test_a_truncated_file_is_catalogued_with_its_decoded_duration(local_ray: LocalRay, tmp_path: Path) -> None:
    from test_extract import _truncated_m4a

    (tmp_path / "music").mkdir()
    _truncated_m4a(tmp_path / "music" / "cut.m4a")  # its index claims 200 s, its bytes hold 62
    store = FeatureStore(tmp_path / "ray")
    got = extract_ray(store, [tmp_path / "music" / "cut.m4a"], "dsp", POLICY)
    assert (got.done, got.failed) == (1, [])
    duration = store.track(tmp_path / "music" / "cut.m4a").duration
    assert duration is not None and 55 < duration < 70, duration


def test_output_delivered_twice_is_written_once(local_ray: LocalRay, tmp_path: Path) -> None:
    paths = _tones(tmp_path / "music", 3)
    local_ray.log["deliveries"] = 2
    store = FeatureStore(tmp_path / "ray")
    got = extract_ray(store, paths, "dsp", POLICY, write_every=1)
    assert (got.done, got.failed) == (3, [])
    run = store.run("dsp")
    assert store.row_file(run, "track", 0).rows == 3
    want = FeatureStore(tmp_path / "local")
    extract(want, paths, DspModel(), POLICY)
    assert_same_vectors(vectors_by_path(store, "dsp", starts=True), vectors_by_path(want, "dsp", starts=True))


def _stopped_run(local_ray: LocalRay, tmp_path: Path, files: int, embedded: int,
                 write_every: int) -> tuple[FeatureStore, list[Path], int]:
    """``files`` 2 s tones extracted by a driver stopped once every file is catalogued and ``embedded`` tracks are
    embedded: the store, the paths and how many tracks have committed vectors."""
    paths = _tones(tmp_path / "music", files, seconds=2.0)
    local_ray.log["die_after"] = files + embedded
    store = FeatureStore(tmp_path / "ray")
    with pytest.raises(KeyboardInterrupt):
        extract_ray(store, paths, "dsp", POLICY, write_every=write_every)
    run = store.run("dsp")
    return store, paths, sum(store.has_vectors(run, t.content_hash) for t in store.tracks(run))


@pytest.mark.parametrize(("write_every", "kept"), [(2, 4), (3, 3), (5, 5), (6, 0)])
def test_a_driver_stopped_mid_run_keeps_every_full_commit_and_a_rerun_does_the_rest(
        local_ray: LocalRay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_every: int, kept: int) -> None:
    monkeypatch.setattr(ray_extract, "FLUSH_SECONDS", 1e9)
    store, paths, committed = _stopped_run(local_ray, tmp_path, 6, 5, write_every)
    assert committed == kept
    run = store.run("dsp")
    local_ray.log.pop("die_after")
    rest = extract_ray(store, paths, "dsp", POLICY, write_every=write_every)
    assert (rest.done, rest.skipped) == (6 - kept, kept)
    assert store.row_file(run, "track", 0).rows == 6


def test_pending_vectors_are_committed_after_flush_seconds_whatever_their_number(
        local_ray: LocalRay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ray_extract, "FLUSH_SECONDS", 0.0)
    assert _stopped_run(local_ray, tmp_path, 4, 3, write_every=100)[2] == 3


def test_default_actors_follow_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for resources, device, want in [({"CPU": 3.0}, "cpu", 3), ({}, "cpu", 1), ({"CPU": 0.5}, "cpu", 1),
                                    ({"CPU": 8.0, "GPU": 2.0}, "cuda", 2), ({"CPU": 8.0, "GPU": 1.0}, "cuda:0", 1)]:
        monkeypatch.setattr(ray_extract, "ray", LocalRay(resources))
        assert _default_actors(device) == want, (resources, device)
    monkeypatch.setattr(ray_extract, "ray", LocalRay({"CPU": 8.0}))
    with pytest.raises(ScaleError, match="^--device cuda asked for, but the Ray cluster has no GPUs$"):
        _default_actors("cuda")


def test_actors_are_no_more_than_the_blocks_and_a_gpu_each_on_cuda(local_ray: LocalRay, tmp_path: Path) -> None:
    """An actor for each file, past the blocks its files make, received nothing (and loaded its model for nothing):
    Ray Data warned 'The minimum number of concurrent actors ... is set to 2, but the operator only received 1
    input(s)' on stderr for 2 files (ROWS_PER_BLOCK a block). As many actors as blocks, at most."""
    for n in (3, 2):
        paths = _tones(tmp_path / f"music{n}", n, seconds=2.0)
        extract_ray(FeatureStore(tmp_path / f"ray{n}"), paths, "dsp", POLICY, actors=5)
        embedded, blocks = local_ray.log["blocks"][-1]  # the dataset the actors map: its rows and blocks
        assert embedded == n and local_ray.log["actors"] == blocks == -(-n // ray_extract.ROWS_PER_BLOCK)
    kwargs = local_ray.log["actor_kwargs"]
    assert (kwargs["model_name"], kwargs["device"], kwargs["precision"], kwargs["batch_size"]) == ("dsp", "cpu",
                                                                                                  "fp32", 4)
    assert kwargs["revision"] == DspModel().info.revision


_DROPPING = """
import logging, os, sys
from mess.scale.stderr import dropping
logging.basicConfig(format="%(message)s")
os.write(2, b"before\\n")
with dropping(b"SECRET"):
    os.write(2, b"[2026-12-06 21:54:26,883 E 1 1] core_worker.cc:1: a SECRET line\\nkept\\n")
    os.write(2, b"[2026-12-06 21:54:26,884 E 1 1] core_worker.cc:2: half of a SEC")
    os.write(2, b"RET line\\n[2026-12-06 21:54:26,885 I 1 1] other.cc:3: another line\\n")
    print("python", file=sys.stderr)
    logging.getLogger("x").warning("logged")
    print("a bar redrawn in place\\r", end="", file=sys.stderr, flush=True)
os.write(2, b"after: SECRET\\n")
"""


def test_lines_dropped_from_stderr_are_those_that_say_it_and_only_while_asked(tmp_path: Path) -> None:
    """Ray core's ERROR line about actors' constructor arguments in the object store (ray-project/ray#53727), which
    every `mess extract --engine ray` printed, comes from C++ on descriptor 2: it is dropped there, whole even when
    written in parts, while every other line (C++, print, logging, a part of a line) passes in order."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _DROPPING], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (b"before\nkept\n[2026-12-06 21:54:26,885 I 1 1] other.cc:3: another line\npython\nlogged\n"
                           b"a bar redrawn in place\rafter: SECRET\n")


def test_nothing_to_embed_starts_no_actor(local_ray: LocalRay, tmp_path: Path) -> None:
    got = extract_ray(FeatureStore(tmp_path / "ray"), [], "dsp", POLICY)
    assert (got.done, got.failed) == (0, []) and "actors" not in local_ray.log and got.wall_seconds > 0
    assert local_ray.log["blocks"] == [(0, 1)]  # a dataset has a block, though of no rows


def test_prune_under_forgets_files_gone_from_disk(local_ray: LocalRay, tmp_path: Path) -> None:
    music = tmp_path / "music"
    paths = _tones(music, 3, seconds=2.0)
    store = FeatureStore(tmp_path / "ray")
    extract_ray(store, paths, "dsp", POLICY)
    paths[1].unlink()
    got = extract_ray(store, find_audio([music]), "dsp", POLICY, prune_under=[music])
    assert (got.removed, got.skipped) == (1, 2)
    assert sorted(Path(t.path).name for t in store.tracks(store.run("dsp"))) == ["tone00.wav", "tone02.wav"]


def test_a_ray_this_call_started_is_shut_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = LocalRay()
    fake.is_initialized = lambda: False
    fake.init = lambda **kwargs: fake.log.update(init=kwargs)
    monkeypatch.setattr(ray_extract, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    extract_ray(FeatureStore(tmp_path / "ray"), _tones(tmp_path / "music", 1, seconds=2.0), "dsp", POLICY)
    assert fake.log["init"]["address"] == "local" and fake.log["shut"]
    assert fake.log["blocks"] == [(1, 1), (1, 1)]  # one file: one block to catalogue, one to embed


def test_the_address_comes_from_ray_address_and_a_refused_one_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = LocalRay()
    fake.is_initialized = lambda: False

    def init(**kwargs: Any) -> None:
        raise ConnectionError("no GCS")
    fake.init = init
    monkeypatch.setattr(ray_extract, "ray", fake)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(ScaleError, match=r"^cannot reach a Ray cluster at 'auto': no GCS$"):
        ray_extract._connect(None)
    with pytest.raises(ScaleError, match=r"^cannot reach a Ray cluster at 'local': no GCS$"):
        ray_extract._connect("local")


def test_ray_addresses_are_checked_before_ray_is_asked() -> None:
    for address in (None, "auto", "local"):
        _check_reachable(address)
    for bad in ("head", "head:", "head:port", "ray://head", "head:６３７９", "head:-1"):
        with pytest.raises(ScaleError, match=rf"^Ray address '{bad}' is not auto, local, HOST:PORT or "
                                             r"ray://HOST:PORT$"):
            _check_reachable(bad)
    with socket.socket() as bound:  # bound, never listening: refused, and no other process can take the port meanwhile
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            with pytest.raises(ScaleError, match=rf"^cannot reach a Ray cluster at '{address}': Connection refused$"):
                _check_reachable(address)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        _check_reachable(f"ray://127.0.0.1:{listener.getsockname()[1]}")  # answers: no error
        _check_reachable(f"127.0.0.1:{listener.getsockname()[1]}")


def test_inspect_and_decode_rows_give_what_the_local_pipeline_reads(tmp_path: Path) -> None:
    path = _tones(tmp_path, 1, seconds=5.0)[0]
    inspected = inspect_row({"path": str(path), "known_hash": "", "known_stamp": ""}, timeout=60)
    assert inspected["error"] == "" and inspected["path"] == str(path)
    import json

    rec = json.loads(inspected["record"])
    assert rec["size"] == path.stat().st_size and rec["mtime"] == pytest.approx(path.stat().st_mtime)
    assert math.isclose(rec["info"]["duration"], 5.0, abs_tol=0.01) and rec["info"]["sample_rate"] == 16000
    local = FeatureStore(tmp_path / "local")
    extract(local, [path], DspModel(), POLICY)
    track = local.track(path)
    assert rec["hash"] == track.content_hash
    row = {"path": str(path), "hash": rec["hash"], "stamp": rec["stamp"], "size": rec["size"],
           "duration": rec["info"]["duration"], "sample_rate": rec["info"]["sample_rate"]}
    model = DspModel()
    out = decode_row(row, model.info.sample_rate, POLICY.to_json(), model.info.band_hz, timeout=60)
    assert (out["error"], out["warnings"], out["duration"]) == ("", "", -1.0)
    assert out["audio"].shape == (2, int(2.0 * model.info.sample_rate)) and list(out["starts"]) == [0.0, 3.0]
    gone = decode_row({**row, "path": str(tmp_path / "gone.wav")}, model.info.sample_rate, POLICY.to_json(),
                      model.info.band_hz, timeout=60)
    assert gone["error"] and str(tmp_path / "gone.wav") in gone["error"] and gone["audio"].size == 0
    failed = inspect_row({"path": str(tmp_path / "gone.wav"), "known_hash": "", "known_stamp": ""}, timeout=60)
    assert failed["error"] and failed["record"] == ""
    # a file whose change stamp the catalog knows is not hashed again: the known hash is taken
    again = json.loads(inspect_row({"path": str(path), "known_hash": "f" * 64, "known_stamp": rec["stamp"]},
                                   timeout=60)["record"])
    assert again["hash"] == "f" * 64


def test_split_row_undoes_the_actor_s_concatenation() -> None:
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=d).astype(np.float32) for d in (3, 1, 4)]
    segments = [rng.normal(size=(2, d)).astype(np.float32) for d in (3, 1, 4)]
    row = {"hash": "h", "track": np.concatenate(layers), "segments": np.concatenate(segments, axis=1),
           "starts": np.array([0.0, 1.5])}
    tv = split_row(row, (3, 1, 4))
    assert tv.content_hash == "h" and tv.seg_starts == [0.0, 1.5]
    for a, b in zip(tv.layers, layers, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(tv.segments, segments, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_actor_refuses_other_weights_and_keeps_failed_rows(tmp_path: Path) -> None:
    with pytest.raises(ModelMismatch, match="^a worker loaded dsp revision .* the run is other: every node"):
        Embedder("dsp", "cpu", "fp32", "other", 2)
    actor = Embedder("dsp", "cpu", "fp32", DspModel().info.revision, 2)
    sr = DspModel().info.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * sr) / sr)).astype(np.float32)[None, :]
    batch = {"path": _column(["/m/a.wav", "/m/b.wav"]), "hash": _column(["ha", "hb"]),
             "error": _column(["", "/m/b.wav: cannot decode"]), "warnings": _column(["w", ""]),
             "starts": _column([np.zeros(1), np.zeros(0)]), "audio": _column([audio, np.zeros((0, 0), np.float32)]),
             "duration": _column([-1.0, 7.5])}
    out = actor(batch)
    width = sum(DspModel().info.layer_dims)
    assert out["path"] == ["/m/a.wav", "/m/b.wav"] and out["hash"] == ["ha", "hb"]
    assert out["error"] == ["", "/m/b.wav: cannot decode"] and out["warnings"] == ["w", ""]
    assert out["samples"] == [2 * sr, 0] and out["duration"] == [-1.0, 7.5]
    assert out["track"][1].shape == (width,) and not out["track"][1].any()
    assert out["segments"][1].shape == (0, width) and out["starts"][1].size == 0
    vecs = DspModel().embed(audio)
    want = np.concatenate([v[0] for v in vecs])
    np.testing.assert_allclose(out["track"][0], want, rtol=1e-5, atol=1e-6)
    assert out["segments"][0].shape == (1, width) and list(out["starts"][0]) == [0.0]


@pytest.mark.parametrize("actors", [None, 1])
def test_a_cluster_without_gpus_is_refused_for_cuda_before_any_file_is_read(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, actors: int | None) -> None:
    """`--device cuda` on a cluster without GPUs was said only after every file had been inspected (hours of
    hashing for a big collection), and with ``actors`` given not at all: Ray waited for GPUs for ever."""
    fake = LocalRay({"CPU": 4.0})
    monkeypatch.setattr(ray_extract, "ray", fake)
    paths = _tones(tmp_path / "music", 2, seconds=2.0)
    store = FeatureStore(tmp_path / "ray")
    with pytest.raises(ScaleError, match="^--device cuda asked for, but the Ray cluster has no GPUs$"):
        extract_ray(store, paths, "dsp", POLICY, device="cuda", actors=actors, info=DspModel().info)
    assert "blocks" not in fake.log  # no file was handed to Ray
    assert [store.known_file(p) for p in paths] == [None, None]


class _Picky(DspModel):
    """The dsp model, raising librosa's ParameterError (no ValueError nor RuntimeError) on windows of a high tone."""

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        from librosa.util.exceptions import ParameterError

        if (np.diff(np.sign(windows), axis=1) != 0).mean(axis=1).max() > 0.1:  # 3 kHz crosses zero often, 110 Hz not
            raise ParameterError("too many zero crossings\nsecond line")
        return super().embed(windows)


def test_a_file_the_model_fails_on_is_that_file_s_failure_as_locally(local_ray: LocalRay,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """A model error other than ValueError or RuntimeError (librosa's ParameterError, an ONNX Runtime error) ended
    the whole Ray job, where the local engine records the file as failed and goes on."""
    monkeypatch.setattr(embedder, "load_model", lambda name, device: _Picky())
    music = tmp_path / "music"
    paths = _tones(music, 2, seconds=3.0)
    sf.write(music / "high.wav", (0.3 * np.sin(2 * np.pi * 3000 * np.arange(3 * 16000) / 16000)).astype(np.float32),
             16000)
    paths.append(music / "high.wav")
    local = FeatureStore(tmp_path / "local")
    want = extract(local, paths, _Picky(), POLICY, batch_size=8)
    remote = FeatureStore(tmp_path / "ray")
    got = extract_ray(remote, paths, "dsp", POLICY, batch_size=8, info=_Picky().info)
    assert (got.done, got.failed) == (want.done, want.failed) == (2, [(str(paths[2]), f"{paths[2]}: model failed "
                                                                      "(ParameterError: too many zero crossings)")])
    assert remote.failures(remote.run("dsp")) == local.failures(local.run("dsp"))
    assert_same_vectors(vectors_by_path(remote, "dsp", starts=True), vectors_by_path(local, "dsp", starts=True))


def test_the_flush_clock_restarts_at_each_commit(local_ray: LocalRay, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """One row a second, a commit every 2 s: rows 1-2 committed at the second row (2 s in), row 3 (1 s after the
    commit, 3 s in) pending."""
    import time

    monkeypatch.setattr(ray_extract, "FLUSH_SECONDS", 2.0)
    local_ray.log["clock"] = 0.0
    monkeypatch.setattr(ray_extract, "time", types.SimpleNamespace(monotonic=lambda: local_ray.log["clock"],
                                                                   perf_counter=time.perf_counter, time=time.time))
    assert _stopped_run(local_ray, tmp_path, 4, 3, write_every=100)[2] == 2


def test_files_that_fail_are_logged_as_the_local_engine_logs_them(local_ray: LocalRay, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    music = tmp_path / "music"
    paths = [*_tones(music, 1, seconds=2.0), music / "gone.wav", music / "corrupt.ogg"]
    paths[2].write_bytes(b"OggS" + bytes(range(256)) * 8)
    local_store, ray_store = FeatureStore(tmp_path / "local"), FeatureStore(tmp_path / "ray")
    with caplog.at_level("WARNING"):
        extract(local_store, paths, DspModel(), POLICY)
    local = sorted(r.getMessage() for r in caplog.records if r.name == "mess.extract.pipeline")
    caplog.clear()
    with caplog.at_level("WARNING"):
        extract_ray(ray_store, paths, "dsp", POLICY)
    remote = sorted(r.getMessage() for r in caplog.records if r.name == "mess.scale.ray_extract")
    assert remote == local and len(local) == 2
    # the file that failed decoding keeps the duration its inspection read, as locally
    assert ray_store.track(paths[2]).duration == local_store.track(paths[2]).duration


class _RayActor(Embedder):
    """The actor as Ray hands its creation's failure to the driver (ActorDiedError built from the RayTaskError of
    ``__init__``, seen in a real run on a local cluster), so the driver's handling is what is tested."""

    def __init__(self, **kwargs: Any) -> None:
        import traceback

        from ray.data.exceptions import SystemException
        from ray.exceptions import ActorDiedError, RayTaskError

        try:
            super().__init__(**kwargs)
        except Exception as exc:  # noqa: BLE001 -- whatever the creation raised, as Ray wraps it
            task = RayTaskError("MapWorker(MapBatches(Embedder)).__init__", traceback.format_exc(), exc)
            raise ActorDiedError.from_task_error(task) from SystemException()


def test_a_worker_that_loads_other_weights_ends_the_job_with_one_line_naming_it(
        local_ray: LocalRay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An actor refusing other weights (ModelMismatch) reached the driver as Ray's ActorDiedError, whose message is
    the worker's whole traceback: `mess extract --engine ray` printed it all. It is one ScaleError line now, naming
    the worker's error; the files catalogued stay catalogued."""
    import dataclasses

    monkeypatch.setattr(ray_extract, "Embedder", _RayActor)
    local_ray.cluster_resources = lambda: {"CPU": 2.0, "GPU": 1.0}  # actors are for GPUs (CPUs embed in tasks)
    paths = _tones(tmp_path / "music", 1, seconds=2.0)
    store = FeatureStore(tmp_path / "ray")
    real = DspModel().info.revision
    with pytest.raises(ScaleError) as caught:
        extract_ray(store, paths, "dsp", POLICY, device="cuda",
                    info=dataclasses.replace(DspModel().info, revision="other"))
    assert str(caught.value) == (f"the Ray job failed: a worker loaded dsp revision {real}, the run is other: every "
                                 "node needs the same model weights (ModelMismatch)")
    assert store.known_file(paths[0]) is not None


def test_failures_of_files_with_undecodable_names_are_printable_as_locally(
        local_ray: LocalRay, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file whose name is not UTF-8 (caf\\xe9.ogg) that failed under Ray kept the name's lone surrogate in the
    summary, the log and the store's failure reason (unprintable: 'surrogates not allowed' where written out); the
    local engine escapes it (printable). Both say the same now."""
    import os

    music = tmp_path / "music"
    paths = [*_tones(music, 1, seconds=2.0), music / os.fsdecode(b"caf\xe9.ogg"), music / os.fsdecode(b"gon\xe9.wav")]
    paths[1].write_bytes(b"OggS" + bytes(range(256)) * 8)  # fails decoding; the other is gone before inspection
    local_store, ray_store = FeatureStore(tmp_path / "local"), FeatureStore(tmp_path / "ray")
    with caplog.at_level("WARNING"):
        want = extract(local_store, paths, DspModel(), POLICY)
    local = sorted(r.getMessage() for r in caplog.records if r.name == "mess.extract.pipeline")
    caplog.clear()
    with caplog.at_level("WARNING"):
        got = extract_ray(ray_store, paths, "dsp", POLICY)
    remote = sorted(r.getMessage() for r in caplog.records if r.name == "mess.scale.ray_extract")
    assert sorted(got.failed) == sorted(want.failed) and len(want.failed) == 2
    assert all("caf\\xe9.ogg" in r or "gon\\xe9.wav" in r for r in local) and remote == local
    for _path, reason in got.failed:
        reason.encode("utf-8")  # printable: no lone surrogate left
    assert (sorted(r for _, r in ray_store.failures(ray_store.run("dsp")))
            == sorted(r for _, r in local_store.failures(local_store.run("dsp"))))



def test_a_truncated_file_failing_as_too_short_keeps_the_same_duration_on_both_engines(local_ray: LocalRay,
                                                                                      tmp_path: Path) -> None:
    """An MP3 cut short to under a second of audio fails as too short on both engines; neither stores a decoded
    length for a file that failed, so both keep the duration its inspection read (an earlier note said the local
    engine stored the decoded one)."""
    from test_extract import _truncated_mp3

    (tmp_path / "music").mkdir()
    path = tmp_path / "music" / "cut.mp3"
    _truncated_mp3(path, seconds=60.0, keep=0.012)
    os.utime(path, (time.time() - 3600, time.time() - 3600))  # cut short for good: new, it waits for the rest
    local_store, ray_store = FeatureStore(tmp_path / "local"), FeatureStore(tmp_path / "ray")
    want = extract(local_store, [path], DspModel(), POLICY)
    got = extract_ray(ray_store, [path], "dsp", POLICY)
    assert got.failed == want.failed and len(want.failed) == 1 and ": too short (" in want.failed[0][1]
    assert ray_store.track(path).duration == local_store.track(path).duration is not None
