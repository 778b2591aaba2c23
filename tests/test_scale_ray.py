"""`mess extract --engine ray` on a local 2-CPU Ray cluster: same vectors as local, resumable, fault tolerant.

The cluster runs in processes of its own and every job's driver is a child process: a test worker is never a Ray
driver (a driver whose cluster goes away may end its process, and an xdist worker that exits stalls the run).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf
import test_ids_in_input_order as input_order
from store_vectors import assert_same_vectors, vectors_by_path
from tones import write_tones
from typer.testing import CliRunner
from worker_hooks import HANGING_DECODER, SLOW_OPEN

from conftest import mess_here
from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.cli.main import app
from mess.extract.pipeline import ExtractSummary, extract
from mess.extract.runs import run_policy
from mess.models.dsp import DspModel
from mess.models.registry import load_model
from mess.store import FeatureStore, catalog

POLICY = WindowPolicy(window_seconds=4.0, max_windows=3)
collection = input_order.collection  # six short Wesnoth tracks, one of them silent
N_TONES = 32
# The cluster and its drivers share a token of their own (not the user's ~/.ray/auth_token, which Ray makes once).
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # SIGTERM stops the test cluster at once, not after 30 s


SLOW_FILE = "0-slow.ogg"  # each opening of a file so named in the shared cluster's workers takes SLOW_SECONDS longer
SLOW_SECONDS = 0.5


class Cluster:
    """A local Ray cluster with 2 CPUs (`ray start --head --block` in a session of its own). Ray binds a free port of
    its choosing (--port 0) and writes its address into the cluster's own temp folder: a port found free here, closed,
    then handed to Ray could be taken by another process in between.

    Its workers, and the decoding processes they start, run the hooks of :mod:`worker_hooks`: decoding a file named
    hang*.wav never ends, and opening one named :data:`SLOW_FILE` is slow (logged under ``slowed``). A test that
    needs them runs on this cluster's warm workers, not on a job of its own whose ``runtime_env`` starts new ones."""

    def __init__(self) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's socket paths live under it
        hooks, self.slowed = self.temp / "hooks", self.temp / "slowed"
        hooks.mkdir()
        self.slowed.mkdir()
        (hooks / "sitecustomize.py").write_text(HANGING_DECODER + SLOW_OPEN)
        env = {**RAY_ENV, "PYTHONPATH": os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]),
               "MESS_TEST_SLOW_FILE": SLOW_FILE, "MESS_TEST_SLOW_SECONDS": str(SLOW_SECONDS),
               "MESS_TEST_SLOW_LOG": str(self.slowed)}
        self.head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port",
                                      "0", "--temp-dir", str(self.temp), "--node-ip-address", "127.0.0.1",
                                      "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        try:
            deadline = time.time() + 120
            while not (port := _head_port(self.temp)) or not _answers("127.0.0.1", port):
                assert self.head.poll() is None and time.time() < deadline, \
                    self.head.stderr.read() if self.head.poll() else "no GCS"
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        self.address = f"127.0.0.1:{port}"

    def stop(self) -> None:
        """Stop the cluster's processes and remove its temp folder."""
        self.head.terminate()  # --block stops the cluster's processes on SIGTERM
        try:
            self.head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.head.pid, signal.SIGKILL)  # whatever is left of the session
        self.head.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


# The cluster and the driver (below) are shared by every module of conftest.RAY_MODULES (one xdist group, so one
# worker runs them one after another): each start costs a cluster's processes and workers that import mess. They
# start when a test first asks and are stopped by conftest once the next test is in none of those modules.
_shared: dict[str, Cluster | Driver] = {}


def stop_shared() -> None:
    """Stop the shared driver, then the shared cluster (whichever was started)."""
    if isinstance(driver_ := _shared.pop("driver", None), Driver):
        driver_.close()
    if isinstance(cluster := _shared.pop("cluster", None), Cluster):
        cluster.stop()


def _cluster() -> Cluster:
    if not isinstance(cluster := _shared.get("cluster"), Cluster):
        cluster = _shared["cluster"] = Cluster()
    return cluster


@pytest.fixture
def ray_address() -> str:
    """The address of the Ray modules' shared cluster."""
    return _cluster().address


def _head_port(temp: Path) -> int | None:
    """The port of the cluster whose temp folder is ``temp``, from the address Ray writes there once it listens
    ('HOST:PORT'); None before (or while the file is written)."""
    try:
        port = (temp / "ray_current_cluster").read_text().strip().rpartition(":")[2]
    except OSError:
        return None
    return int(port) if port.isdigit() else None


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


_DRIVER = """
import json, sys
from pathlib import Path
from mess.audio.windows import WindowPolicy
from mess.scale.ray_extract import extract_ray
from mess.store import FeatureStore
a = json.loads(sys.argv[1])
s = extract_ray(FeatureStore(Path(a["store"])), [Path(p) for p in a["paths"]], a["model"],
                WindowPolicy.from_json(a["policy"]), address=a["address"], **a["options"])
print(json.dumps({"done": s.done, "skipped": s.skipped, "copies": s.copies, "failed": s.failed,
                  "removed": s.removed, "moved": s.moved, "audio_seconds": s.audio_seconds, "warnings": s.warnings}))
"""


def extract_ray(store: Path, paths: list[Path], model: str, policy: WindowPolicy, address: str | None, *,
                before: str = "", stderr: list[str] | None = None,
                **options: object) -> ExtractSummary:
    """`mess.scale.ray_extract.extract_ray` run by a driver process of its own (which first runs ``before``); its
    summary (its stderr appended to ``stderr``)."""
    args = {**_request(store, paths, model, policy, options), "address": address}
    out = subprocess.run([sys.executable, "-c", before + _DRIVER, json.dumps(args)], capture_output=True, text=True,
                         timeout=600, env=RAY_ENV)
    assert out.returncode == 0, out.stderr
    if stderr is not None:
        stderr.append(out.stderr)
    return _summary(json.loads(out.stdout.strip().splitlines()[-1]))


def _request(store: Path, paths: list[Path], model: str, policy: WindowPolicy, options: dict) -> dict:
    """The arguments of an `extract_ray` call as the driver scripts read them (JSON)."""
    return {"store": str(store), "paths": [str(p) for p in paths], "model": model, "policy": policy.to_json(),
            "options": options}


def _summary(got: dict) -> ExtractSummary:
    """The summary a driver script printed as JSON."""
    return ExtractSummary(done=got["done"], skipped=got["skipped"], copies=got["copies"],
                          failed=[tuple(f) for f in got["failed"]], removed=got["removed"], moved=got["moved"],
                          audio_seconds=got["audio_seconds"], warnings=got["warnings"])


# One driver for the Ray modules' jobs that need nothing of a process of their own: it joins the cluster once, and its
# calls run as one Ray job, whose CPU workers (each paying the imports) serve every call; each call's embedding actors
# are its own. A job's driver start-up and connection are tested by the jobs that start a process of their own.
_SERVER = """
import json, sys, traceback
from pathlib import Path
import ray
from mess.audio.windows import WindowPolicy
from mess.scale.ray_extract import extract_ray
from mess.store import FeatureStore
ray.init(address=sys.argv[1], include_dashboard=False)
print("@@ready", flush=True)
for line in sys.stdin:
    a = json.loads(line)
    try:
        store = FeatureStore(Path(a["store"]))
        options = {**a["options"], "prune_under": [Path(p) for p in a["options"].get("prune_under", ())]}
        try:
            s = extract_ray(store, [Path(p) for p in a["paths"]], a["model"], WindowPolicy.from_json(a["policy"]),
                            **options)
        finally:
            store.close()
        out = {"done": s.done, "skipped": s.skipped, "copies": s.copies, "failed": s.failed,
               "removed": s.removed, "moved": s.moved, "audio_seconds": s.audio_seconds, "warnings": s.warnings}
    except Exception:
        out = {"error": traceback.format_exc()}
    print("@@" + json.dumps(out), flush=True)
"""


class Driver:
    """A Ray driver process of its own that runs `extract_ray` calls one at a time, sent as JSON lines."""

    def __init__(self, address: str, log: Path) -> None:
        self.log = log
        with log.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, address], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, text=True, env=RAY_ENV)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._answer(300) == "ready"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # Ray's worker logs come here too: answers are the lines marked @@
            if line.startswith("@@"):
                self.lines.put(line[2:].strip())
        self.lines.put("")  # the process ended

    def _answer(self, timeout: float) -> str:
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            got = ""
        assert got, f"the driver gave no answer; its stderr ends: {self.log.read_text()[-3000:]}"
        return got

    def __call__(self, store: Path, paths: list[Path], model: str, policy: WindowPolicy,
                 **options: object) -> ExtractSummary:
        """`mess.scale.ray_extract.extract_ray` of the shared cluster, run by this driver; its summary."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(_request(store, paths, model, policy, options)) + "\n")
        self.proc.stdin.flush()
        got = json.loads(self._answer(600))
        assert "error" not in got, got.get("error")
        return _summary(got)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # the loop ends; ray.shutdown at exit
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def driver() -> Driver:
    """The Ray modules' shared driver (see :class:`Driver`) on their shared cluster."""
    if not isinstance(proc := _shared.get("driver"), Driver):
        proc = _shared["driver"] = Driver(_cluster().address, Path(_cluster().temp) / "driver-stderr.txt")
    return proc


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """A folder of distinct 6 s tones and their dsp vectors from the local pipeline (all layers, by path)."""
    root = tmp_path_factory.mktemp("tones")
    _write_tones(root / "music", N_TONES, seconds=6.0)
    store = FeatureStore(root / "local")
    summary = extract(store, find_audio([root / "music"]), DspModel(), POLICY)
    assert summary.done == N_TONES
    return root / "music", vectors_by_path(store, "dsp")


def _write_tones(folder: Path, n: int, seconds: float, sr: int = 22050) -> list[Path]:
    return write_tones(folder, n, seconds=seconds, sr=sr, wave=lambda i, t: 0.3 * np.sin(2 * np.pi * (90 + 17 * i) * t)
                       * (1 + 0.5 * np.sin(2 * np.pi * (1 + i % 5) * t)))


def _vector_rows(store_dir: Path) -> tuple[int, int]:
    """(rows, distinct content hashes) in the vectors table; 0s while the store does not exist yet."""
    try:
        # read-write (never create): after a kill -9 mid-commit, WAL recovery needs write access, as the store has
        with sqlite3.connect(catalog.uri(store_dir / "catalog.sqlite", "rw"), uri=True, timeout=0.1) as db:
            return db.execute("SELECT COUNT(*), COUNT(DISTINCT content_hash) FROM vectors").fetchone()
    except sqlite3.Error:
        return 0, 0


def test_ray_gives_the_local_vectors_and_reruns_skip(driver: Driver, tmp_path: Path) -> None:
    music = tmp_path / "music"
    _write_tones(music, 3, seconds=9.0, sr=16000)
    shutil.copy(music / "tone00.wav", music / "copy_of_tone00.wav")  # same content: embedded once
    (music / "corrupt.ogg").write_bytes(os.urandom(2048))
    _write_tones(music / "low", 1, seconds=9.0, sr=4000)[0].rename(music / "phone.wav")  # a warning, as locally
    paths = find_audio([music])
    local = FeatureStore(tmp_path / "local")
    want = extract(local, paths, load_model("musicnn-msd"), POLICY, batch_size=2)
    got = driver(tmp_path / "ray", paths, "musicnn-msd", POLICY, batch_size=2, actors=1)
    remote = FeatureStore(tmp_path / "ray")
    assert (got.done, got.copies, got.skipped) == (4, 1, 0) == (want.done, want.copies, want.skipped)
    assert got.warnings == want.warnings and [w.split(": ")[0] for w in got.warnings] == [str(music / "phone.wav")]
    assert got.audio_seconds == 4 * POLICY.max_windows * POLICY.window_seconds  # the copy is not decoded again
    assert [Path(p).name for p, _ in got.failed] == ["corrupt.ogg"] == [Path(p).name for p, _ in want.failed]
    # torch in a 1-thread Ray actor vs 2 local threads, with patches batched in chunks across windows:
    # a different summation order, at most 2 float16 ulps (measured: 1 element of 600 at 2 ulps).
    assert_same_vectors(vectors_by_path(remote, "musicnn-msd"), vectors_by_path(local, "musicnn-msd"), ulps=2)
    again = driver(tmp_path / "ray", [p for p in paths if p.suffix == ".wav"], "musicnn-msd", POLICY, batch_size=2)
    assert (again.done, again.skipped, again.failed) == (0, 5, [])


def test_renamed_and_moved_files_keep_their_ids_and_vectors_from_engine_to_engine(driver: Driver,
                                                                                  tmp_path: Path) -> None:
    """Ray's catalogue step follows moves as the local one does (``since``), untested. And on both engines `--prune`
    ran before the files were catalogued: the vanished paths of a renamed file and of one moved into a subfolder
    were forgotten first ('2 removed'), then both files catalogued anew, under new ids (index entries, fused vectors,
    playlists and pages naming the old ids lost them). Now, local then Ray, Ray then Ray, Ray then local, each file
    keeps its id and vectors, nothing is removed or embedded again, and `mess similar` finds a renamed file under
    its new name and the others under their new paths."""
    music, store_dir = tmp_path / "music", tmp_path / "store"
    where = dict(enumerate(_write_tones(music, 3, seconds=5.0)))  # file number -> its path now

    def run(engine: str) -> ExtractSummary:
        if engine == "ray":
            return driver(store_dir, find_audio([music]), "dsp", POLICY, actors=1, prune_under=[str(music)])
        with contextlib.closing(FeatureStore(store_dir)) as store:
            return extract(store, find_audio([music]), DspModel(), POLICY, prune_under=[music])

    assert (run("local").done, _vector_rows(store_dir)) == (3, (3, 3))
    with contextlib.closing(FeatureStore(store_dir, readonly=True)) as store:
        ids = {n: store.track(path).id for n, path in where.items()}
        vectors = {n: vectors_by_path(store, "dsp")[str(path)] for n, path in where.items()}
    for step, engine in enumerate(("ray", "ray", "local")):
        renamed, moved = step % 3, (step + 1) % 3
        where[renamed] = where[renamed].rename(where[renamed].with_name(f"renamed{step}.wav"))
        (music / f"sub{step}").mkdir()
        where[moved] = where[moved].rename(music / f"sub{step}" / where[moved].name)
        if step == 1:  # session 37: the renamed file also swaps names with the third: ids follow recordings
            swap = where[0].rename(music / "swap.wav")
            where[1], where[0] = where[1].rename(where[0]), swap.rename(where[1])
        again = run(engine)
        assert (again.done, again.skipped, again.removed, again.failed) == (0, 3, 0, []), engine
        assert again.moved == (3 if step == 1 else 2)  # counted (session 37)
        assert _vector_rows(store_dir) == (3, 3)  # no vectors computed again
        with contextlib.closing(FeatureStore(store_dir, readonly=True)) as store:
            assert {t.path: t.id for t in store.tracks()} == {str(where[n]): i for n, i in ids.items()}, engine
            assert_same_vectors(vectors_by_path(store, "dsp"), {str(where[n]): v for n, v in vectors.items()})
    similar = CliRunner().invoke(app, ["similar", where[2].name, "--model", "dsp", "--store", str(store_dir),
                                       "--json"])
    assert similar.exit_code == 0, similar.output
    answer = json.loads(similar.stdout)
    assert answer["query"]["id"] == ids[2]
    assert {r["path"]: r["id"] for r in answer["results"]} == {str(where[n]): ids[n] for n in (0, 1)}


def test_without_an_address_a_local_cluster_is_started_not_the_one_an_old_address_file_names(
        tones: tuple[Path, dict[str, list[np.ndarray]]]) -> None:
    """`mess extract --engine ray` without --address (help: a local cluster) let Ray join the cluster named in its
    address file (`ray_current_cluster`, left by any earlier `ray start`): a stale one hung the run for good.
    Its stderr held Ray's note that the cluster it started uses tokens ('Set RAY_AUTH_MODE=disabled to opt out') and
    about 20 INFO lines of Ray Data's (each dataset's plan, its progress every 10 s) between mess's own lines."""
    music, want = tones
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        (temp / "ray").mkdir()
        (temp / "ray" / "ray_current_cluster").write_text("192.0.2.1:6379")  # TEST-NET: nothing answers there
        # no RAY_AUTH_MODE, as a user's shell: Ray turns tokens on by default (the token from RAY_AUTH_TOKEN)
        before = (f"import os; os.environ['RAY_TMPDIR'] = {str(temp)!r}; os.environ.pop('RAY_ADDRESS', None); "
                  "os.environ.pop('RAY_AUTH_MODE', None)\n")
        paths = sorted(music.glob("*.wav"))[:2]
        stderr: list[str] = []
        got = extract_ray(temp / "store", paths, "dsp", POLICY, None, before=before, stderr=stderr, actors=1)
        assert (got.done, got.failed) == (2, [])
        assert "Token authentication" not in stderr[0] and "\tINFO " not in stderr[0], stderr[0]
        data_log = temp / "ray" / "session_latest" / "logs" / "ray-data" / "ray-data.log"  # Ray Data's notes
        assert "Execution plan of Dataset" in data_log.read_text()
        assert_same_vectors(vectors_by_path(FeatureStore(temp / "store"), "dsp"), {str(p): want[str(p)] for p in paths})
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_records_where_an_onnx_model_came_from(driver: Driver, tmp_path: Path) -> None:
    """As the local pipeline: the run of an .onnx file records its path, preset and revision, so new files can be
    embedded with it later (runs/ID/source.json)."""
    pytest.importorskip("onnx", reason="the test builds its graph with onnx (test extra)")
    from test_onnx_backend import EFFNET_OUTPUTS, effnet_graph, write_json

    model = effnet_graph(tmp_path / "discogs-effnet-bsdynamic-1.onnx")  # the preset is guessed from the name
    write_json(model, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    got = driver(tmp_path / "ray", _write_tones(tmp_path / "music", 1, seconds=5.0, sr=16000), str(model), POLICY,
                 actors=1)
    assert got.done == 1 and got.failed == []
    with contextlib.closing(FeatureStore(tmp_path / "ray", readonly=True)) as store:
        run = store.run("discogs-effnet-bsdynamic-1")
        assert store.model_source(run) == {"kind": "onnx", "path": str(model.resolve()), "preset": "discogs-effnet",
                                           "revision": run.revision}


def test_killed_job_resumes_without_loss_or_duplicates(ray_address: str, driver: Driver, tones: tuple,
                                                        tmp_path: Path) -> None:
    music, reference = tones
    store_dir = tmp_path / "store"
    cmd = [sys.executable, "-m", "mess.cli", "extract", str(music), "--engine", "ray", "--address", ray_address,
           "--model", "dsp", "--store", str(store_dir), "--window", "4", "--max-windows", "3", "--batch-size", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=RAY_ENV)
    deadline = time.time() + 300  # a loaded machine compiling librosa's JIT cold needs minutes
    while time.time() < deadline and proc.poll() is None and _vector_rows(store_dir)[0] == 0:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = _vector_rows(store_dir)[0]
    assert 0 < committed < N_TONES, "the kill should land mid-run"
    resumed = driver(store_dir, find_audio([music]), "dsp", POLICY, batch_size=2)
    store = FeatureStore(store_dir)
    assert (resumed.done, resumed.skipped, resumed.failed) == (N_TONES - committed, committed, [])
    assert _vector_rows(store_dir) == (N_TONES, N_TONES)
    run = store.run("dsp")
    assert store.row_file(run, "track", 0).rows == N_TONES  # the interrupted append was cut back
    assert_same_vectors(vectors_by_path(store, "dsp"), reference)


def test_ray_prunes_files_gone_from_disk_as_the_local_engine_does_and_prints_mess_s_lines_alone(
        ray_address: str, tmp_path: Path) -> None:
    """Two bugs of `mess extract --engine ray`, one run (a driver of its own costs a job's worth of Ray workers):

    `--prune` forgot nothing: the deleted file kept answering searches, and the run ended by telling the user to run
    `mess extract FOLDER --prune`.

    A run embedding 2 files (one block) printed, above its summary, Ray core's ERROR line that the actors'
    constructor arguments are in the object store while their restarts are on (core_worker.cc, once per driver) and
    Ray Data's UserWarning that the pool's 2 actors (one per CPU) received 1 input: noise a user takes for an error.
    Now the summary alone, the first line kept in the driver's log; nor Ray Data's plan and progress lines."""
    music, store_dir = tmp_path / "music", tmp_path / "store"
    gone = _write_tones(music, 3, seconds=5.0)[1]
    args = [str(music), "--model", "dsp", "--store", str(store_dir), "--window", "4", "--max-windows", "3"]
    local = mess_here("extract", *args)  # the local engine: no Ray driver
    assert local.returncode == 0, local.stdout + local.stderr
    gone.unlink()
    new = _write_tones(music / "new", 2, seconds=5.0, sr=16000)  # other contents than those embedded: 2 to embed
    out = subprocess.run([sys.executable, "-m", "mess.cli", "extract", *args, "--prune", "--engine", "ray",
                          "--address", ray_address], capture_output=True, text=True, timeout=300, env=RAY_ENV)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{len(new)} embedded, 2 unchanged (skipped), 0 failed, "
                                                   "1 removed in "), out.stderr
    with contextlib.closing(FeatureStore(store_dir, readonly=True)) as store:
        assert sorted(Path(t.path).relative_to(music).as_posix() for t in store.tracks(store.run("dsp"))) == \
            ["new/tone00.wav", "new/tone01.wav", "tone00.wav", "tone02.wav"]


def test_ray_embeds_a_file_named_twice_once_as_the_local_engine_does(driver: Driver, tmp_path: Path) -> None:
    """One path given twice was counted as a copy of itself ('1 embedded, 1 copy' of one file)."""
    tone = _write_tones(tmp_path / "music", 1, seconds=5.0)[0]
    got = driver(tmp_path / "ray", [tone, tone], "dsp", POLICY, actors=1)
    assert (got.done, got.copies, got.skipped, got.failed) == (1, 0, 0, [])


def test_ray_catalogues_a_truncated_file_with_its_decoded_duration(driver: Driver, tmp_path: Path) -> None:
    """An M4A whose index claims 200 s but holds about 62: the local engine records what it decoded, the Ray engine
    kept the index's 200 s (playlists said 3:20)."""
    from test_extract import _truncated_m4a

    (tmp_path / "music").mkdir()
    _truncated_m4a(tmp_path / "music" / "cut.m4a")
    got = driver(tmp_path / "ray", find_audio([tmp_path / "music"]), "dsp", POLICY, actors=1)
    assert (got.done, got.failed) == (1, [])
    with contextlib.closing(FeatureStore(tmp_path / "ray", readonly=True)) as store:
        duration = store.track(tmp_path / "music" / "cut.m4a").duration
    assert duration is not None and 55 < duration < 70, duration


def test_ray_records_a_file_it_could_not_read_as_the_local_engine_does(driver: Driver, tmp_path: Path) -> None:
    """A file gone between the folder walk and its reading failed the run's summary only: `mess info --failures`
    did not list it (the local engine records it, and `--prune` forgets it once it is gone for good)."""
    paths = [*_write_tones(tmp_path / "music", 1, seconds=5.0), tmp_path / "music" / "gone.wav"]
    local = FeatureStore(tmp_path / "local")
    want = extract(local, paths, DspModel(), POLICY)
    got = driver(tmp_path / "ray", paths, "dsp", POLICY, actors=1)
    assert (got.done, [Path(p).name for p, _ in got.failed]) == (want.done, ["gone.wav"]) == (1, ["gone.wav"])
    with contextlib.closing(FeatureStore(tmp_path / "ray", readonly=True)) as store:
        assert store.failures(store.run("dsp")) == local.failures(local.run("dsp"))
        assert [Path(p).name for p, _ in store.failures(store.run("dsp"))] == ["gone.wav"]


def test_a_decoder_that_hangs_is_stopped_and_the_run_goes_on(driver: Driver, tmp_path: Path) -> None:
    """The Ray engine had no decoder timeout, unlike the local engine's decoding processes: a file whose reading never
    ends (a FIFO nobody writes) or whose decoding hangs held its Ray task, and the run, for good. Each file is now
    inspected and decoded in a decoding process under the same timeout: the file is recorded as failed with the
    local engine's reason and the rest embedded. (The shared cluster's decoders never end decoding hang*.wav.)"""
    music = tmp_path / "music"
    paths = _write_tones(music, 3, seconds=5.0)
    paths[2] = paths[2].rename(music / "hang.wav")
    stuck = music / "stuck.wav"
    os.mkfifo(stuck)  # nobody writes: its inspection never ends
    # a decoding process, once started, answers for a 5 s tone in some 30 ms (measured under a load of 9 on 2
    # cores): 2 s leaves a margin of 60 (the timeout counts once the process has done its imports)
    got = driver(tmp_path / "ray", [*paths, stuck], "dsp", POLICY, actors=1, decode_timeout=2.0)
    assert got.done == 2
    assert sorted(got.failed) == [(str(path), f"{path}: the decoder took longer than 2 s and was stopped; file skipped")
                                  for path in (paths[2], stuck)]
    with contextlib.closing(FeatureStore(tmp_path / "ray", readonly=True)) as store:
        assert sorted(Path(p).name for p, _ in store.failures(store.run("dsp"))) == ["hang.wav", "stuck.wav"]


def test_ray_numbers_new_tracks_in_input_order_when_the_first_file_is_slow(collection: Path, driver: Driver,
                                                                          tmp_path: Path) -> None:
    """Ray Data hands rows back as its tasks finish (two files a task): the driver catalogues them in input order.
    The first of tests/test_ids_in_input_order.py's collection is named as the file the shared cluster's processes
    are slow to open (the others overtake it); its id must still be its place in the input."""
    music = tmp_path / "music"
    shutil.copytree(collection, music)
    slow_one = find_audio([music])[0].rename(music / SLOW_FILE)
    paths = find_audio([music])
    assert paths[0] == slow_one
    opened_before = sum(len(log.read_text().split()) for log in _cluster().slowed.iterdir())
    summary = driver(tmp_path / "store", paths, "dsp", input_order.POLICY, actors=1)
    assert summary.done == input_order.N_FILES - 1 and [Path(p).name for p, _ in summary.failed] == [input_order.SILENT]
    assert sum(len(log.read_text().split()) for log in _cluster().slowed.iterdir()) > opened_before  # slowed
    with contextlib.closing(FeatureStore(tmp_path / "store", readonly=True)) as store:
        numbered = {Path(t.path): t.id for t in store.tracks()}
    assert input_order.in_id_order(numbered) == paths


def test_killed_worker_is_restarted_and_nothing_is_lost(driver: Driver, tones: tuple, tmp_path: Path) -> None:
    """SIGKILL to the Ray worker process embedding (a CPU task, which keeps the model for its later tasks) mid-run:
    its task is retried on another worker and the run completes, every track once."""
    music, reference = tones
    store_dir = tmp_path / "store"
    result: dict[str, object] = {}

    def job() -> None:
        result["summary"] = driver(store_dir, find_audio([music]), "dsp", POLICY, batch_size=2, actors=1,
                                   write_every=2)

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.time() + 300  # a loaded machine compiling librosa's JIT cold needs minutes
    while time.time() < deadline and thread.is_alive() and _vector_rows(store_dir)[0] == 0:
        time.sleep(0.02)
    killed: list[psutil.Process] = []
    committed_at_kill = N_TONES
    while not killed and thread.is_alive() and _vector_rows(store_dir)[0] < N_TONES:  # a worker between tasks: again
        committed_at_kill = _vector_rows(store_dir)[0]
        for worker in _embedders():  # this job's: the shared driver runs one job at a time
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.send_signal(signal.SIGKILL)
                killed.append(worker)
        time.sleep(0.01)
    assert killed and committed_at_kill < N_TONES, "the kill should land mid-run"
    thread.join(timeout=180)
    assert not thread.is_alive()
    summary = result["summary"]
    assert (summary.done, summary.failed) == (N_TONES, [])
    assert _vector_rows(store_dir) == (N_TONES, N_TONES)
    assert_same_vectors(vectors_by_path(FeatureStore(store_dir), "dsp"), reference)


def _embedders() -> list[psutil.Process]:
    """The shared cluster's processes embedding now: Ray names a worker after the task it runs (decoding and
    embedding fused in one task on CPUs); the cluster's processes are in the session its head started (another
    cluster on the machine, another test run's, is not this one)."""
    head = _cluster().head.pid
    return [p for p in psutil.process_iter() if "MapBatches(embed_batch)" in _title(p) and _session(p) == head]


def _session(proc: psutil.Process) -> int:
    try:
        return os.getsid(proc.pid)
    except OSError:  # gone
        return -1


def _title(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def test_ray_matches_the_local_store_on_rendered_music(driver: Driver, extracted_store: Path, tmp_path: Path) -> None:
    reference = FeatureStore(extracted_store, readonly=True)
    run = reference.run("dsp")
    tracks = reference.tracks(run)[:4]
    paths = [Path(t.path) for t in tracks]
    summary = driver(tmp_path / "ray", paths, "dsp", run_policy(run), batch_size=2)
    store = FeatureStore(tmp_path / "ray")
    assert (summary.done, summary.failed) == (len(paths), [])
    assert [store.track(p).artist for p in paths] == [t.artist for t in tracks]
    want = {p: v for p, v in vectors_by_path(reference, "dsp").items() if p in {str(x) for x in paths}}
    assert_same_vectors(vectors_by_path(store, "dsp"), want)


def test_unreachable_address_fails_in_seconds_with_one_line(tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "tone.wav", np.zeros(22050, dtype=np.float32) + 0.1, 22050)
    started = time.perf_counter()
    out = mess_here("extract", str(music), "--engine", "ray", "--address", "127.0.0.1:9", "--model", "dsp", "--store",
                    str(tmp_path / "store"))  # it never joins a cluster: this process stays no Ray driver
    assert out.returncode == 1 and "cannot reach a Ray cluster at '127.0.0.1:9'" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr and time.perf_counter() - started < 30


_OTHER_WEIGHTS = """
import sys
import mess.models.dsp
mess.models.dsp.librosa_version = "other"  # this driver's dsp is another revision than its Ray workers' (new processes)
from mess.cli.main import main
sys.argv = ["mess", *sys.argv[1:]]
main()
"""


def test_a_ray_job_whose_worker_fails_ends_with_mess_s_line_and_no_traceback(ray_address: str, tmp_path: Path) -> None:
    """A real Ray job whose embedding actor refuses the run's weights: Ray forwarded the worker's traceback
    ('Exception raised in creation task: ...') and Ray Data logged the driver's ('Full stack trace: Traceback ...',
    with 'please open an issue on the Ray project') on stderr above mess's one line, and the driver printed the
    cluster's report of the task to be retried, the worker's traceback again, on stdout (mess's results). mess's
    line now says it; the report is one line on stderr; the tracebacks stay in Ray's session logs."""
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "tone.wav", 0.3 * np.sin(2 * np.pi * 220 * np.arange(22050 * 2) / 22050), 22050)
    done = subprocess.run([sys.executable, "-c", _OTHER_WEIGHTS, "extract", str(music), "--model", "dsp", "--engine",
                           "ray", "--address", ray_address, "--store", str(tmp_path / "store")], capture_output=True,
                          text=True, timeout=300, env=RAY_ENV)
    from librosa.version import version

    line = (f"error: the Ray job failed: a worker loaded dsp revision v6-librosa-{version}, the run is "
            "v6-librosa-other: every node needs the same model weights (ModelMismatch)")
    assert done.returncode == 1 and line in done.stderr.splitlines(), done.stderr
    assert "Traceback" not in done.stderr and "creation task" not in done.stderr, done.stderr
    assert "please open an issue" not in done.stderr, done.stderr
    # what Ray's cluster reports of the job (a task to be retried) was printed, traceback and all, on stdout
    assert "Traceback" not in done.stdout and "raylet" not in done.stdout, done.stdout
