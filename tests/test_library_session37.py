"""A real person's library, end to end (session 37): a messy folder of real soundtrack audio (copies, empty files,
links to nothing, hidden files, odd tags) through `mess extract`, `similar` and `artists`; each test is a defect found
there (notes/library_session37.md)."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from subprocess import CompletedProcess

import av
import numpy as np
import pytest
import soundfile as sf
from mutagen.id3 import ID3, TIT2, TPE1, Encoding
from typer.testing import CliRunner

from conftest import mess_here
from mess.audio.tags import read_tags
from mess.cli.extract import _cued_albums
from mess.cli.main import app
from mess.store import FeatureStore

SOUNDTRACK = Path("/work/data/soundtracks/wesnoth/transience.ogg")
DSP = ["--model", "dsp", "--window", "3", "--max-windows", "1"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four seconds of a real soundtrack (Wesnoth's transience.ogg, from 20 s) as a WAV."""
    if not SOUNDTRACK.exists():
        pytest.skip(f"{SOUNDTRACK} is not here")
    rate = sf.info(SOUNDTRACK).samplerate
    samples, _ = sf.read(SOUNDTRACK, start=20 * rate, stop=24 * rate, dtype="float32")
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    sf.write(path, samples, rate)
    return path


@pytest.fixture(scope="module")
def extracted(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, CompletedProcess[str]]:
    """A small messy library (a song, its copy in a sub-folder, an empty MP3, a link to nothing, a hidden file, an
    album FLAC with a cue sheet of two tracks) extracted with `--json`: the folder, the store and the run's output."""
    root = tmp_path_factory.mktemp("library")
    music, store = root / "music", root / "store"
    (music / "sub").mkdir(parents=True)
    song, copy, empty = music / "song.wav", music / "sub" / "song copy.wav", music / "empty.mp3"
    song.write_bytes(clip.read_bytes())
    copy.write_bytes(clip.read_bytes())
    empty.touch()
    (music / "gone.ogg").symlink_to(root / "nowhere.ogg")
    (music / ".hidden.wav").write_bytes(clip.read_bytes())
    album = music / "album" / "Album.flac"  # a whole album in one file, its tracks marked by a cue sheet beside it
    album.parent.mkdir()
    samples, rate = sf.read(clip, dtype="float32")
    sf.write(album, -samples, rate)  # other content than the song's: embedded, not a copy
    sheet = "".join(f'  TRACK {n:02d} AUDIO\r\n    TITLE "Part {n}"\r\n    INDEX 01 00:0{2 * (n - 1)}:00\r\n'
                    for n in (1, 2))
    (music / "album" / "ALBUM.CUE").write_bytes(f'FILE "Album.flac" WAVE\r\n{sheet}'.encode("cp1252"))
    return music, store, mess_here("extract", str(music), *DSP, "--store", str(store), "--json")


def test_extract_json_gives_the_runs_outcome_on_stdout(extracted: tuple[Path, Path, CompletedProcess[str]]) -> None:
    """`mess extract --json` prints what the run did as one JSON object on stdout (the text stays on stderr):
    embedded, copies, failed files with reasons, links skipped, hidden files, the run and the exit status. A file with
    a cue sheet beside it marking several tracks (a whole album in one FLAC) is embedded whole, and that is said: it
    was a track like any other, without a word."""
    music, store, first = extracted
    song, copy, empty, album = (music / "song.wav", music / "sub" / "song copy.wav", music / "empty.mp3",
                                music / "album" / "Album.flac")
    assert first.returncode == 3, first.stderr
    out = json.loads(first.stdout)  # stdout holds the JSON alone
    with closing(FeatureStore(store, readonly=True)) as fs:
        run = fs.run("dsp")
        assert out["run_id"] == run.id and out["model"] == "dsp"
        assert {t.path for t in fs.tracks(run)} == {str(p.resolve()) for p in (song, copy, album)}
    assert (out["embedded"], out["copies"], out["unchanged"], out["exit_status"]) == (2, 1, 0, 3)
    assert [f["path"] for f in out["failed"]] == [str(empty.resolve())]
    assert "empty" in out["failed"][0]["reason"]
    assert len(out["skipped"]) == 1 and str(music / "gone.ogg") in out["skipped"][0]
    assert out["hidden"] == [str((music / ".hidden.wav").resolve())]
    assert out["cue_sheets"] == [{"path": str(album.resolve()), "cue": str(album.resolve().parent / "ALBUM.CUE"),
                                  "tracks": 2}]
    said = " ".join(first.stderr.split())
    assert f"{album.resolve()} (2 tracks in ALBUM.CUE); mess embeds it whole, as one track" in said, said
    assert "failed: " in first.stderr and "{" not in first.stderr  # the text summary, on stderr


def _mp3(clip: Path, path: Path) -> Path:
    """``clip`` encoded as an MP3 at ``path`` (PyAV's libmp3lame), without tags."""
    samples, rate = sf.read(clip, dtype="float32", always_2d=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="stereo" if samples.shape[1] == 2 else "mono")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format="fltp", layout=stream.layout.name)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def test_id3_latin1_frames_holding_utf8_read_as_utf8(clip: Path, tmp_path: Path) -> None:
    """Taggers long wrote UTF-8 into ID3 frames marked Latin-1: mutagen reads 'Sigur RÃ³s', an artist apart from
    'Sigur Rós' (as a Vorbis comment spells it) in `mess artists`. Such a value is read as UTF-8; a Latin-1 frame
    holding Latin-1 text (which is not valid UTF-8) reads as before."""
    mangled, latin = _mp3(clip, tmp_path / "mangled.mp3"), _mp3(clip, tmp_path / "latin.mp3")
    tags = ID3()
    tags.add(TPE1(encoding=Encoding.LATIN1, text="Sigur Rós".encode().decode("latin-1")))  # UTF-8 bytes in the frame
    tags.add(TIT2(encoding=Encoding.LATIN1, text="Hoppípolla".encode().decode("latin-1")))
    tags.save(mangled)
    tags = ID3()
    tags.add(TPE1(encoding=Encoding.LATIN1, text="Motörhead"))  # Latin-1 bytes, as the standard says
    tags.save(latin)
    assert (ID3(mangled)["TPE1"].text, ID3(latin)["TPE1"].text) == (["Sigur RÃ³s"], ["Motörhead"])  # as mutagen reads
    assert (read_tags(mangled)["artist"], read_tags(mangled)["title"]) == ("Sigur Rós", "Hoppípolla")
    assert read_tags(latin)["artist"] == "Motörhead"


def test_extract_help_wraps_its_exit_status_to_the_terminal() -> None:
    """`mess extract --help` printed its exit-status paragraph with the docstring's line breaks inside the terminal's
    own ('... 3 when the run' / 'finished' / 'but some files failed'): each sentence wraps to the width alone."""
    out = mess_here("extract", "--help", env={"COLUMNS": "250"})
    assert out.returncode == 0
    lines = [line.strip() for line in out.stdout.splitlines()]
    status = next(line for line in lines if line.startswith("Exit status:"))
    assert status.endswith("(no files, unknown model, store busy or damaged)."), status


def test_similar_by_a_title_names_the_tracks_it_may_mean(extracted: tuple[Path, Path, CompletedProcess[str]]) -> None:
    """`mess similar Transience` (a title or a file name without its extension, as a person types it) was 'unknown
    track' alone; the error now names the tracks whose title or file name holds the words, by id and path. So does
    a radio's seed."""
    music, store, _ = extracted
    with closing(FeatureStore(store, readonly=True)) as fs:
        ids = {Path(t.path).name: t.id for t in fs.tracks()}
    out = mess_here("similar", "SONG", "--store", str(store))
    said = " ".join(out.stderr.split())
    assert out.returncode == 1 and said.startswith("error: unknown track 'SONG'"), said
    expected = ", ".join(f"{ids[p.name]} ({p.resolve()})" for p in sorted((music / "song.wav",
                                                                           music / "sub" / "song copy.wav"),
                                                                          key=lambda p: ids[p.name]))
    assert f"did you mean {expected}?" in said, said
    assert "did you mean" not in mess_here("similar", "nothing like it", "--store", str(store)).stderr
    radio = CliRunner().invoke(app, ["playlist", "radio", "SONG", "--store", str(store)])  # a seed: the same words
    assert radio.exit_code == 1 and f"did you mean {expected}?" in " ".join(radio.stderr.split()), radio.stderr


def test_a_cue_sheet_named_on_its_own_is_not_an_album_beside_itself(
        extracted: tuple[Path, Path, CompletedProcess[str]]) -> None:
    """`mess extract Album.cue` (the sheet named on the command line, which extraction tries as audio and fails on)
    warned that Album.cue had a cue sheet beside it, Album.cue, and was embedded whole."""
    music, _, _ = extracted
    sheet, album = music / "album" / "ALBUM.CUE", (music / "album" / "Album.flac").resolve()
    assert _cued_albums([sheet.resolve()]) == []
    assert _cued_albums([album, sheet.resolve()]) == [(album, album.parent / "ALBUM.CUE", 2)]
