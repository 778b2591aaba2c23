"""Tests written for the mutation run of session 30's code (notes/mutation_session30_code.md): fast, in-process."""

from __future__ import annotations

import errno
import logging
import os
import traceback
from pathlib import Path

import pytest

ray_exceptions = pytest.importorskip("ray.exceptions")

from test_onnx_fetch import Routes, server  # noqa: E402, F401  (the fixture)

from mess.scale.embedder import ModelMismatch  # noqa: E402
from mess.scale.ray_extract import job_failure  # noqa: E402


def _task_error(exc: Exception, name: str = "Embedder.__init__") -> ray_exceptions.RayTaskError:
    """A RayTaskError as a worker sends it back: the traceback raised in-process, the cause attached."""
    try:
        raise exc
    except Exception as raised:
        return ray_exceptions.RayTaskError(name, traceback.format_exc(), raised)


def test_a_task_error_is_named_by_its_cause_first_line_and_class() -> None:
    err = _task_error(ModelMismatch("a worker loaded dsp revision 1, the run is other: 2\nmore detail"))
    assert job_failure(err) == "a worker loaded dsp revision 1, the run is other: 2 (ModelMismatch)"
    # the error re-raised in the driver is Ray's class that is also the cause's
    assert job_failure(err.as_instanceof_cause()) == job_failure(err)


def test_a_cause_without_a_message_is_its_class_name() -> None:
    assert job_failure(_task_error(ValueError())) == "ValueError"
    assert job_failure(_task_error(ValueError("\n  \n"))) == "ValueError"


def test_an_actor_that_died_in_its_creation_names_the_worker_error_from_the_traceback() -> None:
    """ActorDiedError carries no cause: the worker's error is read from its text, Ray's own lines skipped, colours
    dropped, the last error of the traceback (the one raised last) taken."""
    inner = _task_error(ModelMismatch("other weights\nsecond line"))
    died = ray_exceptions.ActorDiedError(cause=inner)
    assert getattr(died, "cause", None) is None
    assert "\x1b[" in str(died)  # Ray colours the task's name
    assert job_failure(died) == "other weights (ModelMismatch)"


def test_ray_s_own_error_lines_are_skipped_and_the_last_worker_error_taken() -> None:
    text = (
        "\x1b[36mray::Embedder.__init__()\x1b[39m (pid=12, ip=10.0.0.1)\n"
        "  File \"x.py\", line 3, in f\n"
        "KeyError: 'first'\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "mess.scale.embedder.ModelMismatch: the \x1b[1mlast\x1b[0m one\n"
        "ray.exceptions.RaySystemError: System error: ray's own\n"
        "\tpid: 12\n"
    )
    assert job_failure(ray_exceptions.RayError(text)) == "the last one (ModelMismatch)"


def test_only_ray_s_errors_named_gives_ray_s_last() -> None:
    text = "ray.exceptions.OwnerDiedError: first\nray.exceptions.ObjectLostError: the object is lost\n"
    assert job_failure(ray_exceptions.RayError(text)) == "the object is lost (ObjectLostError)"


def test_no_error_named_gives_ray_s_first_line_or_its_class() -> None:
    assert job_failure(ray_exceptions.ActorDiedError()) == "The actor died unexpectedly before finishing this task."
    assert job_failure(ray_exceptions.RayError("\n   \n  the first line  \nsecond\n")) == "the first line"
    assert job_failure(ray_exceptions.RayError("")) == "RayError"
    assert job_failure(ray_exceptions.RayError("\tpid: 12")) == "pid: 12"


def test_a_non_utf8_file_name_in_the_error_is_printed_escaped() -> None:
    name = os.fsdecode(b"caf\xe9.ogg")  # a lone surrogate, as Python holds a Latin-1 name
    expected = b"caf\xe9.ogg".decode("utf-8", "backslashreplace")
    assert job_failure(_task_error(OSError(f"cannot read {name}"))) == f"cannot read {expected} (OSError)"
    text = f"mess.scale.tasks.DecodeError: cannot decode {name}\n"
    assert job_failure(ray_exceptions.RayError(text)) == f"cannot decode {expected} (DecodeError)"
    assert job_failure(ray_exceptions.RayError(f"lost {name}")) == f"lost {expected}"


def test_a_ray_failure_is_recorded_printable_in_the_summary_the_log_and_the_store(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mess.extract.pipeline import ExtractSummary
    from mess.scale.ray_extract import _failed
    from mess.store import FeatureStore, RunKey

    store = FeatureStore(tmp_path / "store")
    run = store.ensure_run(RunKey("toy", "r1", "{}", 16000, ("l0",), (2,)))
    summary = ExtractSummary()
    odd = os.fsdecode(b"/m/caf\xe9.ogg")
    shown = b"/m/caf\xe9.ogg".decode("utf-8", "backslashreplace")
    with caplog.at_level(logging.WARNING, logger="mess.scale.ray_extract"):
        _failed(store, run, "", odd, f"{odd}: cannot decode", summary)
        _failed(store, run, "h1", "/m/b.ogg", "/m/b.ogg: too short", summary)
    assert summary.failed == [(shown, f"{shown}: cannot decode"), ("/m/b.ogg", "/m/b.ogg: too short")]
    assert [r.getMessage() for r in caplog.records] == [f"{shown}: cannot decode", "/m/b.ogg: too short"]
    rows = sorted(tuple(r) for r in store.db.execute("SELECT content_hash, reason FROM failures"))
    assert len(rows) == 2 and ("h1", "/m/b.ogg: too short") in rows
    assert store.failures(run) == [(odd, f"{shown}: cannot decode")]
    store.close()


def test_an_unreadable_graph_s_reason_is_onnx_runtime_s_first_line_cut_at_200_characters(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from mess.models.essentia import EssentiaModelError
    from mess.models.essentia.model import _open_session

    folder = tmp_path / ("d" * 120) / ("e" * 120)  # ONNX Runtime's message names the path: well over 200 characters
    folder.mkdir(parents=True)
    path = folder / "broken.onnx"
    path.write_bytes(b"not a graph\n" * 4)
    with pytest.raises(Exception) as direct:  # what ONNX Runtime itself says of the file
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = str(direct.value).strip().splitlines()[0]
    assert len(first) > 201
    with pytest.raises(EssentiaModelError) as said:
        _open_session(path, "cpu", 1)
    assert str(said.value) == f"broken.onnx is not a readable ONNX graph: {first[:200]}"


def test_a_download_that_stalls_after_its_headers_is_a_failed_download_and_leaves_nothing(
        server: tuple[str, Routes], tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mess.models.essentia import fetch as fetch_module
    from mess.models.essentia.presets import PinnedFile

    base, routes = server
    routes["/m/x-1.onnx"] = (200, b"0" * 1000, 1000, {}, 3.0)
    monkeypatch.setattr(fetch_module, "TIMEOUT_S", 0.5)  # the read times out, not the connection
    folder = tmp_path / "models"
    url = f"{base}/m/x-1.onnx"
    with pytest.raises(fetch_module.FetchError) as caught:
        fetch_module.fetch_files((PinnedFile(url, size=1000),), folder)
    assert str(caught.value) == (f"cannot download {url} (timed out); on a machine with internet download {url} "
                                 f"and copy them into {folder}")
    assert not list(tmp_path.iterdir())


def test_a_download_the_disk_cannot_hold_is_the_folder_s_failure_and_leaves_nothing(
        server: tuple[str, Routes], tmp_path: Path) -> None:  # noqa: F811
    """A full disk (RLIMIT_FSIZE here: EFBIG) while writing a download is the folder's, not the network's."""
    import resource
    import signal

    from mess.models.essentia.fetch import FetchError, fetch_files
    from mess.models.essentia.presets import PinnedFile

    base, routes = server
    routes["/m/x-1.onnx"] = (200, b"0" * 300_000, 300_000, {})
    folder = tmp_path / "models"
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, limits[1]))
        with pytest.raises(FetchError) as caught:
            fetch_files((PinnedFile(f"{base}/m/x-1.onnx", size=300_000),), folder)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert str(caught.value) == (f"cannot write into {folder} ({os.strerror(errno.EFBIG)}); give `mess models "
                                 "fetch` a folder that can be written")
    assert not list(tmp_path.iterdir())


def test_a_folder_standing_at_the_model_s_name_is_one_line_and_the_download_not_kept(
        server: tuple[str, Routes], tmp_path: Path) -> None:  # noqa: F811
    from mess.models.essentia.fetch import FetchError, fetch_files
    from mess.models.essentia.presets import PinnedFile

    base, routes = server
    routes["/m/x-1.onnx"] = (200, b"0" * 1000, 1000, {})
    folder = tmp_path / "models"
    (folder / "x-1.onnx").mkdir(parents=True)
    with pytest.raises(FetchError) as caught:
        fetch_files((PinnedFile(f"{base}/m/x-1.onnx", size=1000),), folder)
    # the folder in the way and why, not the temporary '.part' file the rename over it came from
    assert str(caught.value) == (f"cannot write {folder / 'x-1.onnx'}: a folder stands there "
                                 f"({os.strerror(errno.EISDIR)}); move it away or give `mess models fetch` another "
                                 "folder")
    assert [p.name for p in folder.iterdir()] == ["x-1.onnx"] and not list((folder / "x-1.onnx").iterdir())


def test_check_counts_the_files_extracted_with_another_model_among_those_without_vectors(tmp_path: Path) -> None:
    """Of three files without the first model's vectors, one has the second model's: check says '1 extracted with
    another model only; the others: ...' (not all three as one or the other), and names the three."""
    from contextlib import closing

    from test_store import two_model_store

    from mess.store import FeatureStore
    from mess.store.check import full_check

    with closing(FeatureStore(two_model_store(tmp_path, 4, 2))) as store:  # toy: 0.wav; toy2: 0.wav and 1.wav
        toy = store.run("toy").id
        problems = {p.run_id: p.message for p in full_check(store) if p.kind == "not-embedded"}
    message = problems[toy]
    named = ", ".join(str(tmp_path / "music" / f"{i}.wav") for i in (1, 2, 3))
    assert (f"3 files have neither vectors nor a recorded failure, so no answer includes them ({named}): 1 extracted "
            "with another model only; the others: vectors a repair dropped") in message, message
    assert message.endswith("`mess extract FOLDER --model toy` embeds them"), message
