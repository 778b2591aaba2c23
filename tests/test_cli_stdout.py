"""Results on stdout, everything else (notes, warnings, progress, logs) on stderr: a script reading a command's
stdout gets its answer (the console was stderr for logs and tables alike: `mess evaluate > scores.txt` wrote
nothing). A terminal shows both streams, in the order written, as before."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import mess_here


@pytest.fixture(scope="module")
def store(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the session store (evaluate writes its plot, index its index)."""
    root = tmp_path_factory.mktemp("stdout") / "store"
    shutil.copytree(extracted_store, root)
    return root


@pytest.mark.parametrize("args, result", [
    # the table's title and chance row, the best set
    (["evaluate", "--model", "dsp", "--label", "composer", "-k", "3"],
     ["dsp: same-composer retrieval", "chance", "best: "]),
    (["similar", "1", "--model", "dsp", "-k", "3"], ["like ", "score"]),
    (["index", "--model", "dsp"], ["index of dsp", "recall@10"]),
    (["info"], [": 16 tracks, 4 artists", "musicnn-msd"]),
    (["check"], [": ok"]),
    (["config"], ["model used by default:"]),
    (["playlist", "clusters", "--model", "dsp", "-k", "2"], ["2 clusters  [dsp]"]),
    (["artists", "similar", "--model", "dsp", "-k", "2", "--min-tracks", "1", "{artist}"], ["artists like "]),
])
def test_a_command_s_result_is_on_stdout_and_its_notes_are_not(store: Path, tmp_path: Path, args: list[str],
                                                                 result: list[str]) -> None:
    from contextlib import closing

    from mess.store import FeatureStore

    with closing(FeatureStore(store, readonly=True)) as fs:
        artist = fs.tracks(fs.run("dsp"))[0].artist
    args = [a.replace("{artist}", artist or "") for a in args]
    done = mess_here(*args, "--store", str(store), env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    for text in result:
        assert text in done.stdout, f"{text!r} not on stdout: {done.stdout!r}; stderr: {done.stderr!r}"
        assert text not in done.stderr, f"{text!r} on stderr: {done.stderr!r}"
    assert "note:" not in done.stdout and "warning:" not in done.stdout


def test_evaluate_s_notes_stay_on_stderr(store: Path) -> None:
    """--labels of a file with an unknown row: its note is a note (stderr), the table a result (stdout)."""
    labels = store.parent / "labels.csv"
    labels.write_text("file,label\nno-such-file.wav,x\n" + "".join(
        f"{Path(t).name},{i % 2}\n" for i, t in enumerate(_paths(store))))
    done = mess_here("evaluate", "--model", "dsp", "--labels", str(labels), "-k", "3", "--store", str(store),
                     env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "best: " in done.stdout and "chance" in done.stdout
    assert "note:" in done.stderr and "note:" not in done.stdout


def _paths(store: Path) -> list[str]:
    from contextlib import closing

    from mess.store import FeatureStore

    with closing(FeatureStore(store, readonly=True)) as fs:
        return [t.path for t in fs.tracks(fs.run("dsp"))]
