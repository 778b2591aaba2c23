"""Gaps the thirty-first session's mutation run found (notes/mutation_session31.md), in-process: fusion's checkpoint
refusals, `mess mpd radio`'s cap on the rounds it spends on tracks MPD lacks (against a real mpd), cli/common.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from rich.console import Console
from test_cli_common_mutation import said  # noqa: F401  (the fixture)
from test_fusion_algorithms import _untrained_result, clustered
from test_fusion_pipeline_mutation import N_LABELS, PER_LABEL, UNLABELLED, _store
from test_mpd import _mpd

from mess.audio.discover import content_hash
from mess.audio.windows import WindowPolicy
from mess.cli import common
from mess.fusion.train import CheckpointRefused, checkpoint_problem, save_checkpoint
from mess.playlists.mpd import PlayerError, connect, queue_radio
from mess.playlists.radio import radio
from mess.query import resolve_query
from mess.store import FeatureStore, RunKey, TrackVectors

# --- mess mpd radio: the rounds spent on tracks MPD lacks are capped -------------------------------------------

DIM, N_FAR, N_MORE = 16, 40, 254


@dataclass
class Lacking:
    """A real mpd over ``root/music`` (seed.wav, k1..k3.wav, r000..r253.wav) and twelve files
    ``root/outside/l00..l11.wav`` MPD lacks; stores over them are made by :func:`_lacking_store`."""

    port: int
    root: Path


def _tone(path: Path, hz: float, samples: int = 8000) -> Path:
    t = np.arange(samples) / 8000
    sf.write(path, (0.2 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 8000)
    return path


@pytest.fixture(scope="module")
def lacking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lacking]:
    root = tmp_path_factory.mktemp("lacking").resolve()
    for folder in ("music", "outside", "home"):
        (root / folder).mkdir()
    for i, name in enumerate(["seed", "k1", "k2", "k3"]):
        _tone(root / "music" / f"{name}.wav", 200 + 10 * i)
    for i in range(12):
        _tone(root / "outside" / f"l{i:02d}.wav", 400 + 10 * i)
    for i in range(N_MORE):
        _tone(root / "music" / f"r{i:03d}.wav", 600 + 5 * i, 800)
    with _mpd(root / "music", root / "home") as port:
        yield Lacking(port, root)


def _lacking_store(root: Path, name: str, distances: dict[str, float], far: int = N_FAR,
                   seed: str = "music/seed.wav") -> FeatureStore:
    """A store at ``root/name`` of ``seed`` and the files named in ``distances`` (under ``root``), each that
    far from the seed (a vector of norm 3) in a random direction, with ``far`` tracks of no file far from them all; a
    name in ``distances`` that is no file is catalogued all the same (a file deleted since extraction)."""
    rng = np.random.default_rng(31)
    centre = rng.normal(size=DIM)
    centre *= 3 / np.linalg.norm(centre)
    store = FeatureStore(root / name)
    run = store.ensure_run(RunKey("synthetic", "r1", WindowPolicy().to_json(), 16000, ("l0",), (DIM,)))
    items = []
    for i, (file, distance) in enumerate({seed: 0.0, **distances}.items()):
        path = root / file
        d = rng.normal(size=DIM)
        h = content_hash(path) if path.exists() else f"{i:064x}"
        size, mtime = (path.stat().st_size, path.stat().st_mtime) if path.exists() else (1, 0.0)
        store.upsert_track(path, h, size, mtime, {"duration": 1.0}, {})
        items.append((h, centre + distance * d / np.linalg.norm(d)))
    for i in range(far):
        h = f"f{i:063x}"
        store.upsert_track(root / "far" / f"f{i}.wav", h, 1, 0.0, {"duration": 1.0}, {})
        items.append((h, 2 * rng.normal(size=DIM)))
    store.write_vectors(run, [TrackVectors(h, [v.astype(np.float32)], [v[None, :].astype(np.float32)], [0.0])
                              for h, v in items])
    return store


def _radio_of_two(lacking: Lacking, store: FeatureStore,
                  monkeypatch: pytest.MonkeyPatch) -> tuple[list[Path], list[Path], list[str], list[Path], list[str]]:
    """The collection's radio of music/seed.wav (15 tracks, closest first); then `queue_radio` of 2 with seed.wav
    playing and k3.wav queued after it (the music folder given as ~/music, HOME being the fixture's root): its
    playlist, queued URIs and skipped files, and MPD's queue after it."""
    music = lacking.root / "music"
    monkeypatch.setenv("HOME", str(lacking.root))
    run = store.run("synthetic")
    query = resolve_query(store, music / "seed.wav", run)
    order = [Path(t.path) for t in radio(store, run, [query], 15).tracks]
    with connect("127.0.0.1", lacking.port) as client:
        client.clear()
        client.add("seed.wav")
        client.add("k3.wav")
        client.play(0)
        client.pause(1)
        playlist, uris, skipped = queue_radio(client, store, run, 2, music_dir=Path("~/music"))
        queue = [s["file"] for s in client.playlistinfo()]
    return order, [Path(t.path) for t in playlist.tracks], uris, skipped, queue


def test_mpd_radio_spends_at_most_eight_rounds_on_tracks_mpd_lacks(lacking: Lacking,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`queue_radio` computes the radio again without the tracks MPD's database lacked, at most 8 times: a radio of
    2 whose closest 12 but one lie outside MPD's folder queues the one MPD has and names the 8 it tried in their
    place (the rest of the collection is not walked through)."""
    outside = {f"outside/l{i:02d}.wav": 0.5 + 0.1 * i for i in range(12)}
    distances = {"music/k1.wav": 0.2, **outside, "music/k2.wav": 2.5}
    with closing(_lacking_store(lacking.root, "capped", distances)) as store:
        order, played, uris, skipped, queue = _radio_of_two(lacking, store, monkeypatch)
    music = lacking.root / "music"
    # the fixture's geometry: k1, then the outside files (normalised vectors: not in the order of their distances)
    assert order[0] == music / "k1.wav" and set(order[1:13]) == {lacking.root / p for p in outside}, order
    assert uris == ["k1.wav"] and queue == ["seed.wav", "k1.wav", "k3.wav"]  # the radio before what was queued
    assert skipped == order[1:9]  # eight rounds, one lacked track each
    assert played == [music / "k1.wav", order[8]]  # the eighth round's radio, its lacked track left unqueued


def test_mpd_radio_s_rounds_for_deleted_files_leave_those_for_lacked_ones_whole(
        lacking: Lacking, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the rounds spent leaving out files deleted since MPD's update counted toward the 8 for tracks MPD
    lacks. `mess mpd radio -n 2` whose closest were k1, then 3 deleted files, then 6 outside MPD's folder, then k2
    queued k1 alone, 5 named as skipped and the 6th cut short; it now queues k1 and k2, the 6 named as skipped."""
    gone = {f"music/gone{i}.wav": 0.3 + 0.05 * i for i in range(3)}
    outside = {f"outside/l{i:02d}.wav": 0.5 + 0.05 * i for i in range(6)}
    distances = {"music/k1.wav": 0.2, **gone, **outside, "music/k2.wav": 1.5}
    with closing(_lacking_store(lacking.root, "deleted", distances)) as store:
        order, played, uris, skipped, queue = _radio_of_two(lacking, store, monkeypatch)
    music = lacking.root / "music"
    before = order[1:order.index(music / "k2.wav")]  # the fixture's geometry: after k1, the deleted and outside files
    lacked = [p for p in before if p.parent.name == "outside"]
    assert order[0] == music / "k1.wav" and set(before) <= {lacking.root / p for p in (*gone, *outside)}, order
    assert len(before) >= 8 > len(lacked), [p.name for p in order]  # more rounds than 8, fewer lacked
    assert uris == ["k1.wav", "k2.wav"] and queue == ["seed.wav", "k1.wav", "k2.wav", "k3.wav"]
    assert skipped == lacked
    assert played == [music / "k1.wav", music / "k2.wav"]


def test_mpd_radio_in_random_mode_says_how_many_of_its_songs_play_in_order(lacking: Lacking) -> None:
    """MPD's priorities run 255 to 1: a radio of 257 songs queued in random mode notes that its first 255 play in
    order and the other 2 after them at random; one of 255 plays wholly in order, and outside random mode the
    priorities play no part: neither notes anything."""
    music = lacking.root / "music"
    names = ["k1.wav", "k2.wav", "k3.wav", *(f"r{i:03d}.wav" for i in range(N_MORE))]
    with closing(_lacking_store(lacking.root, "random", {f"music/{n}": 1.0 for n in names}, far=0)) as store, \
            connect("127.0.0.1", lacking.port) as client:
        run = store.run("synthetic")
        notes = {}
        for random, n in ((1, 257), (1, 255), (0, 257)):
            client.clear()
            client.add("seed.wav")
            client.random(random)
            client.play(0)
            client.pause(1)
            playlist, uris, _ = queue_radio(client, store, run, n, music_dir=music)
            assert len(uris) == n and len(client.playlistinfo()) == n + 1
            notes[random, n] = playlist.note
        client.random(0)
    assert notes[1, 257] == ("in MPD's random mode the first 255 play in order (its priorities run 255 to 1), the "
                             "other 2 after them in random order")
    assert notes[1, 255] == notes[0, 257] == ""


def test_mpd_radio_with_no_current_song_asks_for_one(lacking: Lacking) -> None:
    """MPD stopped with an empty queue (no current song): one line, the queue left empty."""
    with closing(_lacking_store(lacking.root, "stopped", {"music/k1.wav": 0.2}, far=0)) as store, \
            connect("127.0.0.1", lacking.port) as client:
        client.clear()
        with pytest.raises(PlayerError) as refused:
            queue_radio(client, store, store.run("synthetic"), 2)
        assert str(refused.value) == "MPD has no current song; play something first"
        assert client.playlistinfo() == []


def test_mpd_radio_of_tracks_mpd_has_none_of_leaves_the_queue_unchanged(lacking: Lacking) -> None:
    """A collection whose tracks but the seed all lie outside MPD's folder: one line saying MPD's database has none
    of them, the queue as it was."""
    outside = {f"outside/l{i:02d}.wav": 0.5 for i in range(4)}
    with closing(_lacking_store(lacking.root, "none", outside, far=0)) as store, \
            connect("127.0.0.1", lacking.port) as client:
        client.clear()
        client.add("seed.wav")
        client.play(0)
        client.pause(1)
        with pytest.raises(PlayerError) as refused:
            queue_radio(client, store, store.run("synthetic"), 2, music_dir=lacking.root / "music")
        assert str(refused.value) == ("MPD's database has none of the radio's tracks (update MPD's database?); "
                                      "the queue is unchanged")
        assert [s["file"] for s in client.playlistinfo()] == ["seed.wav"]


def test_mpd_radio_while_mpd_stopped_meanwhile_goes_to_the_end_of_the_queue(lacking: Lacking,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Another client ended the current song while the radio was computed (MPD now plays nothing): the radio is
    queued at the end of the queue, after the songs queued there."""
    import mess.playlists.mpd as player

    def meanwhile(*args: object, **kwargs: object) -> object:
        with connect("127.0.0.1", lacking.port) as other:
            other.delete(2)  # the seed, which MPD was playing, the queue's last song
        return radio(*args, **kwargs)

    monkeypatch.setattr(player, "radio", meanwhile)
    with closing(_lacking_store(lacking.root, "ended", {"music/k1.wav": 0.2}, far=0)) as store, \
            connect("127.0.0.1", lacking.port) as client:
        client.clear()
        for name in ("k2.wav", "k3.wav", "seed.wav"):
            client.add(name)
        client.play(2)
        client.pause(1)
        _, uris, _ = queue_radio(client, store, store.run("synthetic"), 1, music_dir=lacking.root / "music")
        assert uris == ["k1.wav"]
        assert [s["file"] for s in client.playlistinfo()] == ["k2.wav", "k3.wav", "k1.wav"]


def test_mpd_radio_of_a_store_whose_music_folder_is_not_mounted_here(lacking: Lacking) -> None:
    """The store's files lie in a folder not mounted on this machine (the music of a server whose MPD plays it,
    given as --music-dir): none is taken for a deleted file, and the radio is queued as MPD's database has it."""
    mount = lacking.root / "unmounted"
    with closing(_lacking_store(lacking.root, "unmounted-store", {"unmounted/k1.wav": 0.2}, far=0,
                                seed="unmounted/seed.wav")) as store, connect("127.0.0.1", lacking.port) as client:
        client.clear()
        client.add("seed.wav")
        client.play(0)
        client.pause(1)
        playlist, uris, skipped = queue_radio(client, store, store.run("synthetic"), 1, music_dir=mount)
        assert not mount.exists() and "no longer on disk" not in playlist.note and skipped == []
        assert uris == ["k1.wav"] and [s["file"] for s in client.playlistinfo()] == ["seed.wav", "k1.wav"]


# --- fusion: where a checkpoint may not be saved --------------------------------------------------------------


def test_a_folder_that_cannot_be_written_is_refused_by_name() -> None:
    """`mess fuse train --checkpoint RO/sub/net.pt` under a folder the user can read but not write is refused before
    training, naming the folder the checkpoint's own would be made in; one that anyone may write is not. Judged as
    a user who is not root (root passes every permission): as root the check runs in a child whose real user is
    nobody (os.access asks for it), in a temporary folder anyone may enter (pytest's own is its owner's alone)."""
    become = "os.setreuid(65534, 0); " if os.geteuid() == 0 else ""
    code = (f"import os, sys; from pathlib import Path; {become}from mess.fusion.train import checkpoint_problem; "
            "print(*(checkpoint_problem(Path(p)) for p in sys.argv[1:]), sep='\\n')")
    with tempfile.TemporaryDirectory(dir="/tmp") as top:  # /tmp, not $TMPDIR: every user may enter it
        os.chmod(top, 0o755)
        closed, open_ = Path(top) / "readonly", Path(top) / "open"
        for folder, mode in ((closed, 0o555), (open_, 0o777)):
            folder.mkdir()
            folder.chmod(mode)
        out = subprocess.run([sys.executable, "-c", code, str(closed / "sub" / "net.pt"), str(open_ / "net.pt")],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    assert out == f"the folder {closed} cannot be written; give the checkpoint a place that can\nNone\n"


def test_a_socket_at_the_checkpoint_s_name_is_refused_as_no_file(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket (a device, a pipe) at NAME.pt is said to be one, not read as a file that is no checkpoint, and
    save_checkpoint refuses it with that reason, writing nothing."""
    monkeypatch.chdir(tmp_path)  # a socket's path is short: bound by its relative name
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind("net.pt")
        path = Path("net.pt")
        why = f"{path} is a device or a pipe, not a file a checkpoint and its .json description can be saved to"
        assert checkpoint_problem(path) == why
        result = _untrained_result(clustered(n_labels=2, per_label=2).run)
        with pytest.raises(CheckpointRefused) as refused:
            save_checkpoint(result, path)
    assert refused.value.problem == why and str(refused.value) == f"cannot save a checkpoint at {path}: {why}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]


class _Runs:
    """A pickle that runs code when loaded without PyTorch's weights-only guard: it makes a folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def test_a_file_at_the_checkpoint_s_name_is_judged_without_running_its_code(tmp_path: Path) -> None:
    """Whether NAME.pt is a mess checkpoint (and may be replaced) is read with PyTorch's weights-only unpickler: a
    file of someone else's whose unpickling runs code (a pickle's __reduce__) runs nothing and is refused."""
    path, marker = tmp_path / "net.pt", tmp_path / "ran"
    torch.save(_Runs(marker), path)  # PyTorch's own format, as a user's weights are
    problem = checkpoint_problem(path)
    assert not marker.exists()
    assert problem == (f"it would replace {path}, which is not a mess fusion checkpoint; move that file or give the "
                       "checkpoint another name")


# --- cli/common.py --------------------------------------------------------------------------------------------


def test_an_aspect_asked_for_notes_an_aspect_map_probed_on_other_tracks(said: Console,  # noqa: F811
                                                                         tmp_path: Path) -> None:
    """`mess playlist radio --aspect A` notes an aspect map probed when the run had fewer tracks (44 now, 10 then);
    without --aspect, or with a map probed on the tracks there are now, nothing is said."""
    store, run = _store(tmp_path / "store")
    now = N_LABELS * PER_LABEL + 1 + UNLABELLED
    with closing(store):
        store.set_aspect_map(run, [("tempo", "l1", 0.5, 0.1)], n_tracks=10)
        common.stale_aspect_note(store, run, None)
        assert said.export_text() == ""
        common.stale_aspect_note(store, run, "tempo")
        assert said.export_text() == (f"note: aspect map from a probe of 10 tracks; {now} now: rerun "
                                      "`mess probe --model synthetic`\n")
        store.set_aspect_map(run, [("tempo", "l1", 0.5, 0.1)], n_tracks=now, tracks_digest=store.tracks_digest(run))
        common.stale_aspect_note(store, run, "tempo")
        assert said.export_text() == ""
