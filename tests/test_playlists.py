"""Playlists on the rendered collection's real vectors: radio, sonic path, clusters, M3U8 / XSPF files."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from mess.cli.main import app
from mess.playlists.clusters import _unique_titles, cluster_name, clusters, default_k
from mess.playlists.formats import read_playlist, write_playlist
from mess.playlists.path import sonic_path
from mess.playlists.playlist import (
    DuplicateGuard,
    Playlist,
    PlaylistError,
    artist_key,
    gone_tracks,
    title_key,
    with_gone_note,
)
from mess.playlists.radio import radio
from mess.query import resolve_query
from mess.search.query import collection_query, similar_tracks
from mess.search.vectors import VectorSpec, load_vectors
from mess.store import FeatureStore, Run, StoreError, Track

runner = CliRunner()


@pytest.fixture()
def real(extracted_store: Path) -> FeatureStore:
    store = FeatureStore(extracted_store, readonly=True)
    yield store
    store.close()


def _artists_of(store: FeatureStore, paths: list[Path]) -> list[str]:
    by_path = {Path(t.path): t for t in store.tracks()}
    return [artist_key(by_path[p]) for p in paths]


def test_radio_cli_writes_ten_existing_files_without_artist_repeats(real: FeatureStore, extracted_store: Path,
                                                                     tmp_path: Path) -> None:
    out = runner.invoke(app, ["playlist", "radio", "1", "-n", "10", "-o", str(tmp_path / "r.m3u8"),
                              "--store", str(extracted_store)])
    assert out.exit_code == 0, out.output
    paths = read_playlist(tmp_path / "r.m3u8")
    assert len(paths) == 10 and len(set(paths)) == 10
    assert all(p.is_file() for p in paths)
    seed = real.track(1)
    assert Path(seed.path) not in paths
    artists = [artist_key(seed), *_artists_of(real, paths)]
    assert all(a != b for a, b in zip(artists, artists[1:], strict=False)), artists
    # 4 composers: the default window of 3 can be kept everywhere
    assert all(len(set(artists[i:i + 3])) == 3 for i in range(len(artists) - 2)), artists
    text = (tmp_path / "r.m3u8").read_text()
    assert text.startswith("#EXTM3U\n") and text.count("#EXTINF:20,") == 10


@pytest.mark.parametrize("model", ["dsp", "musicnn-msd"])
@pytest.mark.parametrize("ranking", ["auto", "plain"])
def test_radio_starts_with_the_seeds_nearest_other_artist(real: FeatureStore, model: str, ranking: str) -> None:
    """The radio's first track is `mess similar`'s best of another artist, by the same ranking: the augmented one
    by default (all layers), cosine with ranking plain."""
    run = real.run(model)
    seed = resolve_query(real, 2, run)
    playlist = radio(real, run, [seed], 5, window=1, ranking=ranking)
    options = {"ranking": "plain", "expand": 0} if ranking == "plain" else {}
    best = similar_tracks(real, run, seed, 1, exclude_same_artist=True, **options)[0]
    assert (best.adjusted is None) == (ranking == "plain")
    assert playlist.tracks[0].id == best.track.id
    assert playlist.scores[0] == pytest.approx(best.score if best.adjusted is None else best.adjusted, abs=1e-5)


def test_radio_from_two_seeds_takes_the_closest_to_either(real: FeatureStore) -> None:
    """Each track's score is the better of `mess similar`'s ranking scores from the two seeds, best first."""
    run = real.run("musicnn-msd")
    seeds = [resolve_query(real, i, run) for i in (1, 12)]
    playlist = radio(real, run, seeds, 8, window=1)  # 14 candidates, at most 4 per artist: 8 always fit
    ids = [t.id for t in playlist.tracks]
    assert 1 not in ids and 12 not in ids and len(set(ids)) == 8
    n = len(real.tracks(run))
    scores = [{nb.track.id: nb.adjusted for nb in similar_tracks(real, run, seed, n)} for seed in seeds]
    expected = [max(scores[0].get(i, -np.inf), scores[1].get(i, -np.inf)) for i in ids]
    np.testing.assert_allclose(playlist.scores, expected, atol=1e-5)


def test_radio_seeds_take_turns_with_blend_turns(tmp_path: Path) -> None:
    """Two seeds, A in a dense corner (its neighbours at cosine 0.98 .. 0.82), B in a sparse one (0.71 .. 0.34): by
    the nearest seed A's neighbours took every slot; with --blend turns the seeds add their next closest in turn."""
    points = {"A": np.eye(4)[0], "B": np.eye(4)[2],
              **{f"a{d}": np.array([np.cos(np.radians(d)), np.sin(np.radians(d)), 0, 0]) for d in range(10, 40, 5)},
              **{f"b{d}": np.array([0, 0, np.cos(np.radians(d)), np.sin(np.radians(d))]) for d in range(45, 75, 5)}}
    store, run = _arc_store(tmp_path / "store", points)
    seeds = [resolve_query(store, f"{name}.wav", run) for name in ("A", "B")]

    def titles(blend: str) -> list[str | None]:
        return [t.title for t in radio(store, run, seeds, 6, norm="none", blend=blend, ranking="plain").tracks]

    assert titles("nearest") == ["a10", "a15", "a20", "a25", "a30", "a35"]
    turns = titles("turns")
    assert turns == ["a10", "b45", "a15", "b50", "a20", "b55"]
    store.close()
    out = runner.invoke(app, ["playlist", "radio", "A.wav", "B.wav", "-n", "6", "--blend", "turns", "--json",
                              "--ranking", "plain", "--model", "arc", "--store", str(tmp_path / "store")])
    assert out.exit_code == 0, out.output
    assert [t["title"] for t in json.loads(out.stdout)["tracks"]] == turns
    out = runner.invoke(app, ["playlist", "radio", "A.wav", "--ranking", "best", "--model", "arc",
                              "--store", str(tmp_path / "store")])
    assert out.exit_code == 1 and out.output.count("\n") == 1 and "unknown ranking 'best'" in out.output, out.output
    out = runner.invoke(app, ["playlist", "radio", "A.wav", "B.wav", "--blend", "fair", "--model", "arc",
                              "--store", str(tmp_path / "store")])
    assert out.exit_code == 1 and out.output.count("\n") == 1 and "nearest or turns" in out.output, out.output


def _by_name(store: FeatureStore, run: Run) -> list[Track]:
    """The run's tracks in the order of their file names: a test names tracks by file, not by the ids a store
    gave them (a test naming ids 1 and 2 once got two Bach chorales on one run and two composers on another)."""
    return sorted(store.tracks(run), key=lambda t: t.path)


def test_near_duplicates_are_recognised(real: FeatureStore) -> None:
    run = real.run("musicnn-msd")
    vs = load_vectors(real, run, VectorSpec("all"))
    unit = vs.unit()
    a, b = _by_name(real, run)[:2]  # two Bach chorales
    assert a.artist == b.artist == "Bach" and a.title != b.title
    guard = DuplicateGuard(unit.shape[1])
    guard.add(unit[vs.rows(np.array([a.id]))[0]], a)
    u2 = unit[vs.rows(np.array([b.id]))[0]]
    assert not guard.duplicate(u2, b)
    assert guard.duplicate(u2, dataclasses.replace(b, content_hash=a.content_hash))  # same recording
    assert guard.duplicate(u2, dataclasses.replace(b, title=a.title))  # same artist and title
    assert guard.duplicate(unit[vs.rows(np.array([a.id]))[0]], b)  # same vector


def test_path_cli_starts_at_a_and_ends_at_b(real: FeatureStore, extracted_store: Path, tmp_path: Path) -> None:
    a, b = _by_name(real, real.run("musicnn-msd"))[0:14:13]  # a Bach chorale, a Palestrina mass movement
    out = runner.invoke(app, ["playlist", "path", str(a.id), str(b.id), "-n", "6", "-o", str(tmp_path / "p.m3u8"),
                              "--model", "musicnn-msd", "--store", str(extracted_store)])
    assert out.exit_code == 0, out.output
    paths = read_playlist(tmp_path / "p.m3u8")
    assert len(paths) == 6 and len(set(paths)) == 6 and all(p.is_file() for p in paths)
    assert paths[0] == Path(a.path) and paths[-1] == Path(b.path)


def test_path_moves_from_a_towards_b_in_small_steps(real: FeatureStore) -> None:
    run = real.run("musicnn-msd")
    # from a Bach chorale to a Palestrina mass movement: over all 192 pairs of two composers the rank correlation is
    # 0.976-1.0, but 14 of them (Haydn with Mozart) have steps no shorter than the jump; from this chorale to each
    # Palestrina movement the mean step's cosine exceeds the jump's by 0.63-0.77
    a, b = _by_name(real, run)[0:14:13]
    assert (a.artist, b.artist) == ("Bach", "Palestrina")
    playlist = sonic_path(real, run, a, b, 8)
    vs = load_vectors(real, run, VectorSpec("all"))
    unit = vs.unit()[vs.rows(np.array([t.id for t in playlist.tracks]))]
    towards_b = unit @ unit[-1] - unit @ unit[0]
    assert spearmanr(np.arange(8), towards_b).statistic > 0.8
    steps = (unit[:-1] * unit[1:]).sum(axis=1)
    assert steps.mean() > float(unit[0] @ unit[-1])  # each step is shorter than the jump from A to B


def test_clusters_cover_the_collection_once_and_are_named_from_tags(real: FeatureStore, extracted_store: Path,
                                                                     tmp_path: Path) -> None:
    out = runner.invoke(app, ["playlist", "clusters", "-k", "4", "-o", str(tmp_path / "cl"), "--model",
                              "musicnn-msd", "--store", str(extracted_store), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert len(data["playlists"]) == 4
    files = sorted((tmp_path / "cl").glob("*.m3u8"))
    assert len(files) == 4
    listed = [p for f in files for p in read_playlist(f)]
    assert sorted(listed) == sorted(Path(t.path) for t in real.tracks(real.run("musicnn-msd")))
    for p in data["playlists"]:
        counts: dict[str, int] = {}
        for t in p["tracks"]:
            counts[t["artist"]] = counts.get(t["artist"], 0) + 1
        assert max(counts, key=counts.get) in p["title"]
    names = [p.title for p in clusters(real, real.run("musicnn-msd"), 4)]
    assert len(set(names)) == 4


def test_clusters_of_copies_and_of_one_track_are_not_empty(tmp_path: Path) -> None:
    """A one-track store failed on the default -k (it was at least 2), and copies of one recording made an empty
    second playlist (sklearn warned of 1 distinct cluster; -o wrote an empty file)."""
    import soundfile as sf

    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.dsp import DspModel

    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(22050 * 5) / 22050
    sf.write(music / "a.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    one = FeatureStore(tmp_path / "one")
    extract(one, [music / "a.wav"], DspModel(), WindowPolicy(4.0, 2))
    assert [len(p.tracks) for p in clusters(one, one.run("dsp"))] == [1]
    assert "only 1 track has these vectors" in radio(one, one.run("dsp"), [collection_query(one, 1)], 5).note
    for i in range(3):
        shutil.copy(music / "a.wav", music / f"copy{i}.wav")
    copies = FeatureStore(tmp_path / "copies")
    extract(copies, sorted(music.glob("*.wav")), DspModel(), WindowPolicy(4.0, 2))
    assert [len(p.tracks) for p in clusters(copies, copies.run("dsp"))] == [1]  # the copies named in its note
    with pytest.raises(PlaylistError, match="distinct tracks \\(1\\)"):
        clusters(copies, copies.run("dsp"), 2)


@pytest.mark.parametrize("ext", ["m3u8", "xspf"])
def test_playlist_beside_the_music_uses_relative_paths(real: FeatureStore, tmp_path: Path, ext: str) -> None:
    music = tmp_path / "music" / "my album"
    music.mkdir(parents=True)
    tracks = []
    for t in real.tracks()[:3]:
        copy = music / Path(t.path).name
        shutil.copy(t.path, copy)
        tracks.append(dataclasses.replace(t, path=str(copy)))
    outside = real.tracks()[3]
    playlist = Playlist("mix", (*tracks, outside), (1.0, 0.9, 0.8, 0.7))
    written = write_playlist(playlist, tmp_path / "music" / f"mix.{ext}")
    text = written.read_text()
    assert str(tmp_path) not in text  # the three copies are written relative to the playlist
    assert ("my album/" if ext == "m3u8" else "my%20album/") in text
    assert read_playlist(written) == [Path(t.path) for t in (*tracks, outside)]
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "music", moved)
    assert all(p.is_file() for p in read_playlist(moved / f"mix.{ext}")[:3])


def test_playlist_bad_input_is_one_line(extracted_store: Path, tmp_path: Path) -> None:
    out = runner.invoke(app, ["playlist", "radio", "no-such-track", "--store", str(extracted_store)])
    assert out.exit_code == 1 and "unknown track" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["playlist", "radio", "1", "-o", str(tmp_path / "r.txt"), "--store",
                              str(extracted_store)])
    assert out.exit_code == 1 and ".m3u8 or .xspf" in " ".join(out.output.split())
    out = runner.invoke(app, ["playlist", "path", "1", "1", "--store", str(extracted_store)])
    assert out.exit_code == 1 and "same recording" in out.output
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for command in (["radio", "1", "-o", str(blocker / "r.m3u8")], ["clusters", "-k", "2", "-o", str(blocker)]):
        out = runner.invoke(app, ["playlist", *command, "--store", str(extracted_store)])
        assert out.exit_code == 1 and "cannot write" in out.output and str(blocker) in out.output, out.output
        assert out.exception is None or isinstance(out.exception, SystemExit)


def test_any_file_the_system_refuses_is_one_line_not_a_traceback(extracted_store: Path, tmp_path: Path) -> None:
    """Commands without a message of their own for it still end in one line (the entry point's fallback)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = subprocess.run([sys.executable, "-m", "mess.cli", "evaluate", "--model", "dsp", "--label", "artist",
                          "--plot", str(blocker / "e.png"), "--store", str(extracted_store)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: ") and str(blocker) in out.stderr


def test_radio_from_an_audio_file_outside_the_collection(real: FeatureStore, extracted_store: Path,
                                                         tmp_path: Path) -> None:
    import soundfile as sf

    audio, rate = sf.read(real.track(6).path)
    clip = tmp_path / "clip.wav"  # new content, no tags: embedded on the fly, no artist to avoid
    sf.write(clip, audio[: 15 * rate], rate)
    out = runner.invoke(app, ["playlist", "radio", str(clip), "-n", "5", "--model", "musicnn-msd", "--store",
                              str(extracted_store), "--json"])
    assert out.exit_code == 0, out.output
    ids = [t["id"] for t in json.loads(out.stdout)["tracks"]]
    run = real.run("musicnn-msd")
    nearest = similar_tracks(real, run, resolve_query(real, clip, run), 1)[0]
    assert len(ids) == 5 and ids[0] == nearest.track.id


def _arc_store(root: Path, points: dict[str, np.ndarray]):
    """A store whose one-layer vectors are the given points (written as they are; searched with norm 'none')."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.runs import run_key
    from mess.models.base import ModelInfo
    from mess.store import TrackVectors

    store = FeatureStore(root)
    run = store.ensure_run(run_key(ModelInfo("arc", "r1", 16000, ("l0",), (4,)), WindowPolicy()))
    for i, (name, vec) in enumerate(points.items()):
        store.upsert_track(Path(f"/music/{name}.wav"), f"hash-{name}", 1, 0.0, {"duration": 10.0},
                           {"artist": f"Artist {i}", "album": None, "title": name, "genre": None, "composer": None})
        v = vec.astype(np.float32)
        store.write_vectors(run, [TrackVectors(f"hash-{name}", [v], [v[None]], [0.0])])
    return store, run


def _at(degrees: float, lift: float = 0.0) -> np.ndarray:
    """The point ``degrees`` along the quarter circle from A = e0 to B = e1, tilted ``lift`` degrees towards e2."""
    th, ph = np.radians(degrees), np.radians(lift)
    return np.array([np.cos(ph) * np.cos(th), np.cos(ph) * np.sin(th), np.sin(ph), 0.0])


def _path_names(store: FeatureStore, run, n: int) -> list[str]:
    pick = sonic_path(store, run, store.track("A.wav"), store.track("B.wav"), n, norm="none")
    return [t.title for t in pick.tracks]


def test_path_steps_are_even_angles_along_the_great_circle_and_ordered_by_progress(tmp_path: Path) -> None:
    """On a quarter circle from A to B with a track every 5 degrees, a path of 7 steps lands on the tracks at
    15, 30, 45, 60 and 75 degrees (i/6 of the angle: spherical, not linear, interpolation). With a track lifted off
    the arc it is ordered by progress (cosine to B less cosine to A), not by its cosine to B alone."""
    dense = {"A": _at(0), "B": _at(90), **{f"d{d}": _at(d) for d in range(5, 90, 5)}}
    store, run = _arc_store(tmp_path / "dense", dense)
    assert _path_names(store, run, 7) == ["A", "d15", "d30", "d45", "d60", "d75", "B"]
    store.close()
    # 72 degrees, lifted 40 degrees off the arc: cosine to B 0.73 (below the 54-degree track's 0.81), progress 0.49
    lifted = {"A": _at(0), "B": _at(90), "p18": _at(18), "p36": _at(36), "p54": _at(54), "q72": _at(72, 40),
              "far": np.array([-1.0, 0.0, 0.0, 0.0]), "off": np.array([0.0, 0.0, 0.0, 1.0])}
    store, run = _arc_store(tmp_path / "lifted", lifted)
    assert _path_names(store, run, 6) == ["A", "p18", "p36", "p54", "q72", "B"]
    store.close()


def test_path_scores_are_cosines_to_the_targets_on_the_arc_and_two_tracks_are_the_ends(tmp_path: Path) -> None:
    """Scores: 1 for A and B, each step's cosine to the point i/(n-1) of the way along the arc (cos 40 degrees for a
    track 40 degrees off it); -n 2 is A then B; -n 1, A to A, -n above the collection and a track without vectors
    are refused in one line."""
    lifted = {"A": _at(0), "B": _at(90), "p30": _at(30), "q60": _at(60, 40), "off": np.array([0.0, 0.0, 0.0, 1.0])}
    store, run = _arc_store(tmp_path / "lifted", lifted)
    a, b = store.track("A.wav"), store.track("B.wav")
    path = sonic_path(store, run, a, b, 4, norm="none")
    assert [t.title for t in path.tracks] == ["A", "p30", "q60", "B"]
    np.testing.assert_allclose(path.scores, [1.0, 1.0, np.cos(np.radians(40)), 1.0], atol=1e-3)  # stored as float16
    assert path.title == f"path: {a.name} -> {b.name}"
    ends = sonic_path(store, run, a, b, 2, norm="none")
    assert [t.title for t in ends.tracks] == ["A", "B"] and ends.scores == (1.0, 1.0)
    with pytest.raises(PlaylistError, match="at least 2"):
        sonic_path(store, run, a, b, 1, norm="none")
    with pytest.raises(PlaylistError, match="same recording"):
        sonic_path(store, run, a, dataclasses.replace(b, content_hash=a.content_hash), 4, norm="none")
    with pytest.raises(PlaylistError, match="5 tracks with vectors, fewer than -n 6"):
        sonic_path(store, run, a, b, 6, norm="none")
    store.upsert_track(Path("/music/new.wav"), "hash-new", 1, 0.0, {"duration": 10.0},
                       {"artist": "New", "album": None, "title": "new", "genre": None, "composer": None})
    with pytest.raises(StoreError, match="no vectors|mess extract"):
        sonic_path(store, run, a, store.track("new.wav"), 4, norm="none")
    store.close()


def test_path_skips_copies_of_its_ends_and_runs_between_two_recordings_of_one_sound(tmp_path: Path) -> None:
    """Tracks with A's or B's vector are near-duplicates of the ends: a 3-track path with nothing else between them
    is refused. From A to a recording with A's very vector, every step aims at A: the nearest distinct tracks."""
    copies = {"A": _at(0), "B": _at(90), "a2": _at(0), "b2": _at(90)}
    store, run = _arc_store(tmp_path / "copies", copies)
    with pytest.raises(PlaylistError, match="too few distinct tracks for a path of 3"):
        sonic_path(store, run, store.track("A.wav"), store.track("B.wav"), 3, norm="none")
    store.close()
    same = {"A": _at(0), "B": _at(0), "n10": _at(10), "n20": _at(20), "far": _at(170)}
    store, run = _arc_store(tmp_path / "same", same)
    assert _path_names(store, run, 4) == ["A", "n10", "n20", "B"]
    store.close()


def _track(tid: int, artist: str | None = None, title: str | None = None, genre: str | None = None,
           composer: str | None = None, path: str | None = None) -> Track:
    return Track(id=tid, path=path or f"/m/{tid}.ogg", content_hash=f"h{tid}", duration=10.4, artist=artist,
                 album=None, title=title, genre=genre, composer=composer)


def test_a_playlist_notes_its_gone_files_and_its_dict_is_rounded_and_titled(tmp_path: Path) -> None:
    here = tmp_path / "here.ogg"
    here.write_bytes(b"x")
    tracks = tuple(_track(i, path=str(here if i == 0 else tmp_path / f"gone{i}.ogg")) for i in range(6))
    playlist = Playlist("mix", tracks, tuple(0.1234567 * i for i in range(6)), note="first")
    gone = gone_tracks(playlist)
    assert [t.id for t in gone] == [1, 2, 3, 4, 5]
    assert with_gone_note(playlist, []) is playlist
    one = with_gone_note(playlist, ["gone1"]).note
    assert one == "first; 1 track is no longer on disk (gone1); `mess extract --prune FOLDER` forgets vanished files"
    two = with_gone_note(dataclasses.replace(playlist, note=""), ["a", "b"]).note
    assert two.startswith("2 tracks are no longer on disk (a, b); ")
    assert "3 tracks are no longer on disk (a, b, c); " in with_gone_note(playlist, ["a", "b", "c"]).note
    assert "4 tracks are no longer on disk (a, b, c and 1 more); " in with_gone_note(playlist, [*"abcd"]).note
    five = with_gone_note(playlist, [t.name for t in gone]).note
    assert "5 tracks are no longer on disk (gone1, gone2, gone3 and 2 more)" in five
    rows = playlist.to_dict()["tracks"]
    assert [r["score"] for r in rows] == [round(0.1234567 * i, 6) for i in range(6)]
    assert rows[1]["title"] == "gone1" and rows[1]["duration"] == 10.4


def test_the_duplicate_guard_grows_past_its_first_rows_and_knows_external_seeds_and_titles() -> None:
    rng = np.random.default_rng(1)
    units = rng.normal(size=(40, 8))
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    guard = DuplicateGuard(8)
    for i, u in enumerate(units[:39]):
        guard.add(u, _track(i))
    assert guard.duplicate(units[38], _track(100))  # the 39th row kept (the table doubled twice)
    assert guard.duplicate(-units[5], _track(5))  # the same recording (content hash), untitled, whatever its vector
    assert not guard.duplicate(units[39], _track(101))
    guard.add(units[39], None, content_hash="external")
    assert guard.duplicate(-units[0], dataclasses.replace(_track(102), content_hash="external"))
    titled = DuplicateGuard(8)
    titled.add(units[0], _track(1, artist="J. S. Bach", title="Air"))
    assert titled.duplicate(units[1], _track(2, artist="j.s. bach", title=" air "))
    assert not titled.duplicate(units[1], _track(3, artist="J. S. Bach", title="Gavotte"))
    assert not titled.duplicate(units[1], _track(4, title="Air"))  # no artist: titles alone say nothing
    assert title_key(_track(5, artist="Bach", title="  ")) is None


def test_default_k_is_the_square_root_of_half_the_tracks_between_2_and_50() -> None:
    assert [default_k(2 * k * k) for k in range(2, 51)] == list(range(2, 51))
    assert default_k(1) == default_k(9) == 2 and default_k(2 * 51 * 51) == default_k(10**6) == 50
    assert default_k(2 * 7 * 7 + 7) == 7  # sqrt(52.5) = 7.2


def test_cluster_names_take_a_genre_of_half_the_tracks_and_the_two_commonest_artists() -> None:
    half = (_track(1, "Bach", genre="Baroque; Classical"), _track(2, "Bach", genre="Baroque"), _track(3, "Haydn"),
            _track(4, None, composer="Haydn"), _track(5, "Haydn"), _track(6, "Haydn"))
    assert cluster_name(half[:4]) == "Baroque: Bach & Haydn"
    assert cluster_name(half) == "Haydn & Bach"  # Baroque: 2 of 6
    assert cluster_name((*half[:4], _track(7, "Vivaldi"))) == "Bach & Haydn and others"
    assert cluster_name((_track(8, genre="Jazz"), _track(9))) == "Jazz"
    assert cluster_name((_track(10), _track(11, " "))) == "cluster"
    named = _unique_titles([Playlist("Jazz", (), (), "n1"), Playlist("Jazz", (), ()), Playlist("Pop", (), ()),
                            Playlist("Jazz", (), ())])
    assert [p.title for p in named] == ["Jazz", "Jazz (2)", "Pop", "Jazz (3)"] and named[0].note == "n1"


def test_clusters_are_the_groups_largest_first_ordered_and_scored_by_cosine_to_their_centre(tmp_path: Path) -> None:
    """Three groups of 5, 4 and 3 tracks around orthogonal axes: -k 3 finds them, largest first, each ordered by
    cosine to its members' mean direction (the k-means centre); -k 0 and -k 13 are refused."""
    groups = {"x": (0, [0, 6, 16, 24, 32]), "y": (1, [0, 10, 24, 30]), "z": (2, [0, 12, 30])}
    points = {f"{g}{d}": np.cos(np.radians(d)) * np.eye(4)[axis] + np.sin(np.radians(d)) * np.eye(4)[3]
              for g, (axis, degrees) in groups.items() for d in degrees}
    store, run = _arc_store(tmp_path / "groups", points)
    found = clusters(store, run, 3, norm="none")
    assert [{t.title[0] for t in p.tracks} for p in found] == [{"x"}, {"y"}, {"z"}]
    for p, (_, degrees) in zip(found, groups.values(), strict=True):
        members = np.array([points[t.title] for t in p.tracks])
        centre = members.mean(axis=0) / np.linalg.norm(members.mean(axis=0))
        assert len(p.tracks) == len(degrees) and list(np.argsort(-(members @ centre))) == list(range(len(degrees)))
        np.testing.assert_allclose(p.scores, members @ centre, atol=2e-3)
    for k in (0, 13):
        with pytest.raises(PlaylistError, match=r"between 1 and the number of distinct tracks \(12\)$"):
            clusters(store, run, k, norm="none")
    store.close()


def _artist_store(root: Path, points: dict[str, tuple[float, str]]):
    """A store of one-layer vectors at the given angles (degrees from e0 towards e1), each track by the given
    artist (searched with norm 'none')."""
    store, run = _arc_store(root, {name: _at(degrees) for name, (degrees, _) in points.items()})
    for name, (_, artist) in points.items():
        track = store.track(f"{name}.wav")
        store.upsert_track(Path(track.path), track.content_hash, 1, 0.0, {"duration": 10.0},
                           {"artist": artist, "album": None, "title": name, "genre": None, "composer": None})
    return store, run


def test_radio_keeps_artists_a_window_apart_shrinking_it_only_when_nothing_fits(tmp_path: Path) -> None:
    """Seed by X; candidates x5, x10 (X), y15, y20 (Y), z25 (Z) at those angles. Window 2: the closest whose artist
    is not among the last 2 played (the seed first), else among the last 1. Scores: cosines to the seed."""
    points = {"S": (0, "X"), "x5": (5, "X"), "x10": (10, "X"), "y15": (15, "Y"), "y20": (20, "Y"), "z25": (25, "Z")}
    store, run = _artist_store(tmp_path / "store", points)
    seed = [collection_query(store, store.track("S.wav").id)]

    def play(n: int, window: int, **options) -> Playlist:
        return radio(store, run, seed, n, window=window, norm="none", ranking="plain", **options)

    two = play(5, 2)
    assert [t.title for t in two.tracks] == ["y15", "z25", "x5", "y20", "x10"] and two.note == ""
    np.testing.assert_allclose(two.scores, np.cos(np.radians([15, 25, 5, 20, 10])), atol=1e-3)
    assert two.title == "radio: " + seed[0].label
    assert [t.title for t in play(5, 1).tracks] == ["y15", "x5", "y20", "x10", "z25"]
    assert [t.title for t in play(2, 1).tracks] == ["y15", "x5"]
    short = play(10, 1, exclude=frozenset({store.track("y15.wav").id}))
    assert [t.title for t in short.tracks] == ["y20", "x5", "z25", "x10"]
    assert short.note == "only 4 tracks fit (no duplicates)"
    for bad in ({"n": 0, "window": 1}, {"n": 1, "window": 0}):
        with pytest.raises(PlaylistError, match="at least 1"):
            play(**bad)
    with pytest.raises(PlaylistError, match="at least one seed"):
        radio(store, run, [], 5)
    store.close()


def test_a_radio_from_a_library_of_one_artist_repeats_the_artist_and_says_so(tmp_path: Path) -> None:
    """A library of one artist's tracks gave an empty radio (the window never shrank below 1, so no track fitted
    after the seed); a listener with one band's albums got nothing. When only the last artist's tracks are left the
    artist plays again, closest first, and the note counts the repeats; where another artist is left the spread
    holds (w's track comes between)."""
    points = {"S": (0, "X"), "x5": (5, "X"), "x10": (10, "X"), "x15": (15, "X"), "w30": (30, "W")}
    store, run = _artist_store(tmp_path / "store", points)
    seed = [collection_query(store, store.track("S.wav").id)]
    played = radio(store, run, seed, 10, window=2, norm="none", ranking="plain")
    assert [t.title for t in played.tracks] == ["w30", "x5", "x10", "x15"]
    np.testing.assert_allclose(played.scores, np.cos(np.radians([30, 5, 10, 15])), atol=1e-3)
    assert played.note == "only 4 tracks fit (no duplicates); an artist played twice in a row 2 times: no track by " \
        "another artist was left"
    alone = radio(store, run, seed, 2, window=1, norm="none", ranking="plain",
                  exclude=frozenset({store.track("w30.wav").id}))
    assert [t.title for t in alone.tracks] == ["x5", "x10"]
    assert alone.note == "an artist played twice in a row 2 times: no track by another artist was left"
    store.close()


def test_radio_skips_what_is_queued_its_copies_and_the_stale_entry_of_a_changed_seed(tmp_path: Path) -> None:
    """An external seed by X with S's vector that replaces r's entry: S (a copy of the seed), r (stale), a
    (queued) and a2 (a copy of a) never play; X's x20 waits a turn after the seed; the note says what was left."""
    from mess.query import external_query

    points = {"S": (0, "X"), "r": (2, "R"), "a": (5, "A"), "a2": (5, "B"), "x20": (20, "X"), "c30": (30, "C")}
    store, run = _artist_store(tmp_path / "store", points)
    seed = dataclasses.replace(external_query(store, run, "X - new", "hash-new", [_at(0).astype(np.float32)],
                                              artist="X"), replaces=store.track("r.wav"))
    playlist = radio(store, run, [seed], 5, window=1, norm="none", ranking="plain",
                     heard=frozenset({store.track("a.wav").id}))
    assert [t.title for t in playlist.tracks] == ["c30", "x20"]
    np.testing.assert_allclose(playlist.scores, np.cos(np.radians([30, 20])), atol=1e-3)
    assert playlist.note == "only 2 tracks fit (no duplicates, none of the 1 queued already)"
    one = radio(store, run, [seed], 5, window=1, norm="none", ranking="plain",
                exclude=frozenset({store.track("x20.wav").id}), heard=frozenset({store.track("a.wav").id}))
    assert one.note.startswith("only 1 track fits (")
    everything = frozenset(t.id for t in store.tracks(run))  # was 'only 0 tracks fit', as if none were similar enough
    none = radio(store, run, [seed], 5, window=1, norm="none", ranking="plain", exclude=everything)
    assert none.tracks == ()
    assert none.note == "no track to pick: every track of the collection is left out or queued already"
    store.close()


def test_radio_by_default_lets_an_artist_return_after_three_others(tmp_path: Path) -> None:
    """The default window is 3: seed by X; a5 (A), b10 (B), c15 (C) play first, then X's x20 before d25 (D)."""
    points = {"S": (0, "X"), "a5": (5, "A"), "b10": (10, "B"), "c15": (15, "C"), "x20": (20, "X"), "d25": (25, "D")}
    store, run = _artist_store(tmp_path / "store", points)
    seed = collection_query(store, store.track("S.wav").id)
    playlist = radio(store, run, [seed], 5, norm="none", ranking="plain")
    assert [t.title for t in playlist.tracks] == ["a5", "b10", "c15", "x20", "d25"]
    store.close()


def test_path_orders_its_steps_by_progress_not_by_the_target_they_were_chosen_for(tmp_path: Path) -> None:
    """p (44 degrees, on the arc) is nearest the first target (30 degrees), q (40 degrees, lifted 50) is all that is
    left for the second (60 degrees); q has made less progress from A to B (cosine to B less cosine to A), so it plays
    first."""
    store, run = _arc_store(tmp_path / "store", {"A": _at(0), "B": _at(90), "p": _at(44), "q": _at(40, 50)})
    progress = {name: float(_at(*x) @ _at(90) - _at(*x) @ _at(0)) for name, x in (("p", (44,)), ("q", (40, 50)))}
    assert progress["q"] < progress["p"]
    assert _path_names(store, run, 4) == ["A", "q", "p", "B"]
    store.close()


def test_a_path_may_take_every_track_of_the_collection(tmp_path: Path) -> None:
    """-n as large as the collection: every track, once, A first and B last."""
    points = {"A": _at(0), "B": _at(90), "p30": _at(30), "q60": _at(60, 40), "off": np.array([0.0, 0.0, 0.0, 1.0])}
    store, run = _arc_store(tmp_path / "store", points)
    names = _path_names(store, run, len(points))
    assert names[0] == "A" and names[-1] == "B" and sorted(names) == sorted(points)
    store.close()


def test_radio_plays_one_of_two_recordings_of_one_sound_and_a_radio_of_one(tmp_path: Path) -> None:
    """c1 and d1 share a vector (one sound, two files, two artists): only the first plays; -n 1 is one track."""
    points = {"S": (0, "X"), "c1": (10, "C"), "d1": (10, "D"), "e30": (30, "E")}
    store, run = _artist_store(tmp_path / "store", points)
    seed = [collection_query(store, store.track("S.wav").id)]
    assert [t.title for t in radio(store, run, seed, 3, window=1, norm="none", ranking="plain").tracks] == ["c1", "e30"]
    assert [t.title for t in radio(store, run, seed, 1, window=1, norm="none", ranking="plain").tracks] == ["c1"]
    store.close()


def test_radio_keeps_the_songs_after_it_a_window_apart_unless_it_would_run_short(tmp_path: Path) -> None:
    """Seed S by X; a5 (A) is closer than b10 (B). With A's song playing after the radio, a radio of 1 takes b10 (A
    back to back otherwise); of 2, b10 then a5 would put A next to A: a5, b10. Without b10 the radio still holds a5."""
    points = {"S": (0, "X"), "a5": (5, "A"), "b10": (10, "B")}
    store, run = _artist_store(tmp_path / "store", points)
    seed = [collection_query(store, store.track("S.wav").id)]
    a = artist_key(store.track("a5.wav"))

    def titles(n: int, **options) -> list[str]:
        return [t.title for t in radio(store, run, seed, n, window=1, norm="none", ranking="plain", **options).tracks]

    assert titles(1) == ["a5"] and titles(1, following=[a]) == ["b10"]
    assert titles(2, following=[a]) == ["a5", "b10"]
    assert titles(1, following=[a], exclude=frozenset({store.track("b10.wav").id})) == ["a5"]
    store.close()
