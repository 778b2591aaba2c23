"""Session 36: cluster playlists play each recording once (real soundtrack excerpts and their copies)."""

from __future__ import annotations

import filecmp
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
from mess.playlists.clusters import clusters
from mess.playlists.formats import read_playlist
from mess.store import FeatureStore

originals = test_same_recording.originals  # FLACs of four Wesnoth excerpts and lossy copies of the first (cached)


def test_a_cluster_plays_a_recording_once_and_names_the_copies_it_leaves_out(originals: list[Path],
                                                                             tmp_path: Path) -> None:
    """`mess playlist clusters` put a track, its byte-identical copy and its MP3 side by side in one playlist (three
    of its four tracks, one recording), while radios and paths skip such copies. A cluster now plays a recording
    once, the first catalogued of its files (the original here, though its copy's name sorts first), and its note
    names the copies it left out; the written playlists hold every other track once."""
    music = tmp_path / "music"
    music.mkdir()
    for path in originals:
        shutil.copyfile(path, music / path.name)
    original = music / originals[0].name
    byte_copy = Path(shutil.copyfile(original, music / f"Copy of {original.name}"))  # before it by name and content
    mp3 = Path(shutil.copyfile(originals[0].parent / "mp3-128.mp3", music / "mp3-128.mp3"))
    assert filecmp.cmp(original, byte_copy, shallow=False)  # the MP3: encoded from the original by the fixture
    paths = [*(music / p.name for p in originals), byte_copy, mp3]  # the originals catalogued first, as when copies
    with closing(FeatureStore(tmp_path / "store")) as store:  # come later
        summary = extract(store, paths, DspModel(), WindowPolicy(4.0, 3))
    assert (summary.done, summary.copies, summary.failed) == (5, 1, [])
    out = CliRunner().invoke(app, ["playlist", "clusters", "-k", "2", "-o", str(tmp_path / "cl"), "--model", "dsp",
                                   "--store", str(tmp_path / "store"), "--json"])
    assert out.exit_code == 0, out.output
    playlists = json.loads(out.stdout)["playlists"]
    recording = {str(original), str(byte_copy), str(mp3)}
    for p in playlists:
        played = [t["path"] for t in p["tracks"]]
        assert len(recording.intersection(played)) <= 1, played
        assert len(set(played)) == len(played)
    listed = sorted(str(t) for f in sorted((tmp_path / "cl").glob("*.m3u8")) for t in read_playlist(f))
    everything = sorted(str(p) for p in music.iterdir())
    assert listed == sorted(set(everything) - {str(byte_copy), str(mp3)})
    [with_copies] = [p for p in playlists if p["note"]]
    assert str(original) in [t["path"] for t in with_copies["tracks"]]
    assert with_copies["note"] in (f"2 copies of recordings it plays are left out: {a}, {b}"
                                   for a, b in ((byte_copy, mp3), (mp3, byte_copy)))


def test_a_cluster_plays_the_copy_on_disk_of_a_recording_whose_first_file_is_gone(originals: list[Path],
                                                                                 tmp_path: Path) -> None:
    """Of a recording's files a cluster keeps the first catalogued: an original deleted since (not yet pruned) was
    kept, named as no longer on disk, and its WAV copy on disk (the same samples: cosine 1) left out as a copy. The
    copy on disk plays; the vanished original is the one named as left out."""
    music = tmp_path / "music"
    music.mkdir()
    paths = [Path(shutil.copyfile(path, music / path.name)) for path in originals[:3]]
    audio, rate = sf.read(paths[0], dtype="float32")
    wav = music / f"{paths[0].stem}.wav"
    sf.write(wav, audio, rate, subtype="FLOAT")  # lossless: the FLAC's samples, another content hash
    with closing(FeatureStore(tmp_path / "store")) as store:
        assert extract(store, [*paths, wav], DspModel(), WindowPolicy(4.0, 3)).done == 4
    paths[0].unlink()
    with closing(FeatureStore(tmp_path / "store", readonly=True)) as store:
        playlists = clusters(store, store.run("dsp"), 2)
    played = [t.path for p in playlists for t in p.tracks]
    assert sorted(played) == sorted(str(p) for p in (wav, *paths[1:]))
    assert [p.note for p in playlists if p.note] == [f"1 copy of a recording it plays is left out: {paths[0]}"]
