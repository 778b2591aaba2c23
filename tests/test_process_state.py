"""Library code leaves process-wide state alone: matplotlib's backend, faiss's threads, warning filters, log levels."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

from mess.artists.heatmap import write_heatmap
from mess.fusion.report import FusionReport
from mess.fusion.report import plot as plot_fusion
from mess.probing.probes import ProbeScores
from mess.probing.report import TRAINED, ProbeReport
from mess.probing.report import heatmap as probe_heatmap
from mess.probing.targets import TARGETS
from mess.search.ann import AnnIndex
from mess.search.evaluate import Evaluation, SetScore, plot_evaluation
from mess.search.hubness import HubnessStats
from mess.search.metrics import RetrievalScores

SRC = Path(__file__).resolve().parents[1] / "src"
STATE_CHANGERS = ("matplotlib.use", "faiss.omp_set_num_threads", "warnings.filterwarnings", "warnings.simplefilter")


@pytest.fixture
def svg_backend() -> Iterator[str]:
    """The application chose a backend (svg here); restored afterwards for the other tests."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield matplotlib.get_backend()
    matplotlib.use(before)


def _artists(path: Path) -> None:
    sim = np.array([[1.0, 0.2, 0.5], [0.2, 1.0, 0.7], [0.5, 0.7, 1.0]])
    write_heatmap(path, ["a", "b", "c"], sim, "artists")


def _probe(path: Path) -> None:
    targets = tuple(t.name for t in TARGETS[:4])
    r2 = np.linspace(-0.5, 0.9, 3 * len(targets)).reshape(3, len(targets))
    scores = ProbeScores(("l0", "l1", "l2"), targets, r2, np.full_like(r2, 0.05))
    report = ProbeReport("toy", "r1", 1, {}, 20, "5 folds", "ridge", 1.0, {TRAINED: scores})
    probe_heatmap(report, path)


def _fusion(path: Path) -> None:
    report = FusionReport("toy", "artist", 10, 20, 4, [], {}, {"l0": 0.2, "l1": 0.8}, "", "", None, True,
                          probe={"l0": {"timbre": 0.3}, "l1": {"timbre": 0.6}})
    plot_fusion(report, path)


def _evaluation(path: Path) -> None:
    hub = HubnessStats(10, 0.1, 0.0, 0.01, 3)
    sets = [SetScore(f"l{i}", "layer", "cosine", None, RetrievalScores(10, 0.1 * i, 0.1 * i, 0.1 * i), hub)
            for i in range(3)]
    plot_evaluation(Evaluation("toy", "artist", 10, "center", 20, 20, 4, RetrievalScores(10, 0.05, 0.05, 0.05),
                               sets), path)


@pytest.mark.parametrize("draw", [_artists, _probe, _fusion, _evaluation], ids=lambda f: f.__name__.strip("_"))
def test_plots_keep_the_applications_matplotlib_backend(svg_backend: str, draw: Callable[[Path], None],
                                                        tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    draw(path)
    assert matplotlib.get_backend() == svg_backend == "svg"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100 and image.std() > 0  # a real drawing, not a blank


def test_no_library_module_uses_pyplot_or_switches_backend() -> None:
    offenders = []
    for path in sorted((SRC / "mess").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import | ast.ImportFrom) else []
            module = node.module if isinstance(node, ast.ImportFrom) else ""
            call = ast.unparse(node.func) if isinstance(node, ast.Call) else ""
            if "matplotlib.pyplot" in names or module == "matplotlib.pyplot" or call in STATE_CHANGERS:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    allowed = ("mess/cli/main.py",  # the application's warning filters
               "mess/serve/state.py",  # the server's request threads
               "mess/models/essentia/export.py",  # inside catch_warnings, around the ONNX exporter
               "mess/models/musicnn/runtime.py",  # the same
               "mess/artists/heatmap.py")  # inside catch_warnings: a missing glyph is said once by the caller
    assert [o for o in offenders if not o.startswith(allowed)] == []


def test_searching_leaves_faiss_threads_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = faiss.omp_set_num_threads
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: (calls.append(n), real(n)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    before = faiss.omp_get_max_threads()
    for kind in ("flat", "hnsw"):
        ann = AnnIndex.build(x, np.arange(500), kind)
        sims, ids = ann.search(x[:1], 3)
        assert ids[0, 0] == 0 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert calls == [] and faiss.omp_get_max_threads() == before


def test_the_server_gives_its_request_threads_one_faiss_thread_and_leaves_others_alone() -> None:
    from mess.serve.state import RequestLock

    lock, seen = RequestLock(), []

    def request() -> None:
        with lock:
            seen.append(faiss.omp_get_max_threads())
        with lock:  # re-entered later in the same thread: still one
            seen.append(faiss.omp_get_max_threads())

    before = faiss.omp_get_max_threads()
    thread = threading.Thread(target=request)
    thread.start()
    thread.join()
    assert seen == [1, 1] and faiss.omp_get_max_threads() == before


CLI_WITH_WARNINGS = """
import sys, warnings
from mess.cli import main as cli

@cli.app.command("warn-demo")
def warn_demo() -> None:
    warnings.warn("an unrelated warning the user should see", UserWarning)
    warnings.warn_explicit("Stochastic Optimizer: Maximum iterations (300) reached", UserWarning,
                           "_multilayer_perceptron.py", 1, module="sklearn.neural_network._multilayer_perceptron")
    print("command ran")

sys.argv = ["mess", "warn-demo"]
cli.main()
"""


def test_the_cli_hides_only_its_known_noisy_warnings() -> None:
    done = subprocess.run([sys.executable, "-c", CLI_WITH_WARNINGS], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": ""})
    assert done.returncode == 0 and "command ran" in done.stdout, done.stderr
    assert "UserWarning: an unrelated warning the user should see" in done.stderr
    assert "Stochastic Optimizer" not in done.stderr


def test_an_in_process_extract_leaves_the_mess_log_level_alone(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """`mess extract` quietened the `mess` logger for good: run in-process (CliRunner, a notebook), every later
    warning of the library (a query file changed since extraction, ...) was lost."""
    import soundfile as sf
    from typer.testing import CliRunner

    from mess.cli.main import app

    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(22050 * 3) / 22050
    sf.write(music / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)
    before = logging.getLogger("mess").level
    out = CliRunner().invoke(app, ["extract", str(music), "--model", "dsp", "--store", str(tmp_path / "store")])
    assert out.exit_code == 0, out.output
    assert logging.getLogger("mess").level == before
    with caplog.at_level(logging.WARNING):
        logging.getLogger("mess.query.embed").warning("a later warning")
    assert "a later warning" in caplog.text
