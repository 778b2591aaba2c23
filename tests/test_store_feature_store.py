"""FeatureStore's catalog queries, read in-process on a real store: tracks found by name, failures, runs, the aspect
map and derived sets. Expected answers come from the fixture's own geometry (which file has which name, content and
vectors), from hashlib and from numpy."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mess.constants import legacy_stamp
from mess.store import FeatureStore, Run, RunKey, StoreDamaged, StoreError, TrackFailed, TrackVectors
from mess.store.aspects import track_set_digest
from mess.store.errors import DerivedRewritten


def _file(store: FeatureStore, path: str, content_hash: str) -> int:
    return store.upsert_track(Path(path), content_hash, 10, 1.0, {}, {})


def test_a_file_name_is_matched_in_its_own_case_before_any_other(tmp_path: Path) -> None:
    """SQLite's LIKE ignores ASCII case: `mess similar intro.ogg` was refused as naming two tracks (listing
    'Intro.ogg', another file) though one file alone is named intro.ogg."""
    store = FeatureStore(tmp_path)
    upper = _file(store, "/m/a/Intro.ogg", "h1")
    lower = _file(store, "/m/b/intro.ogg", "h2")
    assert store.track("intro.ogg").id == lower and store.track("Intro.ogg").id == upper
    theme = _file(store, "/m/c/Theme.OGG", "h3")
    assert store.track("theme.ogg").id == theme  # no file of that exact name: a name in another case still finds it
    _file(store, "/m/d/THEME.ogg", "h4")
    with pytest.raises(StoreError, match="2 tracks are named 'theme.ogg'"):
        store.track("theme.ogg")
    store.close()


def test_a_track_is_found_by_id_path_name_and_another_unicode_form_and_unknown_refs_are_refused(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    first = _file(store, "/m/a/one.ogg", "h1")
    nfd = _file(store, unicodedata.normalize("NFD", "/m/b/Café.ogg"), "h2")
    latin1 = _file(store, os.fsdecode(b"/m/c/caf\xe9.ogg"), "h3")
    assert [t.id for t in store.tracks()] == [first, nfd, latin1] and len({first, nfd, latin1}) == 3
    assert store.track(first).path == "/m/a/one.ogg" and store.track(str(nfd)).id == nfd
    assert store.track(Path("/m/a/one.ogg")).id == first and store.track("one.ogg").id == first
    assert store.track(unicodedata.normalize("NFC", "Café.ogg")).id == nfd  # typed composed, saved decomposed
    assert store.track(unicodedata.normalize("NFC", "/m/b/Café.ogg")).id == nfd
    assert store.track(os.fsdecode(b"caf\xe9.ogg")).id == latin1
    assert store.find("9" * 19) is None and store.find("999") is None and store.find("two.ogg") is None
    with pytest.raises(StoreError, match="unknown track 'two.ogg'"):
        store.track("two.ogg")
    for i in range(6):
        _file(store, f"/m/many{i}/x.ogg", f"x{i}")
    with pytest.raises(StoreError, match=r"6 tracks are named 'x.ogg' \(.*/m/many4/x.ogg; \.\.\.\)"):
        store.track("x.ogg")
    store.close()


def test_a_track_s_name_is_artist_and_title_else_its_file_title(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    tagged = store.upsert_track(Path("/m/a.flac"), "h1", 1, 1.0, {}, {"artist": "Bach", "title": "Air"})
    untitled = store.upsert_track(Path("/m/b.flac."), "h2", 1, 1.0, {}, {"artist": "Bach"})
    bare = store.upsert_track(Path(os.fsdecode(b"/m/caf\xe9.wav")), "h3", 1, 1.0, {}, {})
    names = [store.track(i).name for i in (tagged, untitled, bare)]
    assert names == ["Bach - Air", "Bach - b", "caf\\xe9"]
    assert store.track(tagged).label("title") == "Air" and store.track(bare).label("artist") is None
    store.close()


def _run(store: FeatureStore, revision: str = "r1", dims: tuple[int, ...] = (2, 3)) -> Run:
    return store.ensure_run(RunKey("toy", revision, "{}", 16000, tuple(f"l{i}" for i in range(len(dims))), dims))


def _embed(store: FeatureStore, run: Run, *hashes: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    items = []
    for h in hashes:
        segments = [rng.standard_normal((2, d)).astype(np.float32) for d in run.layer_dims]
        items.append(TrackVectors(h, [s.mean(axis=0) for s in segments], segments, [0.0, 1.5]))
    store.write_vectors(run, items)


def test_failures_follow_the_files_of_their_content_and_unread_files_by_path(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run, other = _run(store), _run(store, "r2")
    odd = os.fsdecode(b"/m/caf\xe9.ogg")
    broken, copy = _file(store, odd, "hb"), _file(store, "/m/copy.ogg", "hb")
    fine, pending = _file(store, "/m/fine.ogg", "hf"), _file(store, "/m/pending.ogg", "hp")
    _embed(store, run, "hf")
    store.record_failure(run, "hb", odd, f"{odd}: cannot decode (bad header)")
    store.record_failure(run, "", "/m/gone.ogg", "/m/gone.ogg: no such file")
    store.record_failure(other, "", "/m/gone.ogg", "/m/gone.ogg: permission denied")
    assert store.failures(run) == [
        ("/m/copy.ogg", "/m/copy.ogg: cannot decode (bad header)"),
        (odd, "/m/caf\\xe9.ogg: cannot decode (bad header)"),
        ("/m/gone.ogg", "/m/gone.ogg: no such file"),
    ]
    assert store.failure(run, store.track(copy)) == "cannot decode (bad header)"
    assert store.failure(run, store.track(fine)) is None and store.failure(other, store.track(broken)) is None
    assert store.unembedded(run) == ["/m/pending.ogg"] and store.unembedded(other) == [
        odd,
        "/m/copy.ogg",
        "/m/fine.ogg",
        "/m/pending.ogg",
    ]
    assert store.unread_paths() == ["/m/gone.ogg"]
    assert store.unread_failure("gone.ogg") == ("/m/gone.ogg", "permission denied")  # the latest, in any run
    assert store.unread_failure("/m/gone.ogg") == ("/m/gone.ogg", "permission denied")
    assert store.unread_failure("fine.ogg") is None
    with pytest.raises(
        TrackFailed, match="/m/gone.ogg failed to extract, so it is not in the collection: permission"
    ) as err:
        store.track("gone.ogg")
    assert err.value.path == "/m/gone.ogg"
    with pytest.raises(StoreError, match="unknown track 'pending'"):
        store.track("pending")
    _embed(store, run, "hp", "hb")  # embedded at last: their failures go
    assert store.failures(run) == [("/m/gone.ogg", "/m/gone.ogg: no such file")] and store.unembedded(run) == []
    _file(store, "/m/gone.ogg", "hg")  # readable now: its unread failures go, in every run
    assert store.failures(run) == [] and store.unread_paths() == [] and store.failures(other) == []
    assert [t.id for t in store.tracks(run)] == [broken, copy, fine, pending]
    store.record_failure(other, "", "/m/lost.ogg", "/m/lost.ogg: gone")
    store.forget_unread(["/m/lost.ogg"])
    assert store.unread_paths() == [] and store.unread_failure("lost.ogg") is None
    store.close()


def test_a_model_answers_from_the_run_covering_most_tracks_the_newest_of_equals_or_the_run_picked(
    tmp_path: Path,
) -> None:
    store = FeatureStore(tmp_path)
    for i in range(3):
        _file(store, f"/m/{i}.ogg", f"h{i}")
    first, second = _run(store, "r1"), _run(store, "r2")
    other = store.ensure_run(RunKey("dsp", "r1", "{}", 16000, ("x",), (2,)))
    assert _run(store, "r1") == first and [r.id for r in store.runs()] == [first.id, second.id, other.id]
    _embed(store, first, "h0", "h1")
    _embed(store, second, "h2", "not-catalogued", "nor-this")  # vectors of no catalogued file count for nothing
    assert store.run("toy") == first and store.model_option(first) == "toy"
    assert store.model_option(second) == f"toy@{second.id}"
    _embed(store, second, "h1")
    assert store.run("toy") == second and store.run("TOY") == second  # as many tracks: the newer run
    assert store.run(f"toy@{first.id}") == first and store.run(f"run:{other.id}") == other
    with pytest.raises(StoreError, match=f"run {other.id} is a dsp run, not toy's; toy's runs: toy@1, toy@2"):
        store.run(f"toy@{other.id}")
    with pytest.raises(StoreError, match="no run 9 in this store; its runs: toy@1, toy@2, dsp@3"):
        store.run("run:9")
    with pytest.raises(StoreError, match=r"no vectors for model 'mert' in .*; extracted models: \['dsp', 'toy'\]"):
        store.run("mert")
    with pytest.raises(
        StoreError, match=r"now makes layers of sizes \[2, 4\] at 16000 Hz, but its run 1 here holds \[2, 3\]"
    ):
        store.ensure_run(RunKey("toy", "r1", "{}", 16000, ("l0", "l1"), (2, 4)))
    with pytest.raises(StoreError, match=r"gives layers of sizes \[2, 0\]; every layer needs values"):
        store.ensure_run(RunKey("toy", "r3", "{}", 16000, ("l0", "l1"), (2, 0)))
    assert len(store.runs()) == 3
    store.close()


def test_no_run_at_all_says_extract_first(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    with pytest.raises(StoreError, match="no vectors in .* yet; run `mess extract` first"):
        store.run()
    with pytest.raises(StoreError, match=r"no run 1 in this store; its runs: none \(run `mess extract` first\)"):
        store.run("run:1")
    store.close()


def test_a_layer_is_named_by_name_index_or_negative_index_within_the_run(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = _run(store, dims=(2, 3, 4))
    assert [run.layer_index(x) for x in ("l0", "l2", 1, "1", -1, "-3")] == [0, 2, 1, 1, 2, 0]
    for bad in (3, "-4"):
        with pytest.raises(StoreError, match="out of range; toy has 3 layers"):
            run.layer_index(bad)
    with pytest.raises(StoreError, match="unknown layer 'l3'; toy has l0, l1, l2"):
        run.layer_index("l3")
    for odd in (" 1", "1 ", "+1", "1_0", "\u0661", "\uff11", "- 1"):  # int() reads each as a number
        with pytest.raises(StoreError, match=re.escape(f"unknown layer {odd!r}")):
            run.layer_index(odd)
    store.close()


def test_the_aspect_map_of_a_run_is_replaced_whole_and_read_with_its_probe_s_stamps(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run, other = _run(store), _run(store, "r2")
    for i, h in enumerate(["hb", "ha", "hb"]):  # a copy: its content counts twice
        _file(store, f"/m/{i}.ogg", h)
    _embed(store, run, "ha", "hb")
    digest = hashlib.sha256(b"ha\nhb\nhb").hexdigest()[:16]
    assert store.tracks_digest(run) == digest and track_set_digest(store.tracks(run)) == digest
    assert store.tracks_digest(other) == hashlib.sha256(b"").hexdigest()[:16]
    never = (store.aspect_map(run), store.aspect_scores(run), store.aspect_map_digest(run))
    assert never == ({}, {}, None) and (store.aspect_map_probed_at(run), store.aspect_map_tracks(run)) == (None, None)
    store.set_aspect_map(
        run, [("tempo", "l1", 0.5, 0.1), ("key", "l0", 0.25, 0.0)], n_tracks=3, probed_at=12.5, tracks_digest=digest
    )
    assert store.aspect_map(run) == {"key": "l0", "tempo": "l1"} and list(store.aspect_map(run)) == ["key", "tempo"]
    assert store.aspect_scores(run) == {"key": 0.25, "tempo": 0.5}
    assert (store.aspect_map_digest(run), store.aspect_map_probed_at(run), store.aspect_map_tracks(run)) == (
        digest,
        12.5,
        3,
    )
    assert store.aspect_map(other) == {} and store.aspect_map_tracks(other) is None
    store.set_aspect_map(run, [("loudness", "l0", 0.75, 0.2)])  # replaced whole; its stamps not recorded
    assert store.aspect_map(run) == {"loudness": "l0"} and store.aspect_scores(run) == {"loudness": 0.75}
    assert (store.aspect_map_digest(run), store.aspect_map_probed_at(run), store.aspect_map_tracks(run)) == (
        None,
        None,
        None,
    )
    store.close()


def test_derived_sets_are_written_by_row_read_finite_listed_by_name_and_dropped(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run, other = _run(store), _run(store, "r2")
    ids = [_file(store, f"/m/{i}.ogg", f"h{i}") for i in range(4)]
    _embed(store, run, "h2", "h0", "h1")  # rows 0, 1, 2 in this order
    vectors = np.arange(8, dtype=np.float32).reshape(4, 2) - 3  # small integers: exact in float16
    store.write_derived(run, "fused", ["h0", "h1", "h2", "gone"], vectors, {"trained_on": "x"})
    assert store.track_rows(run) == {"h2": 0, "h0": 1, "h1": 2}
    got_ids, got = store.derived_matrix(run, "fused")
    assert got_ids.tolist() == ids[:3] and np.array_equal(got, vectors[:3]) and got.dtype == np.float32
    meta = store.derived_meta(run, "fused")
    assert meta is not None and (meta["trained_on"], meta["rows"]) == ("x", 3)
    assert store.derived_path(run, "fused").name == meta["file"] and store.derived_path(run, "fused").exists()
    assert store.derived_sizes(run) == [("fused", 3, 3)] and store.derived_missing(run, "fused") == 0
    _embed(store, run, "h3")  # added since: missing from the set
    assert store.derived_missing(run, "fused") == 1 and store.derived_matrix(run, "fused")[0].tolist() == ids[:3]
    store.write_derived(run, "aaa", ["h0", "h1"], np.ones((2, 5), dtype=np.float32), {})
    assert [(name, f.dim) for name, f, _ in store.derived_sets(run)] == [("aaa", 5), ("fused", 2)]
    assert store.derived_sizes(run) == [("aaa", 4, 4), ("fused", 3, 3)]
    assert store.derived_missing(run, "aaa") == 2  # rows of h2 and h3 are blank
    assert store.derived_elsewhere(other, "fused", "--model ") == (
        f"toy@{run.id} has them: pick one with --model toy@{run.id}, or "
    )
    assert store.derived_elsewhere(run, "fused", "--model ") == ""
    with pytest.raises(
        StoreError,
        match=f"no 'fused' vectors for toy; toy@{run.id} has them: pick one with "
        f"--model toy@{run.id}, or run `mess fuse train`",
    ):
        store.derived_matrix(other, "fused")
    store.drop_derived(run, "aaa")
    assert [s[0] for s in store.derived_sets(run)] == ["fused"] and store.derived_meta(run, "aaa") is None
    assert sorted(p.name for p in store.derived_path(run, "fused").parent.iterdir()) == [meta["file"]]
    store.close()


def test_vectors_of_other_sizes_than_the_run_s_layers_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A track vector of 4 values for a layer of 2 was written as two rows (the next file's row then held its second
    half, and reads called the store damaged); one of 3 values was refused as 'rows the file lacks: run mess check
    --repair', and windows fewer than their start times left the catalog pointing past the row file."""
    store = FeatureStore(tmp_path)
    run = _run(store, dims=(2, 2))
    for i in range(2):
        _file(store, f"/m/{i}.ogg", f"h{i}")
    fine = TrackVectors("h1", [np.ones(2, np.float32)] * 2, [np.ones((1, 2), np.float32)] * 2, [0.0])
    bad = [
        TrackVectors("h0", [np.ones(4, np.float32)] * 2, [np.ones((1, 2), np.float32)] * 2, [0.0]),
        TrackVectors("h0", [np.ones(3, np.float32)] * 2, [np.ones((1, 2), np.float32)] * 2, [0.0]),
        TrackVectors("h0", [np.ones(2, np.float32)] * 2, [np.ones((1, 2), np.float32)] * 2, [0.0, 1.5]),
        TrackVectors("h0", [np.ones(2, np.float32)] * 2, [np.ones((1, 4), np.float32)] * 2, [0.0]),
        TrackVectors("h0", [np.ones(2, np.float32)], [np.ones((1, 2), np.float32)], [0.0]),  # one layer of two
    ]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "content h0 do not fit toy's layers of sizes [2, 2] (track vectors of shapes [(4,), (4,)], windows of "
            "shapes [(1, 2), (1, 2)] for 1 start times)"
        ),
    ):
        store.write_vectors(run, [fine, bad[0]])
    for item in bad:
        with pytest.raises(ValueError, match="vectors for content h0 do not fit"):
            store.write_vectors(run, [fine, item])
        assert not store.has_vectors(run, "h1") and store.catalog_rows(run) == (0, 0)
        assert not store.row_file(run, "track", 0).path.exists()
    store.write_vectors(run, [fine])
    assert store.layer_matrix(run, "l1")[1].tolist() == [[1.0, 1.0]] and store.catalog_rows(run) == (1, 1)
    store.close()


def test_rewriting_or_dropping_a_derived_set_touches_the_files_of_that_set_alone(tmp_path: Path) -> None:
    """Files were found by the glob 'NAME.*f16': rewriting 'fused' deleted the file of a set named 'fused.v2' (read
    next as 'rewritten twice while read'), and a name holding glob characters ('f[u]sed') never had its older files
    deleted."""
    store = FeatureStore(tmp_path)
    run = _run(store)
    _file(store, "/m/0.ogg", "h0")
    _embed(store, run, "h0")
    names = ["fused.v2", "fused", "f[u]sed", "fused"]
    for value, name in enumerate(names):
        store.write_derived(run, name, ["h0"], np.full((1, 3), value, dtype=np.float32), {})
    for value in (8, 9):  # rewritten twice: its first file goes
        store.write_derived(run, "f[u]sed", ["h0"], np.full((1, 3), value, dtype=np.float32), {})
    assert store.derived_matrix(run, "fused.v2")[1].tolist() == [[0.0] * 3]
    assert store.derived_matrix(run, "fused")[1].tolist() == [[3.0] * 3]
    assert store.derived_matrix(run, "f[u]sed")[1].tolist() == [[9.0] * 3]
    folder = store.derived_path(run, "fused").parent
    on_disk = sorted(p.name for p in folder.iterdir())
    assert len(on_disk) == 5  # each set's file and, for the rewritten ones, the one it replaced
    assert sum(n.startswith("f[u]sed.") for n in on_disk) == 2 and sum(n.startswith("fused.v2.") for n in on_disk) == 1
    store.drop_derived(run, "fused")
    assert sorted(p.name for p in folder.iterdir()) == [
        n for n in on_disk if n.split(".")[0] != "fused" or n.startswith("fused.v2.")
    ]
    assert store.derived_matrix(run, "fused.v2")[1].tolist() == [[0.0] * 3]
    store.close()


def test_all_layers_stack_each_track_s_vectors_as_stored_and_refuse_layers_of_different_sizes(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run, uneven = _run(store, dims=(3, 3, 3)), _run(store, "r2", dims=(3, 2))
    ids = [_file(store, f"/m/{i}.ogg", f"h{i}") for i in range(3)]
    rng = np.random.default_rng(7)
    layers = {h: rng.standard_normal((3, 3)).astype(np.float32) for h in ("h2", "h0", "h1")}
    store.write_vectors(
        run, [TrackVectors(h, list(v), [v[i][None] for i in range(3)], [0.0]) for h, v in layers.items()]
    )
    got_ids, got = store.all_layers(run)
    assert got_ids.tolist() == ids and got.shape == (3, 3, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.stack([layers[f"h{i}"] for i in range(3)]).astype(np.float16))
    with pytest.raises(StoreError, match=r"toy layers have different sizes \(3, 2\); read them one by one"):
        store.all_layers(uneven)
    store.close()


def _poke(path: Path, dim: int, row: int, value: float | None = None) -> None:
    """Write ``value`` over the first number of ``row`` in a float16 row file; None: flip its lowest bit."""
    with path.open("r+b") as f:
        f.seek(row * dim * 2)
        old = f.read(2)
        f.seek(row * dim * 2)
        f.write(np.float16(value).tobytes() if value is not None else bytes([old[0] ^ 1, old[1]]))


def test_rows_changed_on_disk_are_damage_naming_the_tracks_whose_rows_they_are(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = _run(store, dims=(2, 3))
    ids = [_file(store, f"/m/{i}.ogg", f"h{i}") for i in range(3)]
    _embed(store, run, "h2", "h0", "h1")  # track rows 0, 1, 2; window rows 0-1, 2-3, 4-5
    track_l1 = store.row_file(run, "track", 1)
    _poke(track_l1.path, 3, 1, np.inf)  # h0's vector of layer l1
    with pytest.raises(StoreDamaged, match=rf"non-finite toy vectors \(layer l1\) for track ids \[{ids[0]}\]"):
        store.layer_matrix(run, "l1")
    assert store.layer_matrix(run, "l0")[0].tolist() == ids  # the other layer reads
    _poke(track_l1.path, 3, 1, 0.5)  # finite, but not what was written
    with pytest.raises(StoreDamaged, match=rf"track vectors \(layer l1\) of track ids \[{ids[0]}\] differ from their "):
        store.layer_matrix(run, 1)
    segments = store.row_file(run, "segment", 0)
    _poke(segments.path, 2, 5)  # the second window of h1
    with pytest.raises(StoreDamaged, match=rf"segment vectors \(layer l0\) of track ids \[{ids[1]}\] differ from"):
        store.segment_matrix(run, "l0")
    _poke(segments.path, 2, 5)  # flipped back: as written
    seg_ids, starts, mat = store.segment_matrix(run, "l0")
    assert seg_ids.tolist() == [ids[0]] * 2 + [ids[1]] * 2 + [ids[2]] * 2 and starts.tolist() == [0.0, 1.5] * 3
    assert mat.shape == (6, 2)
    with store.db:
        store.db.execute("UPDATE vectors SET seg_row=3 WHERE content_hash='h1'")  # h0's second window is h1's first
    with pytest.raises(StoreDamaged, match="two files' toy window vectors point at the same rows"):
        store.segment_matrix(run, "l1")
    store.close()


def test_damage_names_the_first_five_tracks_and_a_row_file_cut_below_the_catalog_refuses_writes(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = _run(store, dims=(2, 3))
    ids = [_file(store, f"/m/{i}.ogg", f"h{i}") for i in range(7)]
    _embed(store, run, *(f"h{i}" for i in range(7)))  # track row i, windows 2i and 2i + 1
    track_l0, windows_l1 = store.row_file(run, "track", 0), store.row_file(run, "segment", 1)
    for row in range(1, 7):
        _poke(track_l0.path, 2, row, np.nan)
        _poke(windows_l1.path, 3, 2 * row)
    listed = ", ".join(map(str, ids[1:6]))
    with pytest.raises(StoreDamaged, match=rf"for track ids \[{listed}\]; run"):
        store.layer_matrix(run, "l0")
    with pytest.raises(StoreDamaged, match=rf"of track ids \[{listed}\] differ from their checksums"):
        store.segment_matrix(run, "l1")
    with store.row_file(run, "track", 1).path.open("r+b") as f:
        f.truncate(5 * 3 * 2)  # 5 rows left of the 7 the catalog references
    _file(store, "/m/new.ogg", "new")
    with pytest.raises(StoreDamaged, match=r"row 7 is past the end \(5 rows\); the catalog references rows the file "):
        _embed(store, run, "new")
    assert not store.has_vectors(run, "new") and store.catalog_rows(run) == (7, 14)
    store.close()


def test_opening_names_what_stands_where_the_store_or_its_catalog_should_be(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_bytes(b"x")
    with pytest.raises(StoreError, match="file is a file, not a feature store folder"):
        FeatureStore(a_file)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(StoreError, match=r"dangling is a link to .*nowhere, which does not exist"):
        FeatureStore(tmp_path / "dangling")
    (tmp_path / "folder" / "catalog.sqlite").mkdir(parents=True)
    with pytest.raises(StoreDamaged, match=r"its catalog \(catalog.sqlite\) is a folder or a device, not a file"):
        FeatureStore(tmp_path / "folder")
    with pytest.raises(StoreError, match="no feature store at .*missing"):
        FeatureStore(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "catalog.sqlite").write_bytes(b"")  # a first writer's, before its tables
    with pytest.raises(StoreError, match="no feature store at .*new yet"):
        FeatureStore(tmp_path / "new", readonly=True)
    store = FeatureStore(tmp_path / "store")
    run = _run(store)
    _file(store, "/m/0.ogg", "h0")
    _embed(store, run, "h0")
    store.close()
    catalog = tmp_path / "store" / "catalog.sqlite"
    catalog.rename(tmp_path / "aside.sqlite")
    with pytest.raises(StoreDamaged, match=r"its catalog \(catalog.sqlite\) is missing but it holds vectors"):
        FeatureStore(tmp_path / "store")
    catalog.write_bytes(b"")
    with pytest.raises(StoreDamaged, match=r"its catalog \(catalog.sqlite\) is empty but it holds vectors"):
        FeatureStore(tmp_path / "store")
    assert catalog.stat().st_size == 0  # nothing made over it
    (tmp_path / "aside.sqlite").replace(catalog)
    FeatureStore(tmp_path / "store", readonly=True).close()
    for level in ("track", "segment"):
        (tmp_path / "store" / "runs" / str(run.id) / level / "001.f16").write_bytes(b"")
    with pytest.raises(
        StoreDamaged,
        match=r"store is damaged: toy track vectors of layer l1 hold 0 rows, the catalog "
        r"references 1 \(and 1 more problems\); run `mess check` for details",
    ):
        FeatureStore(tmp_path / "store")
    FeatureStore(tmp_path / "store", verify=False).close()  # opened unchecked


def test_a_run_s_model_source_is_replaced_whole_and_a_damaged_record_is_one_line(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run, other = _run(store), _run(store, "r2")
    assert store.model_source(run) is None
    store.set_model_source(run, {"file": "/models/x.onnx", "preset": "clap"})
    store.set_model_source(run, {"file": "/models/y.onnx"})
    assert store.model_source(run) == {"file": "/models/y.onnx"} and store.model_source(other) is None
    assert json.loads((tmp_path / "runs" / str(run.id) / "source.json").read_text()) == {"file": "/models/y.onnx"}
    for damaged in (b"{}", b'{"file": 1}', b"[]", b"\xff{", b'{"file": "x"'):
        store.model_source_path(run).write_bytes(damaged)
        with pytest.raises(
            StoreError,
            match=f"runs/{run.id}/source.json in the store at .*, the record of where toy's "
            "model file came from, is damaged; run `mess extract` with the model file again",
        ):
            store.model_source(run)
    store.model_source_path(other).mkdir(parents=True)
    with pytest.raises(
        StoreError, match=f"cannot read runs/{other.id}/source.json in the store at .* \\(Is a directory"
    ):
        store.model_source(other)
    store.close()


def test_a_file_s_record_is_updated_in_place_keeps_a_decoded_duration_and_tells_its_stamp(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    odd = Path(os.fsdecode(b"/m/caf\xe9.ogg"))
    tags = {"artist": "A", "album": None, "title": "T", "genre": None, "composer": None}
    first = store.upsert_track(odd, "h1", 10, 1.5, {"duration": 30.0, "sample_rate": 44100}, tags, stamp="s1")
    assert store.known_file(odd) == ("h1", "s1") and store.file_size_mtime(odd) == (10, 1.5)
    assert store.known_file(Path("/m/other.ogg")) is None and store.file_size_mtime(Path("/m/other.ogg")) is None
    store.set_duration("h1", 12.0)  # decoding found less audio than the header claims
    again = store.upsert_track(odd, "h1", 11, 2.5, {"duration": 30.0}, {**tags, "artist": "B"}, stamp="s2")
    copy = store.upsert_track(Path("/m/copy.ogg"), "h1", 11, 2.5, {"duration": 30.0}, {}, stamp="s3")
    other = store.upsert_track(Path("/m/new.ogg"), "h2", 5, 1.0, {"duration": 30.0}, {})
    assert again == first and len({first, copy, other}) == 3
    assert [(t.id, t.duration, t.artist) for t in store.tracks()] == [
        (first, 12.0, "B"),
        (copy, 12.0, None),
        (other, 30.0, None),
    ]
    assert store.known_file(odd) == ("h1", "s2") and store.file_size_mtime(odd) == (11, 2.5)
    assert store.known_file(Path("/m/new.ogg")) == ("h2", legacy_stamp(5, 1.0))  # no stamp: size and mtime
    assert store.remove_tracks([str(odd), "/m/never.ogg"]) == 1 and store.all_paths() == ["/m/copy.ogg", "/m/new.ogg"]
    back = store.upsert_track(odd, "h1", 11, 2.5, {"duration": 30.0}, {}, stamp="s2")
    assert back > other and store.all_paths() == ["/m/copy.ogg", "/m/new.ogg", str(odd)]  # a new id, never reused
    store.close()


def test_reads_in_a_snapshot_see_one_catalog_version_and_a_set_rewritten_meanwhile_is_read_again(
    tmp_path: Path,
) -> None:
    store, other = FeatureStore(tmp_path), FeatureStore(tmp_path)
    _file(store, "/m/0.ogg", "h0")
    with store.snapshot():
        assert store.all_paths() == ["/m/0.ogg"]  # the snapshot starts at its first read
        _file(other, "/m/1.ogg", "h1")  # another connection commits meanwhile
        with store.snapshot():  # nested: the same version
            assert store.all_paths() == ["/m/0.ogg"]
        assert store.all_paths() == ["/m/0.ogg"] and store.db.in_transaction
    assert store.all_paths() == ["/m/0.ogg", "/m/1.ogg"] and not store.db.in_transaction
    tries: list[int] = []

    def rewritten_until(n: int) -> Callable[[], int]:
        def read() -> int:
            tries.append(len(tries) + 1)
            if len(tries) < n:
                raise DerivedRewritten("rewritten twice while read")
            return len(store.all_paths())

        return read

    assert store.reading(rewritten_until(3)) == 2 and tries == [1, 2, 3]  # three reads in all
    tries.clear()
    with pytest.raises(DerivedRewritten):
        store.reading(rewritten_until(4))
    assert tries == [1, 2, 3] and not store.db.in_transaction
    tries.clear()
    with store.snapshot(), pytest.raises(DerivedRewritten):  # inside a snapshot: the outer reader reads again
        store.reading(rewritten_until(2))
    assert tries == [1]
    store.close()
    other.close()


def test_an_unread_file_is_found_by_its_path_though_another_shares_its_name(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = _run(store)
    store.record_failure(run, "", "/m/a/gone.ogg", "/m/a/gone.ogg: no such file")
    store.record_failure(run, "", "/m/b/gone.ogg", "/m/b/gone.ogg: permission denied")
    assert store.unread_failure("/m/a/gone.ogg") == ("/m/a/gone.ogg", "no such file")
    assert store.unread_failure("/m/b/gone.ogg") == ("/m/b/gone.ogg", "permission denied")
    assert store.unread_failure("gone.ogg") is None  # two of that name: neither
    with pytest.raises(StoreError, match="unknown track 'gone.ogg'"):
        store.track("gone.ogg")
    store.close()


def test_a_layer_of_one_value_is_a_layer(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = store.ensure_run(RunKey("loudness", "r1", "{}", 16000, ("db",), (1,)))
    _file(store, "/m/0.ogg", "h0")
    store.write_vectors(run, [TrackVectors("h0", [np.array([-12.0])], [np.array([[-12.0], [-11.0]])], [0.0, 3.0])])
    assert store.layer_matrix(run, "db")[1].tolist() == [[-12.0]]
    assert store.segment_matrix(run, 0)[2].tolist() == [[-12.0], [-11.0]]
    store.close()


def test_a_malformed_run_choice_or_a_default_model_without_vectors_is_a_store_error(tmp_path: Path) -> None:
    from mess.store.config import write_setting

    store = FeatureStore(tmp_path)
    run = _run(store)
    _file(store, "/m/0.ogg", "h0")
    _embed(store, run, "h0")
    for choice in ("toy@", "toy@x", "run:"):
        with pytest.raises(StoreError, match=f"'{choice}' names no model of this store and is no run choice"):
            store.run(choice)
    assert store.run() == run
    write_setting(tmp_path, "default-model", "mert")
    with pytest.raises(StoreError, match="default-model 'mert' \\(set by `mess config`\\) has no vectors"):
        store.run()
    assert store.run("toy") == run
    for i in range(5):
        _file(store, f"/m/{i}/x.ogg", f"x{i}")
    with pytest.raises(StoreError, match=r"5 tracks are named 'x.ogg' \(.*/m/4/x.ogg\); give"):  # all five: no '...'
        store.track("x.ogg")
    store.close()


def test_with_no_model_named_the_preferred_model_answers_though_another_covers_a_few_more_tracks(
        tmp_path: Path) -> None:
    """Files added since and extracted by a worse model alone do not demote the better one (it has handled 90% of
    the fullest run's files: see test_default_model_catchup.py for a better model that has not)."""
    from mess.store.config import MODEL_PREFERENCE, write_setting

    store = FeatureStore(tmp_path)
    better, worse = MODEL_PREFERENCE[0], MODEL_PREFERENCE[-1]
    preferred = store.ensure_run(RunKey(better, "r1", "{}", 16000, ("l0",), (2,)))
    fuller = store.ensure_run(RunKey(worse, "r1", "{}", 16000, ("l0",), (2,)))
    hashes = [f"h{i}" for i in range(10)]
    for i, h in enumerate(hashes):
        _file(store, f"/m/{i}.ogg", h)
    _embed(store, preferred, *hashes[:9])
    _embed(store, fuller, *hashes)
    assert store.run() == preferred and store.run(worse) == fuller
    write_setting(tmp_path, "default-model", worse)
    assert store.run() == fuller
    store.close()


def test_a_derived_set_whose_file_is_gone_is_said_rewritten_and_others_holding_it_are_named(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    runs = [_run(store, f"r{i}") for i in range(3)]
    _file(store, "/m/0.ogg", "h0")
    for run in runs:
        _embed(store, run, "h0")
    for run in runs[1:]:
        store.write_derived(run, "fused", ["h0"], np.ones((1, 2), dtype=np.float32), {})
    assert store.derived_elsewhere(runs[0], "fused", "model=") == (
        f"toy@{runs[1].id}, toy@{runs[2].id} have them: pick one with model=toy@{runs[1].id}, or "
    )
    store.derived_path(runs[1], "fused").unlink()
    with pytest.raises(DerivedRewritten, match=r"the fused vectors of toy are not where the catalog says \(fused\.\d+"):
        store.derived_matrix(runs[1], "fused")
    assert store.derived_matrix(runs[2], "fused")[1].tolist() == [[1.0, 1.0]]
    store.close()


def test_an_aspect_map_from_an_older_mess_reads_without_its_stamps(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = _run(store)
    store.set_aspect_map(run, [("tempo", "l1", 0.5, 0.1)], n_tracks=3, probed_at=12.5, tracks_digest="abc")
    store.close()
    with sqlite3.connect(tmp_path / "catalog.sqlite") as db:  # what an older mess wrote: none of the three columns
        for column in ("n_tracks", "probed_at", "tracks_digest"):
            db.execute(f"ALTER TABLE aspect_map DROP COLUMN {column}")
    old = FeatureStore(tmp_path, readonly=True)  # read-only: not migrated
    assert old.aspect_map(run) == {"tempo": "l1"} and old.aspect_scores(run) == {"tempo": 0.5}
    assert (old.aspect_map_digest(run), old.aspect_map_probed_at(run), old.aspect_map_tracks(run)) == (None, None, None)
    old.close()


def test_forgetting_derived_rows_blanks_those_rows_and_every_row_from_keep_on(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run, empty = _run(store), _run(store, "r2")
    ids = [_file(store, f"/m/{i}.ogg", f"h{i}") for i in range(4)]
    _embed(store, run, "h0", "h1", "h2", "h3")
    vectors = np.arange(8, dtype=np.float32).reshape(4, 2)
    for name in ("fused", "other"):
        store.write_derived(run, name, ["h0", "h1", "h2", "h3"], vectors, {"kind": name})
    assert store.forget_derived_rows(run, [1, 9], keep=3) == 4  # rows 1 and 3 of each set; row 9 is no row
    for name in ("fused", "other"):
        got_ids, got = store.derived_matrix(run, name)
        assert got_ids.tolist() == [ids[0], ids[2]] and got.tolist() == vectors[[0, 2]].tolist()
        assert store.derived_meta(run, name)["kind"] == name and {
            n: (rows, written) for n, rows, written in store.derived_sizes(run)
        }[name] == (3, 3)
    assert store.forget_derived_rows(run, [3], keep=5) == 0  # a row added since the sets were written: no row of theirs
    store.write_derived(empty, "fused", [], np.zeros((0, 2), dtype=np.float32), {})  # a run with no vectors yet
    got_ids, got = store.derived_matrix(empty, "fused")
    assert got_ids.tolist() == [] and got.shape == (0, 2) and store.derived_sizes(empty) == [("fused", 0, 0)]
    with pytest.raises(ValueError):  # as many vectors as contents, or nothing is written
        store.write_derived(run, "fused", ["h0", "h1", "h2"], vectors[:2], {})
    assert store.derived_matrix(run, "fused")[1].tolist() == vectors[[0, 2]].tolist()
    store.close()


def test_derived_rows_that_differ_from_their_checksums_name_the_first_five_tracks(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = _run(store)
    ids = [_file(store, f"/m/{i}.ogg", f"h{i}") for i in range(7)]
    _embed(store, run, *(f"h{i}" for i in range(7)))
    store.write_derived(run, "fused", [f"h{i}" for i in range(7)], np.ones((7, 2), dtype=np.float32), {})
    for row in range(1, 7):
        _poke(store.derived_path(run, "fused"), 2, row)
    listed = ", ".join(map(str, ids[1:6]))
    with pytest.raises(StoreDamaged, match=rf"toy fused vectors of track ids \[{listed}\] differ from their checksums"):
        store.derived_matrix(run, "fused")
    store.close()


def test_a_derived_vector_beyond_what_float16_holds_is_refused_and_the_stored_set_kept(tmp_path: Path) -> None:
    """A derived vector past float16's largest value was stored as infinity: the write passed and the set's reads
    then left that track out as if it had no vector (counted missing), where write_vectors refuses such vectors."""
    store = FeatureStore(tmp_path)
    run = _run(store)
    ids = [_file(store, f"/m/{i}.ogg", f"h{i}") for i in range(3)]
    _embed(store, run, "h0", "h1", "h2")
    before = np.arange(6, dtype=np.float32).reshape(3, 2)  # small integers: exact in float16
    store.write_derived(run, "fused", ["h0", "h1", "h2"], before, {})
    largest = float(np.finfo(np.float16).max)
    for bad in (2 * largest, np.inf, -np.inf, np.nan):
        vectors = before + 1
        vectors[1, 1] = bad
        with pytest.raises(ValueError, match="non-finite fused vectors for content h1"):
            store.write_derived(run, "fused", ["h0", "h1", "h2"], vectors, {})
        got_ids, got = store.derived_matrix(run, "fused")
        assert got_ids.tolist() == ids and np.array_equal(got, before)
    edge = before.copy()
    edge[2, 0] = -largest  # the largest value float16 holds is stored as it is
    store.write_derived(run, "fused", ["h0", "h1", "h2"], edge, {})
    got_ids, got = store.derived_matrix(run, "fused")
    assert got_ids.tolist() == ids and np.array_equal(got, edge) and store.derived_missing(run, "fused") == 0
    store.close()


def test_an_aspect_map_with_a_score_or_margin_not_a_number_is_refused_and_the_stored_map_kept(tmp_path: Path) -> None:
    """A NaN score reached SQLite as NULL: an sqlite3.IntegrityError (NOT NULL) escaped the store; an infinite one
    was stored and read back as a score no JSON answer can carry."""
    store = FeatureStore(tmp_path)
    run = _run(store)
    store.set_aspect_map(run, [("tempo", "l1", 0.5, 0.1)])
    for score, margin in ((float("nan"), 0.1), (float("inf"), 0.1), (0.5, float("nan")), (0.5, float("-inf"))):
        with pytest.raises(ValueError, match="aspect 'key'.*not a finite number"):
            store.set_aspect_map(run, [("tempo", "l1", 0.25, 0.0), ("key", "l0", score, margin)])
        assert store.aspect_map(run) == {"tempo": "l1"} and store.aspect_scores(run) == {"tempo": 0.5}
    store.close()


def test_a_name_typed_with_the_canonical_equivalent_of_a_singleton_finds_the_file(tmp_path: Path) -> None:
    """OHM SIGN and KELVIN SIGN normalise to GREEK CAPITAL OMEGA and 'K', which normalise to themselves: a name typed
    with one form for a file saved with the other was 'unknown track', since the lookup compared Unicode forms only
    for names whose composed and decomposed forms differ."""
    ohm, omega, kelvin = "\N{OHM SIGN}", "\N{GREEK CAPITAL LETTER OMEGA}", "\N{KELVIN SIGN}"
    assert unicodedata.normalize("NFC", ohm) == omega and unicodedata.normalize("NFC", kelvin) == "K"
    store = FeatureStore(tmp_path)
    saved_ohm = _file(store, f"/m/a/{ohm}mega.ogg", "h1")
    saved_kelvin = _file(store, f"/m/b/{kelvin}elvin.ogg", "h2")
    saved_k = _file(store, "/m/c/Kappa.ogg", "h3")
    assert store.track(f"{omega}mega.ogg").id == saved_ohm and store.track(f"/m/a/{omega}mega.ogg").id == saved_ohm
    assert store.track("Kelvin.ogg").id == saved_kelvin and store.track("/m/b/Kelvin.ogg").id == saved_kelvin
    assert store.track(f"{kelvin}appa.ogg").id == saved_k  # typed with the sign, saved with the letter
    assert store.track(f"{ohm}mega.ogg").id == saved_ohm and store.find("Omega.ogg") is None
    _file(store, f"/m/d/{omega}mega.ogg", "h4")  # both forms saved: a name typed in either is matched exactly
    assert store.track(f"{ohm}mega.ogg").id == saved_ohm and store.track(f"{omega}mega.ogg").id != saved_ohm
    store.close()
