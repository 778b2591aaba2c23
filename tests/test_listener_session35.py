"""A listener's evening (session 35): radios and playlists of small real libraries, written and played."""

from __future__ import annotations

import json
import shutil
from contextlib import closing
from pathlib import Path

import pytest
from test_serve_browser import CHROMIUM, Browser, _serving
from typer.testing import CliRunner

from mess.cli.main import app
from mess.store import FeatureStore

runner = CliRunner()


def _dsp_store(tmp_path: Path, pieces: list[Path]) -> Path:
    """``pieces`` copied into tmp_path/music and extracted with dsp into tmp_path/store (returned)."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    music = tmp_path / "music"
    music.mkdir()
    for piece in pieces:
        shutil.copy(piece, music)
    with closing(FeatureStore(tmp_path / "store")) as store:
        assert not extract(store, sorted(music.iterdir()), load_model("dsp"), WindowPolicy()).failed
    return tmp_path / "store"


def test_an_empty_radio_is_not_written_over_the_playlist_named(rendered_collection: list[Path],
                                                               tmp_path: Path) -> None:
    """In a library of one track the radio holds none: `-o mine.m3u8` replaced the listener's playlist with an empty
    one and exited 0 ("wrote 0 tracks"), its note "no track fits (artists spread, no duplicates)" as if the other
    tracks did not fit. The command now ends with one line saying why, the file as it was, and no file made where
    none was; without -o the empty radio is still shown, with its note."""
    store = _dsp_store(tmp_path, rendered_collection[:1])
    mine = tmp_path / "mine.m3u8"
    mine.write_bytes(b"#EXTM3U\nmusic/" + rendered_collection[0].name.encode() + b"\n")
    before = mine.read_bytes()
    for output in (mine, tmp_path / "new.m3u8", tmp_path / "new.xspf"):
        out = runner.invoke(app, ["playlist", "radio", "1", "--model", "dsp", "--store", str(store), "-o", str(output)])
        assert out.exit_code == 1, out.output
        assert out.output.startswith("error: ") and f"{output} is not written" in out.output.replace("\n", " ")
        assert "the collection holds no track but the seed" in out.output.replace("\n", " ")
    assert mine.read_bytes() == before
    assert not (tmp_path / "new.m3u8").exists() and not (tmp_path / "new.xspf").exists()
    shown = runner.invoke(app, ["playlist", "radio", "1", "--model", "dsp", "--store", str(store)])
    assert shown.exit_code == 0 and "the collection holds no track but the seed" in shown.output, shown.output


def test_a_seed_given_twice_is_named_once_and_changes_nothing(rendered_collection: list[Path], tmp_path: Path) -> None:
    """`mess playlist radio 1 1 2` was titled "radio: A, A, B"; the tracks were already those of `radio 1 2`."""
    store = _dsp_store(tmp_path, rendered_collection[0:16:4])
    answers = []
    for seeds in (["1", "2"], ["1", "1", "2", "2"]):
        out = runner.invoke(app, ["playlist", "radio", *seeds, "-n", "2", "--model", "dsp", "--store", str(store),
                                  "--json"])
        assert out.exit_code == 0, out.output
        answers.append(json.loads(out.stdout))
    with closing(FeatureStore(store, readonly=True)) as fs:
        names = [fs.track(1).name, fs.track(2).name]
    assert answers[1]["title"] == answers[0]["title"] == f"radio: {names[0]}, {names[1]}"
    assert answers[1]["tracks"] == answers[0]["tracks"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (scripts/install.sh)")
def test_the_page_plays_a_radio_on_past_a_track_whose_file_is_gone(rendered_collection: list[Path],
                                                                   tmp_path: Path) -> None:
    """The page's radio is played in a browser; its second track's file is deleted meanwhile. The player stopped
    there (the audio answers 404, 'ended' never comes), so the radio went silent; it now says why beside the entry
    and plays on from the next one. The file back, the entry clicked plays and loses its mark."""
    store = _dsp_store(tmp_path, rendered_collection[0:16:4])  # 4 pieces by 4 composers
    with _serving(store, "dsp") as url:
        page = Browser(tmp_path / "profile")
        try:
            page.open(url + "/")
            page.wait_for("window.mess && window.mess.state.points.length === 4")
            seed = page.evaluate("window.mess.state.points[0].id")
            x, y = page.evaluate(f"window.mess.pagePosition({seed})")
            page.click(x, y)
            page.wait_for(f"window.mess.state.selected === {seed}")
            page.evaluate("document.getElementById('playlist-n').value = '3'")
            page.evaluate("document.getElementById('radio-btn').click()")
            page.wait_for("document.querySelectorAll('#playlist li').length === 3")
            queue = page.evaluate("[...document.querySelectorAll('#playlist button.track')].map(b => +b.dataset.id)")
            with closing(FeatureStore(store, readonly=True)) as fs:
                gone = Path(fs.track(queue[1]).path)
            kept = gone.rename(tmp_path / "kept.flac")
            page.evaluate("document.getElementById('play-all').click()")
            page.wait_for(f"document.getElementById('player').src.endsWith('/api/tracks/{queue[0]}/audio')")
            page.wait_for("document.getElementById('player').readyState >= 1")
            page.evaluate("(() => { const p = document.getElementById('player'); p.currentTime = p.duration - 0.2; "
                          "return p.play(); })()")
            page.wait_for(f"document.getElementById('player').src.endsWith('/api/tracks/{queue[2]}/audio')")
            skipped = page.evaluate("[...document.querySelectorAll('#playlist li')].map(li => li.title)")
            assert skipped[0] == skipped[2] == "" and "cannot play" in skipped[1] and "404" not in skipped[1], skipped
            assert page.evaluate("document.querySelector('#playlist li.playing button').dataset.id") == str(queue[2])
            kept.rename(gone)  # the file is back (same bytes, size and times): clicked, the entry plays, unmarked
            page.evaluate("document.querySelectorAll('#playlist button.track')[1].click()")
            page.wait_for(f"document.getElementById('player').src.endsWith('/api/tracks/{queue[1]}/audio') && "
                          "document.getElementById('player').currentTime > 0")
            assert page.evaluate("[...document.querySelectorAll('#playlist li.unplayable')].length") == 0
            assert page.evaluate("document.querySelectorAll('#playlist li')[1].title") == ""
            assert page.exceptions() == []
        finally:
            page.close()
