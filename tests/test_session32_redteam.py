"""Defects a red-team session found using `mess` on a real, messy library (notes/redteam_session32.md)."""

from __future__ import annotations

from contextlib import closing
from dataclasses import replace
from pathlib import Path

import numpy as np
from test_store import INFO, _vectors, two_model_store

from conftest import mess_here
from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.store import FeatureStore
from mess.store.check import check_and_repair


def test_check_verdict_names_the_model_whose_files_wait(tmp_path: Path) -> None:
    """A folder extracted with musicnn but not dsp: `mess check`'s last line said "`mess extract` embeds them", but
    `mess extract` embeds the default model (musicnn), which has them all: the user ran it, got "0 embedded", and
    the check said the same again. The verdict now names the model whose run lacks them."""
    out = mess_here("check", "--store", str(two_model_store(tmp_path, 3, 3)))
    assert out.returncode == 0, out.stderr
    verdict = out.stdout.strip().splitlines()[-1]
    assert verdict.endswith("answers leave out the files named above: `mess extract FOLDER --model toy` embeds them"), \
        verdict


def test_a_repair_names_the_model_that_embeds_the_dropped_files_again(tmp_path: Path) -> None:
    """`mess check --repair` dropped a dsp file's damaged vectors and said "`mess extract` embeds them again", which
    embeds the default model only; it names the run's model now."""
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = store.ensure_run(run_key(replace(INFO, name="toy2"), WindowPolicy()))
        store.upsert_track(tmp_path / "a.wav", "h0", 10, 1.0, {"duration": 3.0},
                           {"artist": "x", "album": None, "title": None, "genre": None, "composer": None})
        store.write_vectors(run, [_vectors("h0", 2, 0)])
        path = store.row_file(run, "track", 0).path
        with path.open("r+b") as f:
            f.write(np.full(INFO.layer_dims[0], np.nan, "<f2").tobytes())
        _, done = check_and_repair(store)
    assert done == ["toy2 (run 1): dropped the vectors of 1 file; `mess extract FOLDER --model toy2` embeds them "
                    "again"], done


def _renamed(tmp_path: Path) -> FeatureStore:
    """A store of 4 contents, 5 names: ``old name.wav`` was renamed ``new name.wav`` and extracted again."""
    music = tmp_path / "music"
    music.mkdir()
    names = ["seed.wav", "a.wav", "old name.wav", "b.wav", "new name.wav"]
    hashes = ["hs", "ha", "hr", "hb", "hr"]  # the renamed file: one content under its old and new name
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = store.ensure_run(run_key(INFO, WindowPolicy()))
        for name, content in zip(names, hashes, strict=True):
            (music / name).write_bytes(b"RIFF")
            store.upsert_track(music / name, content, 10, 1.0, {"duration": 3.0},
                               {"artist": None, "album": None, "title": None, "genre": None, "composer": None})
        store.write_vectors(run, [_vectors(h, 2, i) for i, h in enumerate(dict.fromkeys(hashes))])
        (music / "old name.wav").unlink()  # renamed: `mv "old name.wav" "new name.wav"`, then `mess extract`
    return FeatureStore(tmp_path / "store", readonly=True)


def test_a_radio_plays_the_renamed_copy_on_disk_not_the_vanished_name(tmp_path: Path) -> None:
    """A file renamed and extracted again is catalogued under both names (one content): the radio picked the old
    name, whose file is gone, wrote it into the playlist (a player stops there) and skipped the playable new name as
    its duplicate. Of tracks with one content, the radio now picks one whose file is on disk."""
    from mess.playlists.radio import radio
    from mess.search.query import collection_query

    with closing(_renamed(tmp_path)) as store:
        playlist = radio(store, store.runs()[0], [collection_query(store, 1)], n=10, ranking="plain")
    paths = [Path(t.path) for t in playlist.tracks]
    assert sorted(p.name for p in paths) == ["a.wav", "b.wav", "new name.wav"], paths
    assert all(p.is_file() for p in paths), paths


def test_a_sonic_path_goes_through_the_renamed_copy_on_disk(tmp_path: Path) -> None:
    """As the radio: `mess playlist path A B` stepped through the renamed file's old name (gone from disk) and
    never its new one; it takes the copy on disk now."""
    from mess.playlists.path import sonic_path

    with closing(_renamed(tmp_path)) as store:
        playlist = sonic_path(store, store.runs()[0], store.track(2), store.track(4), n=3)
    paths = [Path(t.path) for t in playlist.tracks]
    assert [p.name for p in paths] == ["a.wav", "new name.wav", "b.wav"], paths


def test_clusters_list_the_renamed_copy_on_disk_not_the_vanished_name(tmp_path: Path) -> None:
    """As the radio: `mess playlist clusters` listed a renamed file under both names, the old one gone from disk (a
    player stops there); the copy on disk stands for it now, and every other track is still in one cluster."""
    from mess.playlists.clusters import clusters

    with closing(_renamed(tmp_path)) as store:
        playlists = clusters(store, store.runs()[0], k=2, norm="none")
    paths = [Path(t.path) for p in playlists for t in p.tracks]
    assert sorted(p.name for p in paths) == ["a.wav", "b.wav", "new name.wav", "seed.wav"], paths


def test_extract_of_a_dangling_link_says_it_is_a_link(tmp_path: Path) -> None:
    """`mess extract song.ogg` of a link whose target is gone said "no such file or folder: song.ogg", while `ls`
    lists song.ogg (and the folder walk says "a link to a missing file"); it names the link and its target now."""
    (tmp_path / "song.ogg").symlink_to(tmp_path / "moved away.ogg")
    out = mess_here("extract", str(tmp_path / "song.ogg"), "--model", "dsp", "--store", str(tmp_path / "store"))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"{tmp_path / 'song.ogg'}: a link to {tmp_path / 'moved away.ogg'}, which is missing" in out.stderr, \
        out.stderr


def test_similar_of_a_dangling_link_says_it_is_a_link(tmp_path: Path) -> None:
    """`mess similar song.ogg` of a link whose target is gone said "unknown track 'song.ogg'" (as for a typo), while
    `ls` lists song.ogg; it names the link and its missing target now."""
    import pytest

    from mess.query.embed import resolve_query
    from mess.store import StoreError

    store_path = two_model_store(tmp_path, 3, 3)
    link = tmp_path / "music" / "song.ogg"
    link.symlink_to(tmp_path / "moved away.ogg")
    with closing(FeatureStore(store_path, readonly=True)) as store, pytest.raises(StoreError) as said:
        resolve_query(store, str(link), store.runs()[0])
    assert str(said.value) == f"{link}: a link to {tmp_path / 'moved away.ogg'}, which is missing", said.value


def test_an_outside_copy_of_a_track_scores_as_the_track_in_the_default_space(tmp_path: Path) -> None:
    """The same samples as a collection track, in a WAV outside the collection, scored 0.951 against it with musicnn
    in the default power-normalised space (1.000 per layer, 1.000 with z-scores): the store holds float16 vectors
    and the outside file's float32 ones kept the near-zero values float16 rounds away, which the signed fourth
    root raises to the collection's scale. Its vectors are rounded as stored now, so a copy is the track again."""
    from mess.search.query import query_unit
    from mess.search.vectors import VectorSpec, load_vectors

    rng = np.random.default_rng(0)
    layers = [np.abs(rng.standard_normal((12, d))) for d in INFO.layer_dims]
    for x in layers:  # units that fire on one track and barely on the others (float16 holds 0 for them there)
        x[:, :2] *= 1e-8
        x[5, :2] = 1e-3  # (12 tracks: fewer than 8 get no power normalisation)
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = store.ensure_run(run_key(INFO, WindowPolicy()))
        for i in range(12):
            store.upsert_track(tmp_path / f"{i}.wav", f"h{i}", 10, 1.0, {"duration": 3.0},
                               {"artist": None, "album": None, "title": None, "genre": None, "composer": None})
        store.write_vectors(run, [replace(_vectors(f"h{i}", 1, i), layers=[x[i].astype(np.float32) for x in layers],
                                          segments=[x[i:i + 1].astype(np.float32) for x in layers]) for i in range(12)])
        from mess.query.embed import external_query

        copy = external_query(store, run, "copy.wav", "another hash", [x[0].astype(np.float32) for x in layers])
        vs = load_vectors(store, run, VectorSpec.from_options(norm="power"), store.tracks(run))
        unit = vs.unit()[vs.rows(np.array([1]))[0]]
        assert float(query_unit(store, vs, copy) @ unit) > 0.9999, float(query_unit(store, vs, copy) @ unit)


def test_an_outside_copy_of_a_track_matches_it_window_by_window(tmp_path: Path) -> None:
    """As above with `--match segments`: the copy's window vectors were float32 too, 0.951 to the track it copies;
    they are rounded as stored now."""
    from mess.query.embed import external_query
    from mess.search.query import similar_tracks

    rng = np.random.default_rng(1)
    windows = [np.abs(rng.standard_normal((12, 2, d))) for d in INFO.layer_dims]  # 12 tracks x 2 windows
    for x in windows:  # units that fire on one track and barely on the others (float16 holds 0 for them there)
        x[:, :, :2] *= 1e-8
        x[5, :, :2] = 1e-3
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = store.ensure_run(run_key(INFO, WindowPolicy()))
        for i in range(12):
            store.upsert_track(tmp_path / f"{i}.wav", f"h{i}", 10, 1.0, {"duration": 3.0},
                               {"artist": None, "album": None, "title": None, "genre": None, "composer": None})
        store.write_vectors(run, [replace(_vectors(f"h{i}", 2, i), layers=[x[i].mean(axis=0) for x in windows],
                                          segments=[x[i].astype(np.float32) for x in windows]) for i in range(12)])
        copy = external_query(store, run, "copy.wav", "another hash", [x[0].mean(axis=0) for x in windows],
                              [x[0].astype(np.float32) for x in windows])
        best = similar_tracks(store, run, copy, 1, norm="power", match="segments", ranking="plain")[0]
    assert best.track.id == 1 and best.score > 0.9999, (best.track.id, best.score)


def test_mpd_radio_seeds_from_a_song_renamed_since_extraction(rendered_collection: list[Path],
                                                              tmp_path: Path) -> None:
    """MPD played a file renamed after `mess extract` (same audio, new name): `mess mpd radio --music-dir` said it
    "is not in the collection of this store; run `mess extract`", while `mess playlist radio FILE` (and `mess
    similar FILE`) of that very file knew it by its content. It seeds the radio now, as the catalogued track."""
    from test_mpd import Library, _dsp_collection, _mpd

    from mess.playlists.radio import radio
    from mess.search.query import collection_query

    root = tmp_path.resolve()
    music, home, _ = _dsp_collection(root, rendered_collection[0:16:4])  # one piece per composer
    with closing(FeatureStore(root / "store", readonly=True)) as store:
        run = store.run("dsp")
        seed = store.track(str(music / rendered_collection[0].name))
        expected = [Path(t.path).name for t in radio(store, run, [collection_query(store, seed.id)], 2).tracks]
    (music / rendered_collection[0].name).rename(music / "renamed.flac")
    with _mpd(music, home) as port:
        library = Library(port, root, [p.name for p in music.iterdir()], "renamed.flac")
        library.set_queue(["renamed.flac"])
        out = library.radio("-n", "2", "--music-dir", str(music))
        assert out.exit_code == 0, out.output
        assert library.queue() == ["renamed.flac", *expected], out.output


def test_the_stdout_hint_of_clusters_is_a_command_that_works(tmp_path: Path) -> None:
    """`mess playlist clusters -o -` sent the user to "`mess playlist radio` or `path` and -o -", which fails
    ("unknown playlist extension '(none)' of /dev/stdout ... give the format"); the hint gives the format."""
    out = mess_here("playlist", "clusters", "-o", "-", "--store", str(tmp_path / "store"))
    assert out.returncode == 1 and "-o - --format m3u8" in out.stderr, out.stderr
