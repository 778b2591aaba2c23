"""The benchmark scripts run on the smallest inputs, as a user runs them, and fail in one line on bad input.

Where the test is about what a script says (a refusal, a printed figure), it runs in this process
(:func:`_bench_here`): what it says does not depend on the process, and each `python SCRIPT` would pay seconds of
torch imports first. Scripts that start processes or a cluster of their own run as processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import run_here

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def store(rendered_collection: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with dsp vectors of two rendered pieces (and no other model)."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model
    from mess.store import FeatureStore

    root = tmp_path_factory.mktemp("bench") / "store"
    fs = FeatureStore(root)
    extract(fs, rendered_collection[:2], load_model("dsp"), WindowPolicy(), workers=1)
    fs.close()
    return root


def _bench(script: str, *args: str, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _bench_here(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/SCRIPT ARGS`` run in this process (:func:`conftest.run_here`), answered as :func:`_bench`
    is: its exit code, stdout and stderr (an exception the script does not handle printed there as Python prints
    it, exit code 1)."""
    import runpy

    import torch

    old_path, threads = list(sys.path), torch.get_num_threads()
    sys.path.insert(0, str(BENCHMARKS))  # as `python SCRIPT` puts the script's folder first
    try:
        return run_here([str(BENCHMARKS / script), *args],
                        lambda: runpy.run_path(str(BENCHMARKS / script), run_name="__main__"))
    finally:
        sys.path[:] = old_path
        torch.set_num_threads(threads)  # head.py sets one thread before it opens the store


def test_store_concurrency_takes_the_rendered_folder_not_its_lock_file(tmp_path: Path) -> None:
    """Without a folder it took the first 'collection-*' in the test cache, which could be the '.lock' file beside
    the folder: 0 files were extracted and it printed 'corrupted tracks: 0 (must be 0)', a pass over nothing."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "collection-0.lock").touch()
    only_lock = _bench("store_concurrency.py", "--writers", "2", env={"MESS_TEST_CACHE": str(cache)})
    assert only_lock.returncode == 2
    assert "holds no rendered test collection" in only_lock.stderr.splitlines()[-1]
    assert "corrupted" not in only_lock.stdout
    (cache / "collection-0").mkdir()
    for i, hz in enumerate((220, 330)):  # two short tones: the length of the audio is not what is tested
        sf.write(cache / "collection-0" / f"tone{i}.wav", 0.3 * np.sin(2 * np.pi * hz * np.arange(22050 * 3) / 22050),
                 22050)
    ran = _bench("store_concurrency.py", "--writers", "2", env={"MESS_TEST_CACHE": str(cache)})
    assert ran.returncode == 0, ran.stderr
    assert f"2 files of {cache / 'collection-0'} with dsp" in ran.stdout
    assert "corrupted tracks: 0 (must be 0); `mess check`: exit 0" in ran.stdout


def test_extract_benchmark_fails_in_one_line_without_audio(tmp_path: Path) -> None:
    """An empty or missing folder ended in a ZeroDivisionError traceback after the machine's matmul warm-up."""
    for folder in (tmp_path, tmp_path / "missing"):
        got = _bench_here("extract.py", str(folder), "--models", "dsp", "--long-hours", "0", "--wav-models", "")
        assert got.returncode == 2
        assert got.stderr.splitlines()[-1] == f"extract.py: error: no audio files in {folder}"
        assert "Traceback" not in got.stderr


def test_gpu_benchmark_without_a_gpu_says_so_in_one_line() -> None:
    """The README's command (`--device cuda`) on a machine without CUDA ended in torch's AssertionError traceback."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    got = _bench_here("gpu_extract.py", "--device", "cuda", "--precisions", "fp32", "--batch-sizes", "1",
                 "--repeats", "1", "--seconds", "1")
    assert got.returncode == 2
    assert "sees no CUDA device; run it on a GPU machine, or with --device cpu" in got.stderr.splitlines()[-1]
    assert "Traceback" not in got.stderr


def test_quality_benchmark_names_a_missing_store_or_model_in_one_line(rendered_collection: list[Path],
                                                                      store: Path, tmp_path: Path) -> None:
    """`--no-extract` on a store without the model (or no store at all) ended in a StoreError traceback."""
    # A set as `mess demo soundtracks` leaves it: data/GAME/FILE, listed in its manifest. (Its files once lay
    # elsewhere: the manifest was then read as a moved set's, its files were missing, and every run fetched the six
    # games' packages with apt-get before it could refuse.)
    data = tmp_path / "data"
    rows = []
    for path in rendered_collection[:2]:
        game = path.name.split("__")[0]
        (data / game).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, data / game / path.name)
        rows.append(f"{(data / game / path.name).resolve()},{game},,20.00")
    (data / "manifest.csv").write_text("\n".join(["path,game,artist,duration", *rows]) + "\n")
    for where, want in ((store, f"no vectors for model 'musicnn' in {store}"),
                        (tmp_path / "none", f"no feature store at {tmp_path / 'none'}")):
        got = _bench_here("quality.py", "--data", str(data), "--store", str(where), "--no-extract",
                     "--draws", "0", "--models", "musicnn,dsp")
        assert got.returncode == 2
        assert want in got.stderr.splitlines()[-1]
        assert "Traceback" not in got.stderr
    assert sorted(p.name for p in data.iterdir()) == sorted({"manifest.csv", *(p.name.split("__")[0] for p in
                                                                              rendered_collection[:2])})  # no fetch


def test_quality_benchmark_scores_the_default_as_mess_evaluate_does(rendered_collection: list[Path],
                                                                     tmp_path: Path) -> None:
    """Its default rows called `block_roles` without the run's revision once the timbre layer's role came to depend
    on it: the benchmark behind every figure of docs/quality.md ended in a TypeError at its first default row. Its
    default row must be the product's answer: `mess evaluate`'s all-layer mAP with the same labels."""
    from conftest import mess_here

    data, rows = tmp_path / "data", []
    by_composer: dict[str, list[Path]] = {}
    for path in rendered_collection:
        by_composer.setdefault(path.name.split("__")[0], []).append(path)
    for game, paths in by_composer.items():
        (data / game).mkdir(parents=True)
        for path in paths[:2]:
            shutil.copyfile(path, data / game / path.name)
            rows.append(f"{(data / game / path.name).resolve()},{game},,20.00")
    (data / "manifest.csv").write_text("\n".join(["path,game,artist,duration", *rows]) + "\n")
    got = _bench_here("quality.py", "--data", str(data), "--store", str(tmp_path / "store"), "--models", "musicnn",
                      "--draws", "0")
    assert got.returncode == 0, got.stderr[-2000:]
    default = [line for line in got.stdout.splitlines() if line.startswith("| the default: musicnn, all layers")]
    assert len(default) == 1, got.stdout
    assert "by composer: no two tracks share an artist tag; not scored" in got.stdout, got.stdout  # no artist column
    bench_map = float(default[0].split("|")[3].split()[0])
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(",".join(r.split(",")[:2]) for r in rows) + "\n")
    evaluated = mess_here("evaluate", "--store", str(tmp_path / "store"), "--model", "musicnn", "--labels",
                          str(tmp_path / "labels.csv"))
    assert evaluated.returncode == 0, evaluated.stderr
    ours = [cells for cells in (line.split("│") for line in evaluated.stdout.splitlines())  # the result: stdout
            if len(cells) > 3 and cells[1].strip().rstrip(" *") == "all layers"]
    assert len(ours) == 1, evaluated.stdout
    assert bench_map == pytest.approx(float(ours[0][3]), abs=5e-4)


def test_ray_benchmark_starts_its_own_cluster_beside_a_stale_address_file(tmp_path: Path) -> None:
    """It called ray.init() with no address, which joins the cluster named in Ray's ray_current_cluster file: a file
    left by any earlier Ray session on the machine made it fail with Ray's ValueError traceback (and a live cluster
    would have been timed instead of the --cpus one it reports)."""
    import tempfile

    pytest.importorskip("ray")
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "tone.wav", 0.3 * np.sin(2 * np.pi * 220 * np.arange(22050 * 5) / 22050), 22050)  # a short file
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("192.0.2.2:6379")  # a cluster long gone
        got = _bench("ray_extract.py", str(music), "--model", "dsp", "--limit", "1", "--cpus", "1",
                     env={"RAY_TMPDIR": str(ray_tmp), "RAY_ADDRESS": ""})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert got.returncode == 0, got.stderr[-2000:]
    assert "largest vector difference ray vs local: 0" in got.stdout


def test_head_benchmark_names_a_missing_store_or_model_in_one_line(store: Path, tmp_path: Path) -> None:
    """Its defaults (--store /work/data/st-store, --model musicnn-msd) on a machine without that store, or a store
    without that model, ended in a StoreError traceback."""
    for where, want in ((store, f"no vectors for model 'musicnn-msd' in {store}"),
                        (tmp_path / "none", f"no feature store at {tmp_path / 'none'}")):
        got = _bench_here("head.py", "--store", str(where))
        assert got.returncode == 2
        assert want in got.stderr.splitlines()[-1]
        assert "Traceback" not in got.stderr


def test_head_benchmark_reads_labels_from_a_csv(extracted_store: Path, rendered_collection: list[Path],
                                                tmp_path: Path) -> None:
    """`--labels CSV` ended in "AttributeError: 'LabelFile' object has no attribute 'items'" before any figure: the
    labelled tracks are the CSV's rows that name a track of the store, each a query once."""
    import csv
    import io

    from mess.store import FeatureStore

    with closing(FeatureStore(extracted_store, readonly=True)) as fs:
        stored = {t.path for t in fs.tracks(fs.run("musicnn-msd"))}
    rows = [(str(p), p.name.split("__")[0]) for p in rendered_collection]
    assert {p for p, _ in rows} <= stored
    text = io.StringIO()
    csv.writer(text).writerows([("path", "composer"), *rows, ("/nowhere/x.ogg", "nobody")])
    (tmp_path / "labels.csv").write_text(text.getvalue())
    got = _bench_here("head.py", "--store", str(extracted_store), "--labels", str(tmp_path / "labels.csv"), "--label",
                      "composer", "--config", '{"steps": 2, "dims": 4}')
    assert got.returncode == 0, got.stderr[-2000:]
    assert f"\n{len(rows)} tracks, " in got.stdout, got.stdout
    assert f"left out: line {len(rows) + 2} '/nowhere/x.ogg'" in got.stdout.splitlines()[0]  # the CSV's last row


def test_fusion_benchmark_refuses_layers_narrower_than_its_network_in_one_line() -> None:
    """A small --dim (for a quick run) built the data and the store, then ended in the network's ValueError
    traceback; it now refuses the option up front."""
    got = _bench_here("fusion.py", "--tracks", "200", "--layers", "3", "--dim", "32", "--artists", "10",
                      "--threads", "1")
    assert got.returncode == 2
    assert got.stderr.splitlines()[-1] == ("fusion.py: error: --dim 32: the default fusion network needs layers of "
                                           "at least 256 dims")


def test_texture_evaluate_before_extract_says_what_to_run_in_one_line(tmp_path: Path) -> None:
    """`texture.py evaluate` without the statistics `texture.py extract` caches ended in numpy's FileNotFoundError
    traceback."""
    cache = tmp_path / "texture.npz"
    got = _bench_here("texture.py", "evaluate", "--cache", str(cache), "--store", str(tmp_path / "store"),
                 "--data", str(tmp_path / "data"))
    assert got.returncode == 2
    assert got.stderr.splitlines()[-1] == (f"texture.py: error: no statistics at {cache}: run `texture.py extract` "
                                           "(with the same --cache) first")


def test_extract_benchmark_on_one_file_prints_no_nan(tmp_path: Path) -> None:
    """With one file (`--limit 1`) there is no audio after the first file, and the overhead from then on printed
    '+nan%'; it says 'n/a', and the measured figures stay numbers."""
    y = 0.3 * np.sin(2 * np.pi * 220 * np.arange(22050 * 4) / 22050)
    sf.write(tmp_path / "one.wav", y, 22050)
    got = _bench_here("extract.py", str(tmp_path), "--models", "dsp", "--long-hours", "0", "--wav-models", "",
                      "--repeats", "1", "--tf-python", str(tmp_path / "none"))
    assert got.returncode == 0, got.stderr
    row = next(line for line in got.stdout.splitlines() if line.startswith("dsp "))
    overhead, median, after_first = row.split()[4:7]
    assert "nan" not in got.stdout.lower() and after_first == "n/a", got.stdout
    assert overhead.endswith("%") and median.endswith("%") and float(overhead[:-1]) > -100, row
