"""Defects the earlier sessions found and left: a reader of mess's output that goes away early, Ray's failed-task
errors, and `mess models fetch` over a folder."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

MESS = [sys.executable, "-m", "mess.cli"]
SIGPIPE_STATUS = 141  # what a shell reports for a writer its reader left (128 + SIGPIPE), as `yes | head` gives


def _reader_gone(*args: str) -> subprocess.CompletedProcess[str]:
    """``mess ARGS`` writing into a pipe whose reader closed before mess wrote a byte (`mess ... | head -c 0`,
    without the race of how much fits in the pipe first)."""
    read, write = os.pipe()
    try:
        proc = subprocess.Popen([*MESS, *args], stdout=write, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True)
    finally:
        os.close(write)
        os.close(read)
    _, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess([*MESS, *args], proc.returncode, "", err)


@pytest.mark.parametrize("args", [
    ["export", "/dev/stdout", "--model", "dsp", "--format", "npz"],  # a file written into the pipe (numpy)
    ["export", "/dev/stdout", "--model", "dsp", "--format", "parquet"],  # (pyarrow)
    ["similar", "1", "--model", "dsp", "-k", "3", "--json"],  # JSON (typer.echo)
    ["info"],  # a table (rich)
    ["check"],
    ["config"],
])
def test_a_reader_that_goes_away_ends_mess_quietly_with_the_shells_sigpipe_status(extracted_store: Path,
                                                                                  args: list[str]) -> None:
    """`mess export /dev/stdout | head -c 100` ended "error: cannot write /dev/stdout: Broken pipe", exit 1, and a
    table or JSON ended with exit 1 (click's and rich's own handlers); every command now ends as a Unix tool whose
    reader left: nothing on stderr, status 141."""
    done = _reader_gone(*args, "--store", str(extracted_store))
    assert done.stderr == "" and done.returncode == SIGPIPE_STATUS, (done.returncode, done.stderr)


def test_help_into_a_pipe_whose_reader_left_is_quiet_too() -> None:
    done = _reader_gone("--help")
    assert done.stderr == "" and done.returncode == SIGPIPE_STATUS, (done.returncode, done.stderr)


def test_export_into_head_in_a_shell_pipeline(extracted_store: Path) -> None:
    """The reported pipeline itself: the reader takes 100 bytes of a musicnn export (MBs: more than a pipe holds)
    and leaves; bash's PIPESTATUS gives mess's status."""
    script = ('"$@" 2>"$ERR" | head -c 100 | wc -c; echo "${PIPESTATUS[0]}"')
    err = extracted_store.parent.parent / f"export-err-{os.getpid()}.txt"
    done = subprocess.run(["bash", "-c", script, "bash", *MESS, "export", "/dev/stdout", "--model", "musicnn-msd",
                           "--format", "npz", "--segments", "--store", str(extracted_store)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "ERR": str(err)})
    try:
        got, status = done.stdout.split()
        assert got == "100" and err.read_text() == "" and int(status) == SIGPIPE_STATUS, (done.stdout,
                                                                                            err.read_text())
    finally:
        err.unlink(missing_ok=True)


def test_a_full_disk_on_stdout_is_still_an_error_that_says_why(extracted_store: Path) -> None:
    """A reader gone is quiet; a write the system refuses otherwise is not: stdout a full disk (/dev/full, opened
    by the shell's redirection, never by mess or this test) ends with the cause, in one line."""
    assert Path("/dev/full").is_char_device()
    for args in (["info"], ["export", "/dev/stdout", "--model", "dsp", "--format", "npz"]):
        with open("/dev/full", "w") as full:  # opened for writing as `> /dev/full` does; never replaced
            done = subprocess.run([*MESS, *args, "--store", str(extracted_store)], stdout=full, stderr=subprocess.PIPE,
                                  text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and "No space left on device" in lines[0], done.stderr
        assert lines[0].startswith("error:") and "Traceback" not in done.stderr
    assert Path("/dev/full").is_char_device()


# ---------------------------------------------------------------- models fetch over a folder at a file's name


def test_models_fetch_names_the_folder_standing_at_a_model_file_s_name(tmp_path: Path) -> None:
    """`mess models fetch vggish DIR` with a folder at DIR/audioset-vggish-3.json downloaded the graph first and then
    named its temporary '.part' file; it now names the folder in the way and why, before any download (offline
    here: a download tried would say 'cannot download'), and leaves DIR as it was."""
    from conftest import mess_here

    folder = tmp_path / "models"
    blocker = folder / "audioset-vggish-3.json"
    (blocker / "inside").mkdir(parents=True)
    done = mess_here("models", "fetch", "vggish", str(folder))
    line = " ".join(done.stderr.split())
    assert done.returncode == 1 and line.startswith("error: ") and str(blocker) in line, done.stderr
    assert os.strerror(errno.EISDIR) in line and ".part" not in line and "download" not in line, line
    left = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    assert left == [blocker.name, f"{blocker.name}/inside"], left


def test_a_mert_snapshot_is_not_moved_over_a_folder_at_one_of_its_names(tmp_path: Path) -> None:
    """A MERT snapshot's files move into FOLDER once all have arrived; a folder at one of their names failed the move
    midway, naming the snapshot's temporary file, and left the files before it moved. It is now named (the
    target, the cause) before any file moves."""
    from mess.models.essentia.fetch import FetchError, _move_into

    snapshot, folder = tmp_path / "models" / ".mert-x.part", tmp_path / "models"
    (snapshot / "sub").mkdir(parents=True)
    for name in ("a.json", "sub/b.bin", "z.safetensors"):
        (snapshot / name).write_text(name)
    (folder / "z.safetensors").mkdir()
    with pytest.raises(FetchError) as caught:
        _move_into(snapshot, folder)
    said = str(caught.value)
    assert str(folder / "z.safetensors") in said and os.strerror(errno.EISDIR) in said and ".part" not in said, said
    assert sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()) == [
        "a.json", "sub/b.bin", "z.safetensors"]
    assert not (folder / "a.json").exists() and not (folder / "sub").exists()


# ---------------------------------------------------------------- a Ray job's failure in one line


class Unnamed(Exception):
    """A worker's error whose traceback names it without a module (as Python names a class of ``__main__``)."""


Unnamed.__module__ = "__main__"


def _died_in_creation(exc: Exception) -> Exception:
    """Ray's ActorDiedError of an actor whose creation raised ``exc``: the worker's traceback as text, no cause."""
    import traceback

    from ray import exceptions

    try:
        raise exc
    except Exception as raised:
        task = exceptions.RayTaskError("Embedder.__init__", traceback.format_exc(), raised)
    died = exceptions.ActorDiedError(cause=task)
    assert getattr(died, "cause", None) is None and type(exc).__name__ in str(died)
    return died


@pytest.mark.parametrize(("exc", "expected"), [
    (StopIteration("no window left"), "no window left (StopIteration)"),  # a built-in class not named ...Error
    (UserWarning("weights are float16"), "weights are float16 (UserWarning)"),
    (Unnamed("the model folder is gone\nsecond line"), "the model folder is gone (Unnamed)"),
    (ValueError(), "ValueError"),  # no message: the traceback's last line is the class alone
    (Unnamed(), "Unnamed"),
])
def test_an_actor_that_died_in_its_creation_names_any_worker_error(exc: Exception, expected: str) -> None:
    """`mess extract --engine ray` said 'the Ray job failed: The actor died because of an error raised in its
    creation task, python -() (pid=..., ip=...)' (Ray's first line) when the worker's error was not named as
    'a.b.C: ...' or 'SomethingError: ...'; the line that ends the worker's traceback names it, whatever its form."""
    pytest.importorskip("ray")
    from mess.scale.ray_extract import job_failure

    assert job_failure(_died_in_creation(exc)) == expected


def test_a_report_of_ray_s_cluster_is_one_line_naming_the_worker_s_error() -> None:
    """The cluster's report of a task to be retried, as the driver got it: Ray's words, then the worker's traceback
    with blank lines between its lines; said in one line, the traceback by the error it names."""
    pytest.importorskip("ray")
    import traceback

    from mess.scale.embedder import ModelMismatch
    from mess.scale.ray_extract import _one_line

    try:
        raise ModelMismatch("a worker loaded dsp revision 1, the run is 2\nsecond line")
    except ModelMismatch:
        trace = "\n\n".join(traceback.format_exc().splitlines())
    message = ("Task \x1b[36mMapWorker(Embedder).get_location\x1b[39m failed. There are infinite retries remaining, "
               f"so the task will be retried. Error: {trace}\n\nDuring handling of the above exception, another "
               "exception occurred:\n\nTraceback (most recent call last):\n\n  File \"python/ray/_raylet.pyx\", "
               "line 995, in ray._raylet.store_task_errors\n\nray.exceptions.ActorDiedError: The actor died\n")
    assert _one_line(message) == ("Task MapWorker(Embedder).get_location failed. There are infinite retries "
                                  "remaining, so the task will be retried. Error: a worker loaded dsp revision 1, "
                                  "the run is 2 (ModelMismatch)")
    assert _one_line("The node running\n  low on memory\x1b[0m") == "The node running low on memory"
