"""Malformed input to the CLI on a real store (synthetic tagged audio extracted with dsp): one clear line each,
never a traceback, and never silently ignored."""

from __future__ import annotations

from pathlib import Path

import mutagen.flac
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mess.cli.main import app

SR = 22050
runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 tagged tones (4 artists) extracted with dsp."""
    root = tmp_path_factory.mktemp("malformed")
    (root / "music").mkdir()
    t = np.arange(2 * SR) / SR
    for i in range(8):
        path = root / "music" / f"tone{i}.flac"
        sf.write(path, (0.3 * np.sin(2 * np.pi * 110.0 * (i + 1) * t)).astype(np.float32), SR)
        tags = mutagen.flac.FLAC(path)
        tags.update({"artist": f"Artist {i % 4}", "title": f"tone {i}"})
        tags.save()
    out = runner.invoke(app, ["extract", str(root / "music"), "-m", "dsp", "--store", str(root / "store")])
    assert out.exit_code == 0, out.output
    return root / "store"


def _cli(store: Path, *args: str) -> tuple[int, str]:
    out = runner.invoke(app, [*args, "--store", str(store)], env={"COLUMNS": "300"})
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    return out.exit_code, " ".join(out.output.split())


@pytest.mark.parametrize("args", [["playlist", "radio", "1"], ["playlist", "path", "1", "2"],
                                  ["playlist", "clusters", "-k", "2"]])
def test_an_unknown_playlist_format_is_refused_without_an_output_too(store: Path, args: list[str]) -> None:
    """Without --output, `--format x` was ignored and the playlist printed as if it were fine."""
    code, output = _cli(store, *args, "--format", "x")
    assert code == 1 and "unknown playlist format 'x'; use m3u8 (or m3u) or xspf" in output, output


@pytest.mark.parametrize("fmt", [[], ["--format", "parquet"]])
def test_export_to_a_folder_says_it_is_a_folder(store: Path, tmp_path: Path, fmt: list[str]) -> None:
    """`mess export DIR` said "unknown export format ''" (the folder's name has no extension)."""
    code, output = _cli(store, "export", str(tmp_path), *fmt)
    ext = fmt[-1] if fmt else "npz"
    assert code == 1 and f"{tmp_path} is a folder; give the file to write, such as {tmp_path / f'vectors.{ext}'}" in \
        output, output


@pytest.mark.parametrize("args", [["playlist", "radio", "1"], ["playlist", "path", "1", "2", "-n", "4"]])
def test_a_playlist_written_to_a_folder_says_it_is_a_folder(store: Path, tmp_path: Path, args: list[str]) -> None:
    """`-o DIR` said "unknown playlist extension '(none)' of DIR", and with --format m3u8 'Is a directory'."""
    for fmt in ([], ["--format", "m3u8"]):
        code, output = _cli(store, *args, "-o", str(tmp_path), *fmt)
        assert code == 1 and f"{tmp_path} is a folder; give the playlist file to write, such as " \
            f"{tmp_path / 'mix.m3u8'}" in output, output


def test_a_folder_given_as_the_label_file_is_called_a_folder(store: Path, tmp_path: Path) -> None:
    """`mess evaluate --labels DIR` said 'no such label file: DIR', though DIR is there."""
    code, output = _cli(store, "evaluate", "--labels", str(tmp_path))
    assert code == 1 and f"{tmp_path} is a folder, not a label file (a CSV)" in output, output


@pytest.mark.parametrize("command", ["apply", "report"])
def test_a_folder_given_as_the_checkpoint_is_called_a_folder(store: Path, tmp_path: Path, command: str) -> None:
    """`mess fuse apply --checkpoint DIR` said 'DIR: Is a directory'."""
    code, output = _cli(store, "fuse", command, "--checkpoint", str(tmp_path))
    assert code == 1 and f"{tmp_path} is a folder, not a fusion checkpoint" in output, output


@pytest.mark.parametrize("args", [["artists", "validate", "--reference"], ["artists", "hybrid", "--reference"],
                                  ["artists", "similar", "Artist 0", "--weights", "audio=1,genre=1", "--tags"]])
def test_a_folder_given_as_a_reference_or_tags_file_is_called_a_folder(store: Path, tmp_path: Path,
                                                                       args: list[str]) -> None:
    """`mess artists validate --reference DIR` said 'DIR: Is a directory'."""
    code, output = _cli(store, *args, str(tmp_path))
    what = "tags" if args[-1] == "--tags" else "reference"
    assert code == 1 and f"{tmp_path} is a folder, not a {what} file (JSON)" in output, output


@pytest.mark.parametrize("given", ["--reference", "--tags"])
def test_hybrid_inputs_without_the_hybrid_score_are_refused(store: Path, tmp_path: Path, given: str) -> None:
    """`mess artists similar NAME --tags FILE` without --hybrid ignored the file (malformed or not) in silence."""
    code, output = _cli(store, "artists", "similar", "Artist 0", given, str(tmp_path / "none.json"))
    assert code == 1 and f"{given} feeds the hybrid score: add --hybrid (or --weights)" in output, output


@pytest.mark.parametrize("args", [["models", "fetch", "vggish"], ["demo", "render"], ["demo", "wesnoth"],
                                  ["demo", "soundtracks"]])
def test_a_file_given_as_the_folder_to_fill_is_refused_in_words(tmp_path: Path, args: list[str]) -> None:
    """A file where the folder to download or render into goes said 'FILE: File exists' (after the work began)."""
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    out = runner.invoke(app, [*args, str(file)], env={"COLUMNS": "300"})
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and f"{file} is a file, not a folder" in said and file.read_text() == "mine", said


@pytest.mark.parametrize("args", [["info", "--store", ""], ["similar", "1", "--model", ""], ["probe", "--model", ""],
                                  ["extract", "", "--model", "dsp"], ["extract", "x", "--model", ""],
                                  ["export", ""], ["demo", "wesnoth", ""]])
def test_an_empty_value_is_refused_not_read_as_the_current_folder_or_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """`--store ''` (an unset shell variable) opened or made a store in the current folder, `extract ''` read the
    current folder, and `--model ''` meant the default model."""
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(app, args, env={"COLUMNS": "300"})
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and "is empty (an unset shell variable?)" in said, said
    assert list(tmp_path.iterdir()) == []  # nothing written here


@pytest.mark.parametrize("command", [["probe", "-m", "dsp"], ["fuse", "train"], ["artists", "hybrid", "-r", "x.json"]])
@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_a_seed_numpy_or_torch_cannot_take_is_refused_as_read(store: Path, command: list[str], seed: str) -> None:
    """--seed -1 was a numpy traceback in `probe` and `artists hybrid` ('expected non-negative integer'), and
    2**64 'Overflow when unpacking long long' in `fuse train`."""
    code, output = _cli(store, *command, "--seed", seed)
    bound = "greater than or equal to 0" if seed == "-1" else "less than or equal to 4294967295"
    assert code == 1 and f"Invalid value for '--seed': Input should be {bound}" in output, output


@pytest.mark.parametrize(("option", "value", "reason"), [
    ("--weights-lr", "inf", "a finite number, not inf"), ("--lr", "inf", "a finite number, not inf"),
    ("--margin", "inf", "a finite number, not inf"),
    # torch's "value cannot be converted to type float without overflow" traceback after loading the vectors
    ("--weights-lr", "1e38", "at most 1e+06, not 1e+38"), ("--lr", "1e38", "at most 1e+06, not 1e+38")])
def test_a_non_finite_training_rate_or_margin_is_refused(store: Path, option: str, value: str, reason: str) -> None:
    """`fuse train --weights-lr inf` was a torch traceback (linalg.svd on non-finite values); --lr and --margin inf
    trained and saved a network."""
    code, output = _cli(store, "fuse", "train", "--label", "artist", option, value, "--weight-epochs", "1",
                        "--max-epochs", "0")
    assert code == 1 and f"{option} must be {reason}" in output, output


@pytest.mark.parametrize(("value", "reason"), [("nan", "'nan' is not a number"), ("NaN", "'NaN' is not a number"),
                                               ("inf", "inf is not in the range 1 to 14400"),
                                               ("0.5", "0.5 is not in the range 1 to 14400")])
def test_a_window_that_is_not_a_number_is_called_so(store: Path, tmp_path: Path, value: str, reason: str) -> None:
    """`mess extract --window nan` was refused as "Input should be less than or equal to 14400"."""
    code, output = _cli(store, "extract", str(tmp_path), "-m", "dsp", "--window", value)
    assert code == 1 and f"Invalid value for '--window': {reason}" in output, output


def test_an_infinite_upload_limit_is_refused_as_read(store: Path) -> None:
    """`mess serve --max-upload-mb inf` was an OverflowError traceback (infinity to an integer of bytes)."""
    code, output = _cli(store, "serve", "--max-upload-mb", "inf")
    assert code == 1 and "Invalid value for '--max-upload-mb': Input should be less than or equal to 1048576" in \
        output, output


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_checkpoint_that_cannot_be_saved_is_named(store: Path, tmp_path: Path) -> None:
    """A full disk at `fuse train`'s save said only 'error: No space left on device', naming no file. The full disk is
    RLIMIT_FSIZE here (EFBIG), below the checkpoint's size and above everything training writes before it."""
    import resource
    import signal

    path = tmp_path / "fusion.pt"
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of a signal
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, limits[1]))
    try:
        code, output = _cli(store, "fuse", "train", "--label", "artist", "--weight-epochs", "1", "--max-epochs", "0",
                            "--checkpoint", str(path))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert code == 1 and f"cannot save the checkpoint {path} (" in output and "File too large" in output, output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written left beside it


@pytest.mark.parametrize("kind", ["device", "pipe", "pipe for the description"])
def test_a_device_or_a_pipe_given_as_the_checkpoint_is_refused_before_training(store: Path, tmp_path: Path,
                                                                             kind: str) -> None:
    """`--checkpoint /dev/full` trained, then failed at the save (its description went beside it, into /dev); a FIFO
    named as the checkpoint (or at its description's name) would have been opened to see whether it was one of
    ours, and waited for a writer for ever."""
    import os

    if kind == "device":
        if not Path("/dev/full").is_char_device():
            pytest.skip("no /dev/full here")
        path = place = Path("/dev/full")
    else:
        path = tmp_path / "fusion.pt"
        place = path if kind == "pipe" else path.with_suffix(".json")
        os.mkfifo(place)
    code, output = _cli(store, "fuse", "train", "--label", "artist", "--weight-epochs", "1", "--max-epochs", "0",
                        "--checkpoint", str(path))
    assert code != 0 and f"{place} is a device or a pipe, not a file a checkpoint" in output, output
    assert "epoch" not in output and "trained on" not in output, output  # refused before training


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="no /dev/full here")
def test_a_plot_that_cannot_be_written_keeps_the_scores_and_names_the_file(store: Path) -> None:
    """`mess evaluate --plot /dev/full` wrote /dev/full.png (a new file in /dev, as root), and a plot that could not
    be written lost the evaluation behind 'error: No space left on device'. The device now gets the PNG itself, and
    a failed write comes after the scores, naming the file."""
    code, output = _cli(store, "evaluate", "--label", "artist", "--plot", "/dev/full")
    assert code == 1 and "best: " in output and "cannot write the plot /dev/full: No space left on device" in output, \
        output
    assert not Path("/dev/full.png").exists()


def test_a_pipe_given_as_the_label_file_is_called_a_pipe(store: Path, tmp_path: Path) -> None:
    """`mess evaluate --labels FIFO` (or /dev/null) said 'no such label file', though it is there."""
    import os

    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    code, output = _cli(store, "evaluate", "--labels", str(fifo))
    assert code == 1 and f"{fifo} is a device or a pipe, not a label file (a CSV)" in output, output


def test_a_file_that_cannot_be_embedded_is_named_once_before_the_reason(store: Path, tmp_path: Path) -> None:
    """`mess similar BAD.wav` said 'cannot embed BAD.wav: BAD.wav: cannot decode (...)'."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    code, output = _cli(store, "similar", str(bad), "-m", "dsp")
    assert code == 1 and f"cannot embed {bad}: cannot decode (" in output and f"{bad}: {bad}" not in output, output


def test_similar_to_a_path_under_a_tilde_naming_no_user_is_one_line(store: Path, tmp_path: Path) -> None:
    """`mess similar '~bob/x.wav'` (the shell leaves a ~user naming no user as written) ended in a RuntimeError
    traceback ('Could not determine home directory'); it is a name as written: not found, in one line."""
    import pwd

    user = "mess-no-such-user"
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    code, output = _cli(store, "similar", f"~{user}/x.wav")
    assert code == 1 and f"~{user}/x.wav" in output and "Traceback" not in output, output


def test_names_with_emoji_codes_are_printed_as_written(store: Path, tmp_path: Path) -> None:
    """rich read ':smile:' and ':-1:' in user data as emoji codes: `mess similar 'a:smile:b.wav'` said it found no
    track 'a😄b.wav', and `mess serve --port -1` said '127.0.0.1👎 the port is ...'. The CLI's console prints no
    emoji codes: names (and the words around them) come out as written."""
    code, said = _cli(store, "similar", "a:smile:b:-1:.wav")
    assert code == 1 and said == ("error: unknown track 'a:smile:b:-1:.wav': no track of the collection is named so, "
                                  "and no such file is on disk"), said
    out = runner.invoke(app, ["serve", "--port", "-1", "--store", str(tmp_path / "none")], env={"COLUMNS": "300"})
    assert out.exit_code == 1
    assert out.output == "error: cannot listen at 127.0.0.1:-1: the port is out of range (0-65535)\n", out.output
