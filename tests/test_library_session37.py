"""A real person's library, end to end (session 37): a messy folder of real soundtrack audio (copies, empty files,
links to nothing, hidden files, odd tags) through `mess extract`, `similar` and `artists`; each test is a defect found
there (notes/library_session37.md)."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import pytest
import soundfile as sf

from conftest import mess_here
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


def test_extract_json_gives_the_runs_outcome_on_stdout(clip: Path, tmp_path: Path) -> None:
    """`mess extract --json` prints what the run did as one JSON object on stdout (the text stays on stderr):
    embedded, copies, failed files with reasons, links skipped, hidden files, the run and the exit status."""
    music, store = tmp_path / "music", tmp_path / "store"
    (music / "sub").mkdir(parents=True)
    song, copy, empty = music / "song.wav", music / "sub" / "song copy.wav", music / "empty.mp3"
    song.write_bytes(clip.read_bytes())
    copy.write_bytes(clip.read_bytes())
    empty.touch()
    (music / "gone.ogg").symlink_to(tmp_path / "nowhere.ogg")
    (music / ".hidden.wav").write_bytes(clip.read_bytes())

    first = mess_here("extract", str(music), *DSP, "--store", str(store), "--json")
    assert first.returncode == 3, first.stderr
    out = json.loads(first.stdout)  # stdout holds the JSON alone
    with closing(FeatureStore(store, readonly=True)) as fs:
        run = fs.run("dsp")
        assert out["run_id"] == run.id and out["model"] == "dsp"
        assert {t.path for t in fs.tracks(run)} == {str(song.resolve()), str(copy.resolve())}
    assert (out["embedded"], out["copies"], out["unchanged"], out["exit_status"]) == (1, 1, 0, 3)
    assert [f["path"] for f in out["failed"]] == [str(empty.resolve())]
    assert "empty" in out["failed"][0]["reason"]
    assert len(out["skipped"]) == 1 and str(music / "gone.ogg") in out["skipped"][0]
    assert out["hidden"] == [str((music / ".hidden.wav").resolve())]
    assert "failed: " in first.stderr and "{" not in first.stderr  # the text summary, on stderr
