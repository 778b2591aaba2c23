"""Session 37: ids follow recordings across renames, swaps and files taking a moved file's name (real audio)."""

from __future__ import annotations

import json
import shutil
from contextlib import closing
from pathlib import Path

import soundfile as sf
import test_same_recording
from typer.testing import CliRunner

from mess.audio.windows import WindowPolicy
from mess.cli.main import app
from mess.extract.pipeline import extract
from mess.models.dsp import DspModel
from mess.playlists.formats import read_playlist
from mess.store import FeatureStore

originals = test_same_recording.originals  # FLACs of four Wesnoth excerpts and lossy copies of the first (cached)
POLICY = WindowPolicy(4.0, 2)


def _radio(tmp_path: Path, where: Path) -> list[str]:
    """The entries of `mess playlist radio b.flac -n 6 -o WHERE` as written, each checked to name a file."""
    out = CliRunner().invoke(app, ["playlist", "radio", str(tmp_path / "music" / "b.flac"), "-n", "6", "-o",
                                   str(where), "--model", "dsp", "--store", str(tmp_path / "store")])
    assert out.exit_code == 0, out.output
    assert all(p.is_file() for p in read_playlist(where))
    return [line for line in where.read_text().splitlines() if not line.startswith("#")]


def _ids(store: FeatureStore) -> dict[str, int]:
    return {Path(t.path).name: t.id for t in store.tracks()}


def test_ids_follow_recordings_when_files_swap_names_or_a_new_file_takes_a_moved_ones_name(
        originals: list[Path], tmp_path: Path) -> None:
    """`mv c.flac e.flac; cp other c.flac`, then `mess extract --prune`: c.flac's id stayed with the path (now naming
    other music, in every saved playlist of ids) and e.flac got a new id; two files swapping names kept their paths'
    ids. An id now follows its recording, whichever of the two paths the run reads first, and the summary counts
    the files recognised as moved. Then cluster playlists of the result: a copy k-means put in another cluster than
    its recording is left out (it played twice) and named where the recording plays. Then playlists' relative
    entries: only within a folder extraction was given (see the comments below)."""
    music = tmp_path / "music"
    music.mkdir()
    for name, source in zip("abcd", originals, strict=True):
        shutil.copyfile(source, music / f"{name}.flac")
    with closing(FeatureStore(tmp_path / "store")) as store:
        extract(store, sorted(music.iterdir()), DspModel(), POLICY)
        before = _ids(store)
        hashes = {t.id: t.content_hash for t in store.tracks()}
    assert sorted(before.values()) == [1, 2, 3, 4]
    (music / "Playlists").mkdir()
    assert all(e.startswith("../") for e in _radio(tmp_path, music / "Playlists" / "mix.m3u8"))  # no record of
    # folders (extracted by the Python API, as a store from before the record): relative within the music tree
    (music / "a.flac").rename(music / "swap")  # a <-> b
    (music / "b.flac").rename(music / "a.flac")
    (music / "swap").rename(music / "b.flac")
    (music / "c.flac").rename(music / "e.flac")  # renamed to a later name, a new recording at its old name
    shutil.copyfile(originals[0].parent / "lead-48k.flac", music / "c.flac")
    downloads = tmp_path / "downloads"  # d.flac moved there (read first), a new file at its old name
    downloads.mkdir()
    (music / "d.flac").rename(downloads / "0.flac")
    audio, rate = sf.read(originals[3], frames=10 * 44100)
    sf.write(music / "d.flac", audio, rate)
    store_dir = str(tmp_path / "store")
    out = CliRunner().invoke(app, ["extract", str(music), str(downloads), "--model", "dsp", "--store", store_dir,
                                   "--window", "4", "--max-windows", "2", "--prune", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["moved"] == 4
    said = " ".join(out.stderr.split())
    assert "2 embedded, 4 unchanged (skipped), 0 failed, 4 moved in" in said, said
    with closing(FeatureStore(tmp_path / "store")) as store:
        after = _ids(store)
        now = {t.id: t.content_hash for t in store.tracks()}
    expected = {"a.flac": before["b.flac"], "b.flac": before["a.flac"], "e.flac": before["c.flac"],
                "0.flac": before["d.flac"]}  # 0.flac: in downloads
    assert {name: after[name] for name in expected} == expected
    assert min(after["c.flac"], after["d.flac"]) > 4 and after["c.flac"] != after["d.flac"]  # new recordings
    assert all(now[i] == hashes[i] for i in expected.values())  # each old id names the music it named
    # `mess playlist clusters` folded copies within a cluster only: -k 6 puts each of the six recordings' files in a
    # cluster of its own, so c.flac (lead-48k, a 48 kHz FLAC of b.flac's recording with 30 ms ahead) played too
    cut = CliRunner().invoke(app, ["playlist", "clusters", "-k", "6", "-o", str(tmp_path / "cl"), "--model", "dsp",
                                   "--store", store_dir, "--json"])
    assert cut.exit_code == 0, cut.output
    playlists = json.loads(cut.stdout)["playlists"]
    played = [t["path"] for p in playlists for t in p["tracks"]]
    everything = [str(music / n) for n in after if n != "0.flac"] + [str(downloads / "0.flac")]
    assert sorted(played) == sorted(p for p in everything if not p.endswith("c.flac"))  # each once, the copy in none
    [noted] = [p for p in playlists if p["note"]]  # in the note of the playlist that plays its recording
    assert ([t["path"] for t in noted["tracks"]], noted["note"]) == (
        [str(music / "b.flac")], f"1 copy of a recording it plays is left out: {music / 'c.flac'}")
    assert sorted(str(t) for f in (tmp_path / "cl").glob("*.m3u8") for t in read_playlist(f)) == sorted(played)
    # the collection now spans music/ and downloads/, whose music tree is tmp_path: a playlist in tmp_path/Desktop
    # named '../music/...' (broken when it alone moves). Relative entries now only within a folder `mess extract`
    # was given that holds the playlist too
    (tmp_path / "Desktop").mkdir()
    desktop = _radio(tmp_path, tmp_path / "Desktop" / "mix.m3u8")
    assert all(Path(e).is_absolute() for e in desktop), desktop
    inside = _radio(tmp_path, music / "Playlists" / "mix.m3u8")
    assert inside == [f"../{Path(e).name}" if Path(e).parent == music else e for e in desktop]
    assert str(downloads / "0.flac") in inside


