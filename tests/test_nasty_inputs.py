"""Odd paths and files given to the real `mess` commands: one clear line each, never a traceback."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tones import write_tones

from conftest import mess_here

MESS = [sys.executable, "-m", "mess.cli"]
DSP = ["--model", "dsp", "--window", "4", "--max-windows", "2"]


def _mess(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MESS, *args], capture_output=True, text=True, timeout=timeout)


def _tones(folder: Path, n: int, seconds: float = 5.0, sr: int = 22050) -> list[Path]:
    return write_tones(folder, n, seconds=seconds, sr=sr, name="tone{}.wav",
                       wave=lambda i, t: 0.3 * np.sin(2 * np.pi * 110 * 2 ** (i / 5) * t))


@pytest.fixture(scope="module")
def tone_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dsp store of three tones (read-only for the tests)."""
    root = tmp_path_factory.mktemp("nasty")
    _tones(root / "music", 3)
    done = mess_here("extract", str(root / "music"), "--store", str(root / "store"), *DSP)
    assert done.returncode == 0, done.stderr
    return root / "store"


@pytest.mark.parametrize("command", [
    ["similar", "{loop}"],
    ["playlist", "radio", "{loop}"],
    ["export", "{loop}.npz"],
    ["playlist", "radio", "1", "-o", "{loop}.m3u8"],
])
def test_a_symbolic_link_loop_is_named_in_one_line(tone_store: Path, tmp_path: Path, command: list[str]) -> None:
    """A path that is a link to itself (a query, a seed, an output) was a RuntimeError traceback."""
    loop = tmp_path / "loop"
    for name in ("loop", "loop.npz", "loop.m3u8"):
        os.symlink(name, tmp_path / name)
    done = mess_here(*[a.format(loop=loop) for a in command], "--store", str(tone_store))
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "symbolic links" in lines[0], lines
    assert str(loop) in lines[0]


def test_an_output_that_is_a_pipe_is_written_into_not_replaced(tone_store: Path, tmp_path: Path) -> None:
    """`playlist -o FIFO` (like /dev/stdout, or /dev/null for root) renamed a regular file over the pipe: the pipe
    was gone and its reader got nothing (as root, `mess export /dev/full` replaced the device)."""
    fifo = tmp_path / "radio.m3u8"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        done = mess_here("playlist", "radio", "1", "-o", str(fifo), "--store", str(tone_store))
        assert done.returncode == 0, done.stderr
        assert stat.S_ISFIFO(fifo.lstat().st_mode), "the pipe was replaced by a file"
        got = reader.communicate(timeout=30)[0].decode()
    finally:
        reader.kill()
        reader.wait()
    assert "#EXTM3U" in got and "tone" in got, got


@pytest.mark.parametrize(("command", "fmt", "first"), [
    (["radio", "1", "-n", "2"], "m3u8", "#EXTM3U"),
    (["path", "1", "3", "-n", "3"], "xspf", '<?xml version="1.0" encoding="UTF-8"?>'),
])
def test_a_playlist_streams_to_stdout_in_the_format_asked_for(tone_store: Path, command: list[str], fmt: str,
                                                              first: str) -> None:
    """`playlist radio ... -o /dev/stdout` was refused ("unknown playlist extension '(none)'") and there was no
    --format to name one; --format now gives the format of an output whose name has none, written into the pipe
    (without it stdout gets M3U8, and what is said names stdout, not /dev/stdout: session 36)."""
    done = _mess("playlist", *command, "-o", "/dev/stdout", "--format", fmt, "--store", str(tone_store))  # a pipe
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == first and done.stdout.count("tone") >= 2, done.stdout
    assert "wrote" in done.stderr and "to stdout" in done.stderr
    bare = _mess("playlist", *command, "-o", "/dev/stdout", "--store", str(tone_store))  # stdout's default: M3U8
    assert bare.returncode == 0 and bare.stdout.startswith("#EXTM3U\n"), bare.stderr
    other = "xspf" if fmt == "m3u8" else "m3u8"
    clash = mess_here("playlist", *command, "-o", f"/dev/null/mix.{other}", "--format", fmt, "--store", str(tone_store))
    assert clash.returncode == 1 and " ".join(clash.stderr.split()) == (
        f"error: the extension of /dev/null/mix.{other} says {other} but the format asked for is {fmt}; drop one "
        "or make them agree"), clash.stderr


def test_format_m3u_names_the_m3u8_that_a_dot_m3u_file_gets(tone_store: Path, tmp_path: Path) -> None:
    """`-o /dev/stdout --format m3u` was refused ("unknown playlist format 'm3u'") though `-o x.m3u` writes M3U8;
    --format m3u now writes what a .m3u8 file gets, to stdout, to a file of another name, and as cluster files."""
    radio = ["playlist", "radio", "1", "-n", "2", "--store", str(tone_store)]
    assert mess_here(*radio, "-o", str(tmp_path / "r.m3u8")).returncode == 0
    expected = (tmp_path / "r.m3u8").read_text()
    streamed = _mess(*radio, "-o", "/dev/stdout", "--format", "m3u")  # into a pipe
    assert streamed.returncode == 0 and streamed.stdout == expected, streamed.stderr
    named = mess_here(*radio, "-o", str(tmp_path / "r.txt"), "--format", "m3u")
    assert named.returncode == 0 and (tmp_path / "r.txt").read_text() == expected, named.stderr
    clusters = mess_here("playlist", "clusters", "-k", "1", "-o", str(tmp_path / "c"), "--format", "m3u",
                     "--store", str(tone_store))
    assert clusters.returncode == 0, clusters.stderr
    [cluster] = (tmp_path / "c").glob("[!.]*")  # .mess-clusters lists it
    assert cluster.suffix == ".m3u8" and cluster.read_text().startswith("#EXTM3U"), cluster


def test_json_and_a_file_written_to_stdout_are_refused_together(tone_store: Path, tmp_path: Path) -> None:
    """`-o /dev/stdout --json` printed the JSON right after the playlist (or the exported arrays) on the same
    stream, so neither could be read; the pair is refused before anything is written, and each alone still works."""
    for args in (["playlist", "radio", "1", "-n", "2", "-o", "/dev/stdout", "--format", "m3u8"],
                 ["export", "/dev/stdout", "--format", "npz"]):
        both = _mess(*args, "--json", "--store", str(tone_store))  # stdout is the process's: a pipe
        assert both.returncode == 1 and both.stdout == "", both.stdout[:200]
        assert " ".join(both.stderr.split()) == (
            "error: the output goes to stdout, where --json prints too; drop --json or write to a file"), both.stderr
    to_file = mess_here("playlist", "radio", "1", "-n", "2", "-o", str(tmp_path / "r.m3u8"), "--json",
                    "--store", str(tone_store))
    assert to_file.returncode == 0 and json.loads(to_file.stdout)["file"] == str(tmp_path / "r.m3u8"), to_file.stderr


def test_a_query_file_sampled_too_low_is_searched_with_the_warning_extract_gives(tone_store: Path,
                                                                                tmp_path: Path) -> None:
    """`mess similar FILE` on a 4 kHz file searched without a word, though `mess extract` warns that such a file's
    vectors hear almost nothing of the model's band (dsp: 22050 Hz); the query path says it too."""
    low = tmp_path / "phone.wav"
    sf.write(low, 0.3 * np.sin(2 * np.pi * 440 * np.arange(4000 * 5) / 4000), 4000)
    done = mess_here("similar", str(low), "-k", "2", "--store", str(tone_store))
    assert done.returncode == 0, done.stderr
    assert "phone.wav: sampled at 4000 Hz, below half the model's 22050 Hz" in " ".join(done.stderr.split())
    full = tmp_path / "full.wav"  # not in the collection either, so it is embedded too
    sf.write(full, 0.3 * np.sin(2 * np.pi * 523 * np.arange(22050 * 5) / 22050), 22050)
    fine = mess_here("similar", str(full), "-k", "2", "--store", str(tone_store))
    assert fine.returncode == 0 and "sampled at" not in fine.stderr, fine.stderr


@pytest.mark.parametrize(("rows", "want"), [
    ("{a},x\n{b}\n{c},y\n", ":3: 1 cells where the header has 2"),
    ("{a},x\n{b},x,y\n{c},y\n", ":3: 3 cells where the header has 2"),
    ("{a},x\n\"{b},x\n{c},y\n", ":3: not valid CSV"),
])
def test_a_ragged_label_csv_row_is_refused_naming_its_line(tone_store: Path, tmp_path: Path, rows: str,
                                                           want: str) -> None:
    """A label row with a cell missing (or one too many, or an unclosed quote) was dropped without a word:
    evaluate scored the other rows as if the file held no more."""
    music = tone_store.parent / "music"
    labels = tmp_path / "labels.csv"
    labels.write_text("path,game\n" + rows.format(a=music / "tone0.wav", b=music / "tone1.wav",
                                                  c=music / "tone2.wav"))
    done = mess_here("evaluate", "--labels", str(labels), "--label", "game", "--store", str(tone_store))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert " ".join(done.stderr.split()).startswith(f"error: {labels}{want}"), done.stderr


@pytest.mark.parametrize("param", ["/api/tracks/1/similar?model=", "/api/tracks?model=", "/api/map?model="])
def test_a_model_name_too_long_for_a_path_is_an_unknown_model(tone_store: Path, param: str) -> None:
    """?model= of 5000 characters was a 500 'internal error (OSError)' (File name too long) with a traceback in
    the server log; it is the 404 of any unknown model."""
    from fastapi.testclient import TestClient

    from mess.serve.app import create_app

    with TestClient(create_app(tone_store), base_url="http://127.0.0.1") as client:
        got = client.get(param + "m" * 5000)
    assert got.status_code == 404 and got.json()["detail"].startswith("unknown model 'mmm"), got.text


def test_a_right_to_left_override_in_a_tag_does_not_reach_the_terminal(tone_store: Path, tmp_path: Path) -> None:
    """A title tag 'evil\\u202egnp.exe' reached `mess similar`'s table as is: the terminal showed what followed
    the override reversed ('evilexe.png'). Bidirectional overrides and isolates are dropped like control bytes."""
    from mutagen.flac import FLAC

    song = tmp_path / "song.flac"
    sf.write(song, sf.read(tone_store.parent / "music" / "tone1.wav")[0][::-1], 22050)
    tags = FLAC(song)
    tags["artist"], tags["title"] = "Some\u2067one", "evil\u202egnp.exe"
    tags.save()
    done = mess_here("similar", str(song), "--store", str(tone_store), "-k", "1")
    shown = done.stdout + done.stderr  # the table is printed on stderr
    assert done.returncode == 0 and "evilgnp.exe" in shown and "Someone" in shown, shown
    assert not {"\u202e", "\u2067"} & set(shown)


def test_an_empty_file_is_recorded_as_empty(tmp_path: Path) -> None:
    """A zero-byte song.mp3 failed as 'cannot decode (InvalidDataError: [Errno 1094995529] Invalid data found when
    processing input: ...)'; the reason now says what is wrong with it. The run goes on."""
    _tones(tmp_path / "music", 1)
    (tmp_path / "music" / "song.mp3").write_bytes(b"")
    done = mess_here("extract", str(tmp_path / "music"), "--store", str(tmp_path / "store"), *DSP)
    assert done.returncode == 3 and "1 embedded" in done.stdout + done.stderr, done.stderr  # 3: files failed
    failures = mess_here("info", "--failures", "--store", str(tmp_path / "store"))
    shown = " ".join((failures.stdout + failures.stderr).split())
    assert f"{tmp_path / 'music' / 'song.mp3'}: empty file (0 bytes)" in shown, shown


@pytest.mark.parametrize("suffix", [".wav", ".ogg"])
def test_a_checkpoint_that_is_no_pytorch_file_is_refused_in_plain_words(tone_store: Path, tmp_path: Path,
                                                                        suffix: str) -> None:
    """fuse apply --checkpoint song.ogg quoted torch's 'Re-running `torch.load` with `weights_only` set to `False`
    will likely succeed, but it can result in arbitrary code execution' (advice to run the file's code), and
    song.wav said '(pop from empty list)'."""
    song = tmp_path / f"song{suffix}"
    sf.write(song, sf.read(tone_store.parent / "music" / "tone0.wav")[0], 22050)
    done = mess_here("fuse", "apply", "--model", "dsp", "--checkpoint", str(song), "--store", str(tone_store))
    shown = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1 and "Traceback" not in shown, shown
    assert shown == f"error: {song} is not a mess fusion checkpoint (not a PyTorch file of weights)"


def test_export_to_stdout_through_a_pipe(tone_store: Path) -> None:
    """`mess export /dev/stdout --format npz | ...` failed: '/dev/stdout' resolves to '/proc/PID/fd/pipe:[N]', a
    name beside which no temp file can be made ('cannot write /dev/stdout: /proc/.../.pipe:[N]....tmp: No such
    file or directory'). A device or pipe is now opened by the name given."""
    done = subprocess.run([*MESS, "export", "/dev/stdout", "--format", "npz", "--store", str(tone_store)],
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    with np.load(io.BytesIO(done.stdout)) as got:
        assert len(got["track_id"]) == 3


def test_a_store_path_that_is_a_dangling_link_is_named(tmp_path: Path) -> None:
    """extract --store LINK, LINK pointing nowhere, said 'cannot open a feature store at LINK ([Errno 17] File
    exists: LINK)': the folder could not be made through the link, and nothing said so."""
    song = _tones(tmp_path / "music", 1)[0]
    link = tmp_path / "store"
    os.symlink(tmp_path / "gone", link)
    done = mess_here("extract", str(song), "--store", str(link), *DSP)
    shown = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1 and shown == (f"error: {link} is a link to {tmp_path / 'gone'}, which does not exist "
                                              "(or links back); create that folder or give another --store"), shown


def test_names_with_trailing_spaces_or_dots_are_extracted_and_hidden_ones_counted(tmp_path: Path) -> None:
    """'a.wav ' (suffix '.wav ') and 'b.flac.' (suffix '') were passed over without a word, and so were '.wav',
    '._x.wav' and the files of a dot-folder. The first are extracted now (and found by name, exported); the hidden
    ones are still skipped, but the run says how many and names them."""
    music = tmp_path / "music"
    tone = sf.read(_tones(tmp_path / "src", 1)[0])[0]
    for name in ("a.wav ", "b.flac.", ".wav", "._x.wav", ".stash/e.wav"):
        (music / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(music / name, tone, 22050, format="FLAC" if "flac" in name else "WAV")
    done = mess_here("extract", str(music), "--store", str(tmp_path / "store"), *DSP)
    shown = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0 and "2 embedded" in shown, shown
    assert (f"warning: 3 hidden audio files (dot-files or in dot-folders) skipped: {music / '.stash' / 'e.wav'}, "
            f"{music / '._x.wav'}, {music / '.wav'}; name such a file or dot-folder itself to extract it") in shown
    similar = mess_here("similar", "a.wav ", "--store", str(tmp_path / "store"), "-k", "1")
    assert similar.returncode == 0, similar.stdout + similar.stderr
    exported = mess_here("export", str(tmp_path / "all.npz"), "--store", str(tmp_path / "store"))
    assert exported.returncode == 0, exported.stderr
    with np.load(tmp_path / "all.npz") as got:
        assert sorted(got["path"]) == [str(music / "a.wav "), str(music / "b.flac.")]
    (music / "a.wav ").unlink()
    (music / "b.flac.").unlink()
    only_hidden = mess_here("extract", str(music), "--store", str(tmp_path / "store2"), *DSP)
    shown = " ".join((only_hidden.stdout + only_hidden.stderr).split())
    assert only_hidden.returncode == 1 and shown.startswith("error: no audio files (aac, aif, aifc, aiff, ape, flac, "
                                                            "m4a, mka, mp3, mpc, oga, ogg, opus, tta, wav, wma, wv) "
                                                            f"under {music}; 3 hidden audio files"), shown


def test_no_audio_files_names_every_extension_extract_reads(tmp_path: Path) -> None:
    """The refusal listed 6 of the extensions (wav, flac, mp3, ogg, opus, m4a): one with .aiff or .wma files
    under another name read that they are not audio. A video (.mkv) is not looked for."""
    from mess.constants import AUDIO_EXTENSIONS

    music = tmp_path / "music"
    music.mkdir()
    (music / "clip.mkv").write_bytes(b"\x1a\x45\xdf\xa3")
    (music / "notes.txt").write_text("not audio")
    done = mess_here("extract", str(music), "--store", str(tmp_path / "store"), *DSP)
    shown = " ".join((done.stdout + done.stderr).split())
    listed = shown.split("no audio files (", 1)[1].split(")", 1)[0].split(", ")
    assert done.returncode == 1 and sorted(listed) == sorted(e[1:] for e in AUDIO_EXTENSIONS), shown
    assert "mkv" not in listed and {"aiff", "wma", "ape", "mka"} <= set(listed)


def test_a_folder_given_as_the_query_is_named_a_folder(tone_store: Path, tmp_path: Path) -> None:
    """`mess similar ~/Music/album/` (or a folder named 'x.mp3') said "unknown track '/.../album'"."""
    for name in ("album", "x.mp3"):
        (tmp_path / name).mkdir()
        done = mess_here("similar", str(tmp_path / name), "--store", str(tone_store))
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert lines == [f"error: {tmp_path / name} is a folder, not an audio file or a track (`mess extract` adds "
                         "a folder's files to the collection)"], lines


def test_macos_appledouble_files_are_not_counted_as_hidden_audio(tmp_path: Path) -> None:
    """A library copied by macOS to a foreign disk has '._song.wav' (Finder data) beside each song: every run
    warned of them as hidden audio files, advising to name them to extract them. They are not audio, and not told."""
    music = tmp_path / "music"
    _tones(music, 2)
    for song in ("tone0.wav", "tone1.wav"):
        (music / f"._{song}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4000))
    sf.write(music / "._real.wav", sf.read(music / "tone0.wav")[0], 22050)  # a hidden file that is audio is told
    done = mess_here("extract", str(music), "--store", str(tmp_path / "store"), *DSP)
    shown = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0 and "2 embedded" in shown, shown
    assert f"warning: 1 hidden audio file (dot-files or in dot-folders) skipped: {music / '._real.wav'};" in shown


def test_a_damaged_mp3_query_is_one_line_without_the_decoders_notes(tone_store: Path, tmp_path: Path) -> None:
    """`mess similar junk.mp3` printed libmpg123's 'Note: Illegal Audio-MPEG-Header ...' lines before its error (as
    `mess extract` did before its decoders' output went to /dev/null)."""
    junk = tmp_path / "junk.mp3"  # libmpg123 finds a few seconds of frames in it, and complains about the rest
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    done = _mess("similar", str(junk), "--store", str(tone_store))  # the decoder writes to the process's stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: cannot embed {junk}: "), lines


def test_a_query_name_longer_than_the_file_system_allows_is_an_unknown_track(tone_store: Path) -> None:
    """A seed or query of 300 characters (a title pasted whole) ended in "error: xxx…: File name too long", the
    operating system's refusal to look the name up as a file, instead of saying no track has that name."""
    name = "x" * 300
    for args in (("similar", name), ("playlist", "radio", name)):
        done = mess_here(*args, "--store", str(tone_store))
        said = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "unknown track" in said and "too long" not in said, said


def test_a_dash_output_is_stdout_for_one_playlist_and_refused_for_clusters(tone_store: Path, tmp_path: Path) -> None:
    """`playlist radio ... -o - --format m3u8` and `export - --format npz` wrote a file named '-' in the working
    folder, and `clusters -o -` a folder named '-' (`-o /dev/stdout` there ended "cannot write the playlists into
    /dev/stdout: ...: File exists"): '-' is stdout, as for every Unix tool, and clusters, one file per cluster,
    refuse stdout in one line."""
    radio = ["playlist", "radio", "1", "-n", "2", "--store", str(tone_store)]
    streamed = subprocess.run([*MESS, *radio, "-o", "-", "--format", "m3u8"], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == _mess(*radio, "-o", "/dev/stdout", "--format", "m3u8").stdout
    tracks = [line for line in streamed.stdout.splitlines() if not line.startswith("#")]
    assert streamed.stdout.startswith("#EXTM3U") and len(tracks) == 2 and all(Path(t).is_file() for t in tracks)
    for target in ("-", "/dev/stdout"):
        done = subprocess.run([*MESS, "playlist", "clusters", "-k", "1", "-o", target, "--store", str(tone_store)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert " ".join(done.stderr.split()) == (
            f"error: clusters are one playlist file each, written into a folder: -o {target} cannot take them; give "
            "a folder, or write one playlist to stdout with `mess playlist radio` or `path` and -o - --format m3u8"), \
            done.stderr
    exported = subprocess.run([*MESS, "export", "-", "--format", "npz", "--store", str(tone_store)],
                              capture_output=True, cwd=tmp_path, timeout=300)
    assert exported.returncode == 0, exported.stderr
    assert sorted(np.load(io.BytesIO(exported.stdout))["track_id"].tolist()) == [1, 2, 3]
    assert list(tmp_path.iterdir()) == []


def test_an_export_to_a_terminal_is_refused(tone_store: Path) -> None:
    """`mess export - --format npz` (or /dev/stdout) with stdout on a terminal wrote 100s of kB of binary into it, as
    gzip refuses to: refused in one line, nothing written, as long as stdout is a terminal."""
    import pty

    for target in ("-", "/dev/stdout"):
        main, tty = pty.openpty()
        try:
            done = subprocess.run([*MESS, "export", target, "--format", "npz", "--store", str(tone_store)],
                                  stdout=tty, stderr=subprocess.PIPE, text=True, timeout=300)
            os.close(tty)
            written = b""
            while True:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: the terminal's other side is closed and drained
                    break
                if not chunk:
                    break
                written += chunk
        finally:
            os.close(main)
        assert done.returncode == 1 and written == b"", written[:80]
        assert " ".join(done.stderr.split()) == (
            "error: stdout is a terminal and the export is binary (npz): redirect it (> vectors.npz, | program) or "
            "name a file"), done.stderr
