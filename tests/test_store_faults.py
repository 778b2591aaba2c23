"""Fault injection on real processes and real files: concurrent writers, kill -9, damaged stores, odd inputs.

Each case asserts what a user relies on: every good file embedded, vectors (and so
neighbours and scores) equal to a clean single-writer store, and one clear message
instead of a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from ports import served_at
from tones import write_tones

from conftest import mess_here
from mess.store import FeatureStore, Run, StoreDamaged, StoreError, catalog
from mess.store.lock import StoreLock

MESS = [sys.executable, "-m", "mess.cli"]
DSP = ["--model", "dsp", "--window", "4", "--max-windows", "3", "--batch-size", "2"]
EMBED = f"`mess extract FOLDER {' '.join(DSP[:6])}`"  # the advice that embeds files into the run DSP makes
Extracted = Callable[..., tuple[Path, Path]]  # the extracted_tones fixture: (shared music, a copy of its store)


def _mess(*args: str) -> subprocess.CompletedProcess:
    """`mess ARGS` run in this process (:func:`mess_here`): for what a command says and does to the store."""
    return mess_here(*args)


def _mess_process(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`mess ARGS` in a process of its own: where the process is the point (its environment, its start-up, a lock
    this process holds, a crash that must not take the tests with it)."""
    return subprocess.run(
        [*MESS, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def _tones(folder: Path, n: int, seconds: float = 5.0, sr: int = 22050, offset: int = 0) -> list[Path]:
    """Distinct harmonic tones, one file each."""
    def wave(i: int, t: np.ndarray) -> np.ndarray:
        f0 = 110 * 2 ** (i / 7)
        harmonics = sum(0.2 / h * np.sin(2 * np.pi * h * f0 * t) for h in (1, 2, 3))
        return harmonics * (1 + 0.5 * np.sin(2 * np.pi * t * (i + 1)))

    return write_tones(folder, n, seconds=seconds, sr=sr, wave=wave, first=offset)



def _extract_process(music: Path, store: Path, stdout: int = subprocess.PIPE) -> subprocess.Popen[str]:
    """`mess extract MUSIC` (dsp) into ``store`` started as a process of its own; its stderr (and stdout) piped."""
    return subprocess.Popen([*MESS, "extract", str(music), *DSP, "--store", str(store)], stdout=stdout,
                            stderr=subprocess.PIPE, text=True)

def _by_path(store_dir: Path, model: str = "dsp") -> dict[str, list[np.ndarray]]:
    """path -> [track vector of each layer, segment vectors of each layer] read back from a store."""
    store = FeatureStore(store_dir, readonly=True)
    try:
        with store.snapshot():
            return _read_all(store, store.run(model))
    finally:
        store.close()


def _read_all(store: FeatureStore, run: Run) -> dict[str, list[np.ndarray]]:
    paths = {t.id: t.path for t in store.tracks(run)}
    out: dict[str, list[np.ndarray]] = {p: [] for p in paths.values()}
    for layer in run.layer_names:
        ids, mat = store.layer_matrix(run, layer)
        for i, row in zip(ids, mat, strict=False):
            out[paths[int(i)]].append(row)
        seg_ids, _, segs = store.segment_matrix(run, layer)
        for i in np.unique(seg_ids):
            out[paths[int(i)]].append(segs[seg_ids == i])
    return out


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for path, arrays in want.items():
        assert len(got[path]) == len(arrays)
        for a, b in zip(got[path], arrays, strict=False):
            np.testing.assert_array_equal(a, b, err_msg=path)


def _neighbours(store_dir: Path, query: Path) -> list[tuple[str, float]]:
    """`mess similar` of a file in the collection: (file name, score) of its neighbours."""
    out = _mess("similar", str(query), "-k", "5", "--json", "--store", str(store_dir))
    assert out.returncode == 0, out.stderr
    return [(r["path"].rsplit("/", 1)[-1], r["score"]) for r in json.loads(out.stdout)["results"]]


def _committed(store_dir: Path) -> int:
    try:
        with sqlite3.connect(catalog.uri(store_dir / "catalog.sqlite"), uri=True, timeout=0.1) as db:
            return db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    except sqlite3.Error:
        return 0


def _clean(music: Path, store_dir: Path) -> dict:
    out = _mess("extract", str(music), *DSP, "--store", str(store_dir))
    assert out.returncode == 0, out.stderr
    return _by_path(store_dir)


def _clean_tones(tone_templates: Callable[[int], tuple[Path, Path]], music: Path) -> dict:
    """What :func:`_clean` of ``music`` (default ``_tones`` in any folders under it) returns, without extracting them
    again: each file's vectors in the shared clean store of 60 tones, made by one `mess extract` with the same
    arguments. ``_tones`` writes tone i alike whatever its count, offset or folder, and the dsp vectors of a file
    do not depend on the files beside it."""
    music_60, store_60 = tone_templates(60)
    clean = {Path(p).name: arrays for p, arrays in _by_path(store_60).items()}
    files = sorted(music.rglob("*.wav"))
    for path in files:  # the same bytes as the template's tone of that name
        assert path.read_bytes() == (music_60 / path.name).read_bytes(), path
    return {str(p): clean[p.name] for p in files}


def _check_kinds(store: Path) -> tuple[int, list[str]]:
    """`mess check --json`: its exit status and the kinds of the problems it lists."""
    check = _mess("check", "--json", "--store", str(store))
    return check.returncode, [p["kind"] for p in json.loads(check.stdout)["problems"]]


def _repair_then_extract(music: Path, store: Path, dropped: int) -> str:
    """`mess check --repair` drops the vectors of ``dropped`` files and `mess extract` embeds them again; returns what
    the repair printed."""
    repaired = _mess("check", "--repair", "--store", str(store))
    files = f"{dropped} file{'s' * (dropped != 1)}"
    assert repaired.returncode == 0 and f"dropped the vectors of {files}" in repaired.stdout, repaired.stdout
    assert f"{dropped} embedded" in _mess("extract", str(music), *DSP, "--store", str(store)).stderr
    return repaired.stdout


def _stamps(folder: Path) -> dict[str, tuple[int, int, int, int]]:
    """name -> (size, mtime, inode, ctime) of each file in ``folder``: what `mess extract` compares to skip a file."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino, p.stat().st_ctime_ns)
            for p in sorted(folder.iterdir())}


@pytest.fixture(scope="session")
def tone_templates(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], tuple[Path, Path]]:
    """``tone_templates(n)``: (a folder of ``_tones(music, n)``, a clean store of it made by `mess extract` as in
    :func:`_clean` and not opened since: its WAL folded in), made once per session: under xdist the first worker to
    ask makes it and the others wait. Both are shared: read the music, never change it (checked on every use), and
    copy the store before changing it (:func:`extracted_tones`). The store records the music's absolute paths, so
    its copies point at the same files."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the session's folder under xdist
    made: dict[int, tuple[Path, Path, dict]] = {}

    def get(n: int) -> tuple[Path, Path]:
        if n not in made:
            root = shared / f"tone-template-{n}"
            with FileLock(f"{root}.lock"):
                if not (root / "complete").exists():
                    shutil.rmtree(root, ignore_errors=True)
                    _tones(root / "music", n)
                    made_by = _mess("extract", str(root / "music"), *DSP, "--store", str(root / "store"))
                    assert made_by.returncode == 0, made_by.stderr
                    assert not list((root / "store").glob("catalog.sqlite-*")), "the writer left its WAL behind"
                    (root / "complete").touch()
            made[n] = root / "music", root / "store", _stamps(root / "music")
        music, store, stamps = made[n]
        assert _stamps(music) == stamps, f"a test changed the shared music of {n} tones"
        return music, store

    return get


@pytest.fixture()
def extracted_tones(tone_templates: Callable[[int], tuple[Path, Path]], tmp_path: Path) -> Extracted:
    """``extracted_tones(n, name="store")``: (the shared music of n tones, ``tmp_path / name``: this test's own copy
    of their clean store, a whole store as `mess extract` leaves it). For a test that damages a store, not one that
    tests extraction or changes the music."""

    def copy(n: int, name: str = "store") -> tuple[Path, Path]:
        music, template = tone_templates(n)
        shutil.copytree(template, tmp_path / name)
        return music, tmp_path / name

    return copy


# ------------------------------------------------------------------ concurrent writers


def test_two_concurrent_extracts_equal_a_single_writer(rendered_collection: list[Path], tmp_path: Path) -> None:
    music = rendered_collection[0].parent
    reference = tmp_path / "single"
    want = _clean(music, reference)
    shared = tmp_path / "shared"
    procs = [_extract_process(music, shared) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert not any("Traceback" in err for _, err in outs)
    _assert_same(_by_path(shared), want)
    for query in rendered_collection[:3]:
        got, want_near = _neighbours(shared, query), _neighbours(reference, query)
        assert [name for name, _ in got] == [name for name, _ in want_near]  # scores: up to float32 summation order
        assert [score for _, score in got] == pytest.approx([score for _, score in want_near], abs=1e-5)
    check = _mess("check", "--store", str(shared), "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["ok"], check.stdout


def test_check_does_not_call_a_store_with_a_stale_index_ok(tmp_path: Path) -> None:
    music, store = tmp_path / "music", str(tmp_path / "store")
    _tones(music, 3)
    assert _mess("extract", str(music), *DSP, "--store", store).returncode == 0
    assert _mess("index", "--store", store).returncode == 0
    assert _mess("check", "--store", store).stdout.strip().endswith(": ok")  # results go to stdout
    _tones(music, 1, offset=3)[0].rename(music / "tone00.wav")  # new content: the saved index is stale
    assert _mess("extract", str(music), *DSP, "--store", store).returncode == 0
    check = _mess("check", "--store", store)
    assert check.returncode == 0 and "stale-index:" in check.stdout, check.stdout
    # the index and its augmentation file (`mess index` saves both by default)
    assert "2 index(es) out of date" in check.stdout and not check.stdout.strip().endswith(": ok"), check.stdout


def test_a_lost_catalog_is_reported_not_papered_over(extracted_tones: Extracted) -> None:
    """With catalog.sqlite gone, `check --repair` said ok after deleting the indexes, and `mess index` made an empty
    catalog over the vectors."""
    _, store = extracted_tones(3)
    assert _mess("index", "--store", str(store)).returncode == 0
    for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
        (store / name).unlink(missing_ok=True)
    indexes = sorted(p.name for p in (store / "indexes").iterdir())
    for args in (["check"], ["check", "--repair"], ["index"], ["similar", "tone01.wav"], ["info"]):
        out = _mess(*args, "--store", str(store))
        assert out.returncode == 1 and "catalog (catalog.sqlite) is missing" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    assert not (store / "catalog.sqlite").exists() and sorted(p.name for p in (store / "indexes").iterdir()) == indexes


def test_one_repair_also_deletes_the_indexes_it_makes_stale(extracted_tones: Extracted) -> None:
    _, store = extracted_tones(3)
    assert _mess("index", "--store", str(store)).returncode == 0
    row_file = store / "runs" / "1" / "track" / "000.f16"
    raw = bytearray(row_file.read_bytes())
    raw[0:2] = np.array([np.nan], dtype=np.float16).tobytes()  # a NaN in the first track's vector
    row_file.write_bytes(bytes(raw))
    repaired = _mess("check", "--repair", "--store", str(store))
    assert repaired.returncode == 0 and "deleted stale index" in repaired.stdout, repaired.stdout
    verdict = repaired.stdout.strip().splitlines()[-1]  # whole (it took a second `check --repair`) but for the file
    advice = f": whole, answers leave out the files named above: {EMBED} embeds them"
    assert verdict.endswith(advice), verdict


def test_a_full_disk_ends_the_run_in_one_line_and_blames_no_file(tmp_path: Path) -> None:
    """The store's disk filling up mid-run (here: a file-size limit, so no mount is needed) ended in a traceback from
    sqlite, or recorded a good file as failed with the disk's error as its reason."""
    import resource

    music, store = tmp_path / "music", tmp_path / "store"
    _tones(music, 2)
    assert _mess("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    _tones(music, 24, offset=2)
    largest = max(p.stat().st_size for p in store.rglob("*") if p.is_file())

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 4096, largest + 4096))

    full = subprocess.run([*MESS, "extract", str(music), *DSP, "--store", str(store)], capture_output=True,
                          text=True, timeout=300, preexec_fn=small_disk)
    assert full.returncode == 1 and "cannot write to the store" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr and "failed:" not in full.stderr, full.stderr
    again = _mess("extract", str(music), *DSP, "--store", str(store))
    assert again.returncode == 0 and " 0 failed" in again.stderr, again.stderr
    info = json.loads(_mess("info", "--json", "--failures", "--store", str(store)).stdout)
    assert info["tracks"] == 26 and info["runs"][0]["failures"] == [] and info["runs"][0]["tracks"] == 26
    assert _mess("check", "--store", str(store)).returncode == 0


def test_a_report_the_disk_refuses_is_named(extracted_tones: Extracted) -> None:
    """`mess probe` whose report did not fit on the disk (here: a file-size limit) said only 'error: File too
    large', naming no file: a write or a sync that fails names no file of its own."""
    import resource

    _, store = extracted_tones(10)

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # the heatmap is larger, the tables are not

    probe = subprocess.run([*MESS, "probe", "--model", "dsp", "--store", str(store), "--workers", "1"],  # in-process
                           capture_output=True, text=True, timeout=300, preexec_fn=small_disk)
    lines = probe.stderr.strip().splitlines()
    assert probe.returncode == 1 and "Traceback" not in probe.stderr and len(lines) == 1, probe.stderr
    png = next((store / "reports").glob("probe-*.png"), None)
    assert png is None and lines[0] == f"error: {store / 'reports' / 'probe-dsp-run1.png'}: File too large", lines
    assert not list((store / "reports").glob(".*.tmp"))  # the refused write left no temp file


def test_cut_short_fused_vectors_are_damage_not_new_tracks(extracted_tones: Extracted) -> None:
    """A truncated fused-vector file passed `mess check`; `similar --fused` left the tracks out, as if added since."""
    from mess.constants import FUSED

    _, store_dir = extracted_tones(4)
    store = FeatureStore(store_dir)
    run = store.run("dsp")
    hashes = [t.content_hash for t in store.tracks(run)]
    store.write_derived(run, FUSED, hashes, np.random.default_rng(0).standard_normal((4, 8)), {"label": "album"})
    path = store.derived_path(run, FUSED)
    store.close()
    path.write_bytes(path.read_bytes()[: 2 * 8 * 2])  # 2 of 4 rows
    check = _mess("check", "--store", str(store_dir))
    assert check.returncode == 1 and "short-derived:" in check.stdout and "wrote 4" in check.stdout, check.stdout
    repaired = _mess("check", "--repair", "--store", str(store_dir))
    assert repaired.returncode == 0 and "dropped the damaged fused vectors" in repaired.stdout, repaired.stdout
    fused = _mess("similar", "tone01.wav", "--fused", "--store", str(store_dir))
    assert fused.returncode == 1 and "no 'fused' vectors" in fused.stderr, fused.stderr


def test_a_changed_fused_row_is_refused_then_dropped_by_repair(extracted_tones: Extracted) -> None:
    """Fused vectors carried no checksums: one bit changed in their file (the value still finite) was served by
    `similar --fused`, and `mess check` said ok."""
    from mess.constants import FUSED

    music, store_dir = extracted_tones(4)
    store = FeatureStore(store_dir)
    run = store.run("dsp")
    hashes = [t.content_hash for t in store.tracks(run)]
    store.write_derived(run, FUSED, hashes, np.random.default_rng(0).standard_normal((4, 8)), {"label": "album"})
    row = store.track_rows(run)[store.track(music / "tone01.wav").content_hash]
    path = store.derived_path(run, FUSED)
    store.close()
    with path.open("r+b") as f:  # the lowest bit of the first value of tone01's fused vector
        f.seek(row * 8 * 2)
        low = f.read(1)[0]
        f.seek(row * 8 * 2)
        f.write(bytes([low ^ 1]))
    fused = _mess("similar", "tone01.wav", "--fused", "--store", str(store_dir))
    assert fused.returncode == 1 and "fused vectors of track ids" in fused.stderr, fused.stderr
    assert "differ from their checksums" in fused.stderr and "mess check --repair" in fused.stderr, fused.stderr
    assert _check_kinds(store_dir) == (1, ["checksum-derived"])
    repaired = _mess("check", "--repair", "--store", str(store_dir))
    assert repaired.returncode == 0 and "dropped the damaged fused vectors" in repaired.stdout, repaired.stdout
    assert _check_kinds(store_dir) == (0, [])
    fused = _mess("similar", "tone01.wav", "--fused", "--store", str(store_dir))
    assert fused.returncode == 1 and "no 'fused' vectors" in fused.stderr, fused.stderr


def test_a_repair_killed_before_it_blanked_fused_rows_leaves_no_vector_to_inherit(tmp_path: Path) -> None:
    """A `check --repair` killed after it dropped the last file's vectors and cut the row files, before it blanked
    that row's fused vector: the rerun said "whole", and the next new file took the row and its fused vector."""
    from mess.constants import FUSED

    music, store_dir = tmp_path / "music", tmp_path / "store"
    tones = _tones(music, 4)
    assert _mess("extract", str(music), *DSP, "--store", str(store_dir)).returncode == 0
    store = FeatureStore(store_dir)
    run = store.run("dsp")
    hashes = [t.content_hash for t in store.tracks(run)]
    store.write_derived(run, FUSED, hashes, np.random.default_rng(0).standard_normal((4, 8)), {"label": "album"})
    last = max(store.track_rows(run).items(), key=lambda item: item[1])[0]
    store.close()
    with sqlite3.connect(store_dir / "catalog.sqlite") as db:  # what the killed repair had done
        db.execute("DELETE FROM vectors WHERE content_hash=?", (last,))
    for path in store_dir.glob("runs/*/track/*.f16"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])
    check = _mess("check", "--store", str(store_dir))
    assert check.returncode == 1 and "stale-derived:" in check.stdout, check.stdout
    repaired = _mess("check", "--repair", "--store", str(store_dir))
    assert repaired.returncode == 0 and "forgot the fused vectors of 1 file," in repaired.stdout, repaired.stdout
    for t in tones:  # the dropped file comes back, in the freed row: with no fused vector of its own yet
        if FeatureStore(store_dir, readonly=True).track(t).content_hash == last:
            t.unlink()
    _tones(tmp_path / "new", 1, offset=9)[0].replace(music / "new.wav")
    assert "embedded" in _mess("extract", str(music), *DSP, "--store", str(store_dir)).stderr
    store = FeatureStore(store_dir, readonly=True)
    run = store.run("dsp")
    new = store.track(music / "new.wav")
    assert new.id not in store.derived_matrix(run, FUSED)[0].tolist()
    store.close()


def test_fused_vectors_and_their_catalog_row_change_together(extracted_tones: Extracted) -> None:
    """`fuse apply` replaced the fused file, then recorded its size in the catalog: killed in between, or read by a
    reader on the catalog version before, the 256-d file was read as 8-d rows (slices of one track's vector), and
    `mess check` said ok. The catalog now names the file it describes."""
    from mess.constants import FUSED

    _, store_dir = extracted_tones(4)
    writer = FeatureStore(store_dir)
    run = writer.run("dsp")
    hashes = [t.content_hash for t in writer.tracks(run)]
    old = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float16).astype(np.float32)
    writer.write_derived(run, FUSED, hashes, old, {"label": "album"})
    reader = FeatureStore(store_dir, readonly=True)
    with reader.snapshot():  # a reader on the catalog version of the 8-d vectors
        reader.derived_meta(reader.run("dsp"), FUSED)
        writer.write_derived(run, FUSED, hashes, np.random.default_rng(1).standard_normal((4, 256)), {})  # 256-d
        ids, mat = reader.derived_matrix(reader.run("dsp"), FUSED)  # the file its version names stays for it
        assert mat.shape == (4, 8)
        np.testing.assert_array_equal(mat, old)
        writer.write_derived(run, FUSED, hashes, np.random.default_rng(2).standard_normal((4, 256)), {})
        with pytest.raises(StoreError, match="rewritten twice while read"):  # two versions on: said, not misread
            reader.derived_matrix(reader.run("dsp"), FUSED)
    assert reader.derived_matrix(reader.run("dsp"), FUSED)[1].shape == (4, 256)  # the new version: the new file
    assert len(list(writer.derived_path(run, FUSED).parent.iterdir())) == 2  # the current file and the one before
    reader.close()
    writer.close()


@pytest.mark.parametrize("change", ["re-embedded", "removed"])
def test_fuse_apply_writes_what_it_read_though_an_extract_runs_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    """`fuse apply` placed each fused vector by track id at write time: a file re-embedded while the network ran
    got its old audio's vector at its new content's row, silently; a file removed meanwhile raised KeyError."""
    from mutagen.flac import FLAC

    from mess.constants import FUSED
    from mess.fusion import apply as fusion_apply
    from mess.fusion.data import load_layers
    from mess.fusion.train import FusionConfig, save_checkpoint, train_fusion

    music, store_dir, checkpoint = tmp_path / "music", tmp_path / "store", tmp_path / "fusion.pt"
    music.mkdir()
    for i, wav in enumerate(_tones(tmp_path / "wav", 9)):
        sf.write(music / f"{wav.stem}.flac", *sf.read(wav, dtype="float32"))
        tags = FLAC(music / f"{wav.stem}.flac")
        tags["album"] = f"album {i // 2}"  # 4 albums of 2 tracks: enough labels to train on
        tags.save()
    (music / "tone08.flac").rename(tmp_path / "other.flac")  # other audio, for the file that changes
    assert _mess("extract", str(music), *DSP, "--store", str(store_dir)).returncode == 0
    target = music / "tone03.flac"
    with closing(FeatureStore(store_dir)) as store:
        run = store.run("dsp")
        save_checkpoint(train_fusion(load_layers(store, run), FusionConfig(label="album", fusion_dim=8,
                                                                           weight_epochs=2, max_epochs=0)),
                        checkpoint)
        target_id = store.track(target).id
        read_embed = fusion_apply.embed

        def embed_then_extract(*args: object, **kwargs: object) -> np.ndarray:
            out = read_embed(*args, **kwargs)  # the layers were read: now the file changes and is extracted
            if change == "removed":
                target.unlink()
            else:
                shutil.copy(tmp_path / "other.flac", target)
            done = _mess("extract", str(music), "--prune", *DSP, "--store", str(store_dir))
            assert done.returncode == 0, done.stderr
            return out

        monkeypatch.setattr(fusion_apply, "embed", embed_then_extract)
        meta = fusion_apply.apply_fusion(store, checkpoint, "dsp")
        monkeypatch.undo()
        raced = dict(zip(*store.derived_matrix(run, FUSED), strict=True))
        assert target_id not in raced and len(raced) == 7  # no vector for the new content, not the old one
        assert store.derived_missing(run, FUSED) == meta["missing"] == (change == "re-embedded")
        again = fusion_apply.apply_fusion(store, checkpoint, "dsp")  # what the note says to run
        fresh = dict(zip(*store.derived_matrix(run, FUSED), strict=True))
    assert again["missing"] == 0 and (target_id in fresh) == (change == "re-embedded")
    for tid, vec in raced.items():
        np.testing.assert_array_equal(vec, fresh[tid])
    check = _mess("check", "--store", str(store_dir))
    assert check.returncode == 0 and check.stdout.strip().endswith(": ok"), check.stdout


def test_three_writers_and_a_reader_leave_nothing_misplaced(
    tmp_path: Path, tone_templates: Callable[[int], tuple[Path, Path]]
) -> None:
    music = tmp_path / "music"
    _tones(music / "a", 6)
    _tones(music / "b", 6, offset=6)
    want = _clean_tones(tone_templates, music)  # what a single writer stores
    shared = tmp_path / "shared"
    folders = [music / "a", music / "b", music]  # overlapping work: the last writer finds all done
    procs = [_extract_process(f, shared) for f in folders]
    seen = set()
    while any(p.poll() is None for p in procs):  # a reader alongside: never sees a torn store
        if (shared / "catalog.sqlite").exists():
            try:
                seen.add(len(_by_path(shared)))
            except Exception as exc:  # noqa: BLE001
                if "no vectors" not in str(exc) and "no feature store" not in str(exc):
                    raise
        time.sleep(0.2)
    assert [p.wait() for p in procs] == [0, 0, 0], [p.stderr.read() for p in procs]
    _assert_same(_by_path(shared), want)
    assert max(seen, default=0) <= len(want)


def test_a_killed_writer_frees_the_lock_for_the_one_waiting(
    tmp_path: Path, tone_templates: Callable[[int], tuple[Path, Path]]
) -> None:
    music, template = tone_templates(60)  # shared music, read only; its clean store is what a single writer makes
    paths = sorted(music.iterdir())
    want = _by_path(template)
    shared = tmp_path / "shared"
    cmd = [*MESS, "extract", str(music), *DSP, "--store", str(shared)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and first.poll() is None and _committed(shared) < 2:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGSTOP)  # frozen mid-run, lock held, however slowly the second one starts
    log = tmp_path / "second.log"
    with log.open("w") as err:
        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        while time.time() < deadline and "waiting for the store lock" not in log.read_text():
            time.sleep(0.1)
        assert f"held by pid {first.pid}, mess extract" in log.read_text()
        assert 0 < _committed(shared) < len(paths), "the kill should land mid-run"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert second.wait(timeout=300) == 0, log.read_text()
    _assert_same(_by_path(shared), want)
    with sqlite3.connect(shared / "catalog.sqlite") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT track_row) FROM vectors").fetchone() == (60, 60)


def _checksums_hold(store_dir: Path) -> tuple[int, int]:
    """(catalog rows of vectors, those whose recorded checksums are the CRC-32s of their rows in every row file)."""
    with sqlite3.connect(f"file:{store_dir / 'catalog.sqlite'}?mode=ro", uri=True) as db:
        dims = {run: json.loads(d) for run, d in db.execute("SELECT id, layer_dims FROM runs")}
        rows = db.execute("SELECT run_id, track_row, seg_row, n_segments, checksums FROM vectors").fetchall()
    files = {(run, level, layer): (store_dir / f"runs/{run}/{level}/{layer:03d}.f16").read_bytes()
             for run, layer_dims in dims.items() for level in ("track", "segment") for layer in range(len(layer_dims))}
    held = 0
    for run, track_row, seg_row, n, blob in rows:
        sums = []
        for level, start, count in (("track", track_row, 1), ("segment", seg_row, n)):
            for layer, dim in enumerate(dims[run]):
                sums.append(zlib.crc32(files[run, level, layer][start * dim * 2:(start + count) * dim * 2]))
        held += blob == np.array(sums, dtype="<u4").tobytes()
    return len(rows), held


def test_a_killed_writer_leaves_no_vectors_that_differ_from_their_checksums(
    tmp_path: Path, tone_templates: Callable[[int], tuple[Path, Path]]
) -> None:
    music, template = tone_templates(60)  # shared music, read only; its clean store is what a single writer makes
    n = len(list(music.iterdir()))
    store = tmp_path / "store"
    cmd = [*MESS, "extract", str(music), *DSP, "--store", str(store)]
    for at in (1, 12, 30):  # three kill -9s, each after a few more files were committed
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and _committed(store) < at:
            time.sleep(0.01)
        assert proc.poll() is None, "the kill should land mid-run"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        committed = _committed(store)
        assert at <= committed < n
        assert _checksums_hold(store) == (committed, committed)
        status, kinds = _check_kinds(store)
        assert status == 0 and set(kinds) <= {"orphan-rows", "not-embedded"}  # no damage: files left to embed
    assert _mess(*cmd[3:]).returncode == 0
    assert _checksums_hold(store) == (n, n)
    _assert_same(_by_path(store), _by_path(template))


def test_no_wait_exits_at_once_naming_the_holder(tmp_path: Path) -> None:
    music = tmp_path / "music"
    _tones(music, 2)
    holder = FeatureStore(tmp_path / "store")
    with holder.writing("a test holding the lock"):
        out = _mess_process("extract", str(music), *DSP, "--store", str(tmp_path / "store"), "--no-wait", timeout=60)
    assert out.returncode == 1
    assert f"held by pid {os.getpid()}, a test holding the lock" in out.stderr and "Traceback" not in out.stderr
    assert _committed(tmp_path / "store") == 0


def test_index_behind_a_running_extract_saves_what_it_committed(tmp_path: Path) -> None:
    music, store = tmp_path / "music", tmp_path / "store"
    n = len(_tones(music, 40, seconds=5.0))
    extract = subprocess.Popen([*MESS, "extract", str(music), *DSP, "--store", str(store)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and extract.poll() is None and _committed(store) < 2:
        time.sleep(0.05)
    os.killpg(extract.pid, signal.SIGSTOP)  # paused mid-run, holding the lock, until the index waits behind it
    log = tmp_path / "index.log"
    try:
        assert extract.poll() is None and _committed(store) < n, "the extract should be paused mid-run"
        with log.open("w") as err:
            index = subprocess.Popen([*MESS, "index", "--store", str(store), "--json"], stdout=subprocess.PIPE,
                                     stderr=err, text=True)
            while time.time() < deadline and "waiting for the store lock" not in log.read_text():
                time.sleep(0.05)
            assert "waiting for the store lock" in log.read_text(), "the index should wait behind the extract"
    finally:
        os.killpg(extract.pid, signal.SIGCONT)
    out, _ = index.communicate(timeout=300)
    assert extract.wait(timeout=300) == 0 and index.returncode == 0, log.read_text()
    assert json.loads(out)["n"] == n  # it read the vectors before waiting and saved an index of a few before
    again = _mess("index", "--store", str(store), "--json")
    assert json.loads(again.stdout)["mode"] == "unchanged", again.stdout


def test_extract_beside_a_server_that_indexes(tmp_path: Path, tone_templates: Callable[[int], tuple[Path, Path]]
                                             ) -> None:
    httpx = pytest.importorskip("httpx")
    music = tmp_path / "music"
    _tones(music / "a", 4)
    shared = tmp_path / "shared"
    assert _mess("extract", str(music / "a"), *DSP, "--store", str(shared)).returncode == 0
    _tones(music / "b", 10, offset=4)
    want = _clean_tones(tone_templates, music)  # what a single writer stores
    server = subprocess.Popen(
        [*MESS, "serve", "--store", str(shared), "--allow-indexing", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = served_at(server)
        _wait_http(httpx, base + "/api/health")
        writer = _extract_process(music, shared, stdout=subprocess.DEVNULL)
        codes = []
        while writer.poll() is None:
            codes.append(httpx.post(base + "/api/index", params={"model": "dsp"}, timeout=120).status_code)
        assert writer.wait() == 0, writer.stderr.read()
        last = httpx.post(base + "/api/index", params={"model": "dsp"}, timeout=120)
        assert set(codes) <= {200, 503} and last.status_code == 200 and last.json()["tracks"] == 14
    finally:
        server.terminate()
        server.wait(timeout=30)
    _assert_same(_by_path(shared), want)
    assert _mess("check", "--store", str(shared)).returncode == 0


# ------------------------------------------------------------------ odd files


def test_odd_names_and_absurd_samples_fail_alone(tmp_path: Path) -> None:
    music = tmp_path / "music"
    good = _tones(music, 3)
    odd = Path(os.fsdecode(bytes(music) + b"/caf\xe9 [/x].wav"))  # a folder 'caf\xe9 [' and a file 'x].wav'
    odd.parent.mkdir()
    shutil.copy(good[0], odd)
    (music / "tone00.wav").unlink()
    huge = music / "huge.wav"
    sf.write(
        huge, np.full(22050 * 3, 3e19, dtype=np.float32) * np.sign(np.sin(np.arange(22050 * 3))), 22050, subtype="FLOAT"
    )
    store = tmp_path / "store"
    out = _mess("extract", str(music), *DSP, "--store", str(store))
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr and "huge.wav: sample values out of range" in out.stderr
    assert "3 embedded" in out.stderr
    got = _by_path(store)
    assert set(got) == {os.fsdecode(bytes(p)) for p in (odd, *good[1:])}
    info = json.loads(_mess("info", "--failures", "--json", "--store", str(store)).stdout)
    failures = info["runs"][0]["failures"]
    assert [Path(f["path"]).name for f in failures] == ["huge.wav"] and "out of range" in failures[0]["reason"]
    listed = _mess("info", "--failures", "--store", str(store))
    assert listed.returncode == 0 and "huge.wav: sample values out of range" in listed.stdout
    similar = _mess("similar", "tone01.wav", "--json", "--store", str(store))
    assert similar.returncode == 0 and "caf\\\\xe9 [/x].wav" in similar.stdout, similar.stdout + similar.stderr
    again = _mess("extract", str(music), *DSP, "--store", str(store))
    assert again.returncode == 3 and "3 unchanged" in again.stderr


def test_retagging_changes_tags_not_vectors(tmp_path: Path) -> None:
    import mutagen

    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(22050 * 4) / 22050
    y = (0.3 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    for name in ("a.flac", "b.ogg", "c.mp3"):
        sf.write(music / name, y, 22050)
    store = tmp_path / "store"
    assert _mess("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    before = _by_path(store)
    for path in music.iterdir():
        tagged = mutagen.File(str(path), easy=True)
        if tagged.tags is None:
            tagged.add_tags()
        tagged["artist"] = "Retagged Artist"
        tagged.save()
    out = _mess("extract", str(music), *DSP, "--store", str(store))
    assert out.returncode == 0 and "0 embedded" in out.stderr and "3 unchanged" in out.stderr, out.stderr
    _assert_same(_by_path(store), before)
    fs = FeatureStore(store, readonly=True)
    assert {t.artist for t in fs.tracks()} == {"Retagged Artist"}
    fs.close()


def test_an_unchanged_files_tags_from_an_older_tag_reader_are_read_again(tmp_path: Path) -> None:
    """A catalog row an older mess wrote holds only the first of two Vorbis ARTIST values; `mess extract` re-reads
    every file's tags (cheap: no decoding), so the unchanged file's artist becomes 'Alpha; Beta', not embedded again.
    A guard: this already held when it was suspected (a known file skips only hashing and embedding)."""
    import mutagen

    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(22050 * 5) / 22050
    sf.write(music / "duo.flac", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 22050)
    tagged = mutagen.File(str(music / "duo.flac"))
    tagged["ARTIST"] = ["Alpha", "Beta"]
    tagged.save()
    store = tmp_path / "store"
    before = _clean(music, store)
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db, db:  # as a mess before multi-valued tags left it
        db.execute("UPDATE tracks SET artist='Alpha'")
        embedded_at = db.execute("SELECT created_at FROM vectors").fetchall()
    out = _mess("extract", str(music), *DSP, "--store", str(store))
    assert out.returncode == 0 and "0 embedded" in out.stderr and "1 unchanged" in out.stderr, out.stderr
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
        assert db.execute("SELECT artist FROM tracks").fetchall() == [("Alpha; Beta",)]
        assert db.execute("SELECT created_at FROM vectors").fetchall() == embedded_at
    _assert_same(_by_path(store), before)


def test_changed_content_with_same_size_and_mtime_is_embedded_again(tmp_path: Path) -> None:
    music = tmp_path / "music"
    path = _tones(music, 1)[0]
    store = tmp_path / "store"
    assert _mess("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    stat = path.stat()
    y, sr = sf.read(path, dtype="float32")
    sf.write(path, y[::-1].copy(), sr, subtype=sf.info(str(path)).subtype)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    out = _mess("extract", str(music), *DSP, "--store", str(store))
    assert "1 embedded" in out.stderr, out.stderr


_FLIPPER = """
import os, sys, time
from pathlib import Path
target, a, b, stop = map(Path, sys.argv[1:5])
pause = float(sys.argv[5])
contents = [a.read_bytes(), b.read_bytes()]
i = 0
while not stop.exists():
    data = contents[i % 2]
    if i % 4 < 2:  # rewritten in place
        with open(target, "r+b") as f:
            f.write(data)
    else:  # replaced by a rename
        tmp = target.with_name(".flip.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    i += 1
    time.sleep(pause)
"""


def _by_path_with_hash(store_dir: Path) -> dict[str, tuple[str, list[np.ndarray]]]:
    """path -> (content hash, the arrays of :func:`_read_all`)."""
    store = FeatureStore(store_dir, readonly=True)
    try:
        with store.snapshot():
            run = store.run("dsp")
            hashes = {t.path: t.content_hash for t in store.tracks(run)}
            return {path: (hashes[path], arrays) for path, arrays in _read_all(store, run).items()}
    finally:
        store.close()


def test_a_writer_racing_extract_never_stores_one_contents_vectors_under_another_hash(tmp_path: Path) -> None:
    """A second process rewrites one file of the collection over and over (in place and by rename, alternating two
    recordings of the same size) while `mess extract` runs. Whatever the race gives, the file is stored under the
    hash of one recording with that recording's vectors (those of a clean extraction), or it is reported by name as
    changed while read (or as being written, when the writer has it open) and embedded by a rerun once it is left
    alone."""
    a, b = _tones(tmp_path / "sources", 2, seconds=12.0)
    assert a.stat().st_size == b.stat().st_size  # only the content and the stamps tell them apart
    _clean(a.parent, tmp_path / "clean")  # one clean extraction of both recordings: content hash -> their vectors
    want = dict(_by_path_with_hash(tmp_path / "clean").values())
    assert len(want) == 2
    music = tmp_path / "music"
    _tones(music, 3, offset=4)
    flip = music / "flip.wav"
    shutil.copy(a, flip)
    stop = tmp_path / "stop"
    caught = 0
    for attempt, pause in enumerate((0.002, 0.2, 0.5)):  # a writer that never rests, then slower ones
        store = tmp_path / f"raced{attempt}"
        writer = subprocess.Popen([sys.executable, "-c", _FLIPPER, str(flip), str(a), str(b), str(stop), str(pause)])
        try:
            out = _mess("extract", str(music), *DSP, "--store", str(store))
        finally:
            stop.touch()
            writer.wait(timeout=30)
            stop.unlink()
        assert "Traceback" not in out.stderr, out.stderr
        got = _by_path_with_hash(store)
        assert len(got) >= 3, out.stderr  # the three quiet files are always embedded
        assert out.returncode == (0 if str(flip) in got else 3), out.stderr  # 3: some file failed
        if str(flip) in got:
            digest, arrays = got[str(flip)]
            assert digest in want, "stored under the hash of neither recording"
            for x, y in zip(arrays, want[digest], strict=True):
                np.testing.assert_array_equal(x, y)
        else:
            caught += 1
            assert "flip.wav" in out.stderr and ("changed while it was being read" in out.stderr  # or caught open:
                                                 or "another program is writing it" in out.stderr), out.stderr
            rerun = _mess("extract", str(music), *DSP, "--store", str(store))
            assert "1 embedded" in rerun.stderr, rerun.stderr
            assert str(flip) in _by_path_with_hash(store)
    assert caught >= 1  # the race really ran: the check caught the writer at least once


def test_symlinked_folders_are_followed_once(tmp_path: Path) -> None:
    from mess.audio.discover import find_audio

    real = tmp_path / "elsewhere"
    _tones(real, 2)
    music = tmp_path / "music"
    music.mkdir()
    (music / "linked").symlink_to(real)
    (real / "loop").symlink_to(music)
    assert [p.name for p in find_audio([music])] == ["tone00.wav", "tone01.wav"]


def test_a_file_name_that_is_not_utf8_is_found_by_name_and_served(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from mess.serve.app import create_app

    music = tmp_path / "music"
    good = _tones(music, 3)
    latin1 = Path(os.fsdecode(bytes(music) + b"/caf\xe9.wav"))  # a Latin-1 name, as old rips have
    good[0].rename(latin1)
    store = tmp_path / "store"
    assert _mess("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    by_name = _mess("similar", os.fsdecode(b"caf\xe9.wav"), "-k", "1", "--json", "--store", str(store))
    assert by_name.returncode == 0, by_name.stderr  # was UnicodeEncodeError (surrogates not allowed)
    assert json.loads(by_name.stdout)["query"]["label"] == "caf\\xe9"
    with TestClient(create_app(store), base_url="http://127.0.0.1") as client:
        tracks = client.get("/api/tracks")
        assert tracks.status_code == 200, tracks.text  # was 500 on /api/tracks, /api/map and every similar
        assert "caf\\xe9.wav" in {t["file"] for t in tracks.json()["items"]}
        first = tracks.json()["items"][0]["id"]
        assert client.get(f"/api/tracks/{first}/similar").status_code == 200
        assert client.get("/api/map").status_code == 200


def test_a_collection_file_changed_since_extraction_is_queried_as_it_is_now(tmp_path: Path) -> None:
    """`mess similar PATH` (and radio seeds) answered with the vectors stored for what the file held before."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.dsp import DspModel
    from mess.playlists.radio import radio
    from mess.query import resolve_query
    from mess.search.query import similar_tracks

    paths = _tones(tmp_path / "music", 4)
    store = FeatureStore(tmp_path / "store")
    extract(store, paths, DspModel(), WindowPolicy(4.0, 3))
    run = store.run("dsp")
    before = store.track(paths[0])
    assert resolve_query(store, paths[0], run).track == before  # unchanged: the catalogued track
    _tones(tmp_path / "new", 1, offset=9)[0].replace(paths[0])  # same path, other audio
    now = resolve_query(store, paths[0], run)
    assert now.track is None and now.content_hash != before.content_hash  # embedded as it is now
    # its stale entry (what the file held before) is no answer to the file itself, nor a radio pick from it
    assert before.id not in [n.track.id for n in similar_tracks(store, run, now, k=4)]
    assert before.id not in [t.id for t in radio(store, run, [now], n=4).tracks]
    shutil.copy(paths[1], paths[0])  # now a copy of another collection file: answered as that track
    assert resolve_query(store, paths[0], run).track == store.track(paths[1])


def test_a_touched_or_retagged_collection_file_is_queried_by_its_stored_vectors(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`mess similar FILE` of a file only touched, chmod-ed or retagged since extraction (its stamp moved, its audio
    did not; `mess extract` counts it unchanged) said it had 'changed since it was extracted' and embedded it again
    (minutes a file with MERT). Its content hash now tells: the catalogued track answers, with no warning."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.dsp import DspModel
    from mess.query import resolve_query

    paths = _tones(tmp_path / "music", 3)
    store = FeatureStore(tmp_path / "store")
    extract(store, paths, DspModel(), WindowPolicy(4.0, 3))
    run = store.run("dsp")
    before = store.track(paths[0])
    os.utime(paths[0], (1_000_000_000, 1_000_000_000))
    paths[0].chmod(0o600)
    with caplog.at_level("WARNING", logger="mess.query.embed"):
        query = resolve_query(store, paths[0], run)
    assert query.track == before and query.replaces is None and query.layers is None, query
    assert "changed since it was extracted" not in caplog.text
    with paths[0].open("r+b") as f:  # the audio itself changed: embedded as it is now, as before
        f.seek(-4000, os.SEEK_END)
        f.write(bytes(4000))
    with caplog.at_level("WARNING", logger="mess.query.embed"):
        now = resolve_query(store, paths[0], run)
    assert now.track is None and now.replaces == before and "changed since it was extracted" in caplog.text


@pytest.mark.parametrize("command", [["similar"], ["playlist", "radio"]])
def test_a_changed_query_file_is_a_cli_warning_not_a_log_record(tmp_path: Path, command: list[str]) -> None:
    """`mess similar FILE` of a file changed since extraction printed 'WARNING mess.query.embed: ...' (a logging
    record) where the CLI's other warnings read 'warning: ...'."""
    from typer.testing import CliRunner

    from mess.cli.main import app

    paths = _tones(tmp_path / "music", 3)
    runner = CliRunner()
    store = ["--store", str(tmp_path / "store")]
    assert runner.invoke(app, ["extract", str(tmp_path / "music"), "-m", "dsp", "--window", "4", *store]).exit_code == 0
    with paths[0].open("r+b") as f:
        f.seek(-4000, os.SEEK_END)
        f.write(bytes(4000))
    out = runner.invoke(app, [*command, str(paths[0]), "-n" if command[0] == "playlist" else "-k", "2", *store],
                        env={"COLUMNS": "300"})
    shown = " ".join(out.output.split())
    assert out.exit_code == 0, shown
    assert (f"warning: {paths[0]} has changed since it was extracted: searching with the file as it is now "
            "(`mess extract` updates the collection)") in shown, shown
    assert "WARNING" not in shown and "mess.query.embed" not in shown, shown


def test_a_file_gone_before_it_is_read_is_recorded(tmp_path: Path) -> None:
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.dsp import DspModel

    paths = _tones(tmp_path / "music", 2)
    store = FeatureStore(tmp_path / "store")
    summary = extract(store, [*paths, tmp_path / "music" / "vanished.wav"], DspModel(), WindowPolicy(4.0, 3))
    assert summary.done == 2 and [Path(p).name for p, _ in summary.failed] == ["vanished.wav"]
    assert [Path(p).name for p, _ in store.failures(store.run("dsp"))] == ["vanished.wav"]
    extract(store, paths, DspModel(), WindowPolicy(4.0, 3), prune_under=[tmp_path / "music"])
    assert store.failures(store.run("dsp")) == []  # --prune forgets it too (it was listed for good)


def test_failures_are_listed_per_file_and_forgotten_once_fixed(tmp_path: Path) -> None:
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.dsp import DspModel

    music = tmp_path / "music"
    paths = _tones(music, 2)
    half = 0.3 * np.sin(2 * np.pi * 440 * np.arange(11025) / 22050)
    for name in ("short_a.wav", "short_b.wav", "short_c.wav"):  # one content: too short, three times
        sf.write(music / name, half.astype(np.float32), 22050)
    (music / "noise.wav").write_bytes(os.urandom(5000))
    store = FeatureStore(tmp_path / "store")
    names = ("short_a.wav", "short_b.wav", "short_c.wav", "noise.wav", "later.wav")  # later.wav: not there yet
    everything = [*paths, *(music / n for n in names)]
    extract(store, everything, DspModel(), WindowPolicy(4.0, 3))
    listed = dict(store.failures(store.run("dsp")))
    assert sorted(Path(p).name for p in listed) == ["later.wav", "noise.wav", "short_a.wav", "short_b.wav",
                                                    "short_c.wav"]
    assert all(reason.startswith(path) for path, reason in listed.items())  # each reason names its own file
    assert store.unembedded(store.run("dsp")) == []  # a failed file is named as failed, not as not embedded
    _tones(music, 1, offset=7)[0].rename(music / "noise.wav")  # all three fixed: real audio now
    _tones(music, 1, offset=9)[0].rename(music / "later.wav")
    sf.write(music / "short_b.wav", np.tile(half, 4).astype(np.float32), 22050)
    extract(store, everything, DspModel(), WindowPolicy(4.0, 3))
    assert sorted(Path(p).name for p, _ in store.failures(store.run("dsp"))) == ["short_a.wav", "short_c.wav"]


# ------------------------------------------------------------------ damaged stores


def _damage_row(store_dir: Path, value: float) -> None:
    """Write ``value`` into the first element of track row 1 of layer 0."""
    (path,) = store_dir.glob("runs/*/track/000.f16")
    data = np.memmap(path, dtype="<f2", mode="r+")
    dim = data.size // _committed(store_dir)
    data[dim] = value
    data.flush()


_CUTTER = """
import os, sys, time
from pathlib import Path
import numpy as np
import pyarrow.parquet as pq
from mess.store import FeatureStore, TrackVectors
store, stop, i = FeatureStore(Path(sys.argv[1])), Path(sys.argv[2]), 0
run = store.run("dsp")
while not stop.exists():
    with store.writing("cutter"):  # what a writer killed mid-write leaves: bytes past the catalog's rows
        for path in store.root.glob("runs/*/*/*.f16"):
            os.truncate(path, path.stat().st_size + (16 << 20))
    time.sleep(0.05)
    i += 1
    layers = [np.full(dim, i, dtype=np.float32) for dim in run.layer_dims]
    store.write_vectors(run, [TrackVectors(f"cut{i}", layers, [v[None] for v in layers], [0.0])])  # cuts them
    time.sleep(0.05)
"""


def test_check_beside_a_writer_that_cuts_row_files_answers(tmp_path: Path, extracted_tones: Extracted) -> None:
    """`mess check` scanned each row file through a memory map sized when it began: a writer cutting the bytes an
    interrupted write left (as every write does) made it touch pages past the new end: killed by SIGBUS."""
    (_, store_dir), stop = extracted_tones(3), tmp_path / "stop"
    cutter = subprocess.Popen([sys.executable, "-c", _CUTTER, str(store_dir), str(stop)], stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.time() + 60
        while _committed(store_dir) < 5 and time.time() < deadline:  # the cutter is cutting
            time.sleep(0.1)
        for _ in range(4):
            check = _mess_process("check", "--json", "--store", str(store_dir))  # a SIGBUS kills the process
            assert check.returncode == 0, (check.returncode, check.stderr)
            answer = json.loads(check.stdout)
            assert answer["ok"] and {p["kind"] for p in answer["problems"]} <= {"orphan-rows"}, answer
    finally:
        stop.touch()
        _, err = cutter.communicate(timeout=60)
    assert cutter.returncode == 0, err
    check = _mess("check", "--store", str(store_dir))
    assert check.returncode == 0 and check.stdout.strip().endswith(": ok"), check.stdout


def test_a_nan_vector_is_refused_then_repaired(extracted_tones: Extracted) -> None:
    music, store = extracted_tones(5)
    want = _by_path(store)
    _damage_row(store, np.nan)
    similar = _mess("similar", "tone01.wav", "--json", "--store", str(store))
    assert similar.returncode == 1 and "non-finite" in similar.stderr and "mess check --repair" in similar.stderr
    assert "Traceback" not in similar.stderr
    assert _check_kinds(store) == (1, ["non-finite"])
    _repair_then_extract(music, store, dropped=1)
    _assert_same(_by_path(store), want)


@pytest.mark.parametrize("which", ["one", "all"])
def test_short_row_files_are_refused_then_repaired(
    tmp_path: Path, which: str, tone_templates: Callable[[int], tuple[Path, Path]]
) -> None:
    music = tmp_path / "music"
    _tones(music, 5)
    store = tmp_path / "store"
    _clean(music, store)
    files = sorted(store.glob("runs/*/track/*.f16"))
    for path in files[:1] if which == "one" else files:
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size - path.stat().st_size // 5)
    _tones(music, 1, offset=9)  # a new file: its vectors must not land on an old track's row
    for args in (["info"], ["similar", "1"], ["extract", str(music), *DSP]):
        out = _mess(*args, "--store", str(store))
        assert out.returncode == 1, (args, out.stderr)
        assert "is damaged" in out.stderr and "mess check --repair" in out.stderr and "Traceback" not in out.stderr
    with pytest.raises(StoreDamaged, match="hold 4 rows, the catalog references 5"):
        FeatureStore(store, readonly=True)
    assert _mess("check", "--repair", "--store", str(store)).returncode == 0
    out = _mess("extract", str(music), *DSP, "--store", str(store))
    assert out.returncode == 0 and "2 embedded" in out.stderr, out.stderr
    # what a clean extraction of these six tones stores: the shared clean store of tone00..tone09 holds each of them
    clean = {Path(p).name: arrays for p, arrays in _by_path(tone_templates(10)[1]).items()}
    _assert_same(_by_path(store), {str(music / name): clean[name] for name in sorted(os.listdir(music))})


def _point_at(store_dir: Path, column: str, damaged: str, other: str) -> None:
    """Make the vectors row of file ``damaged`` point at the ``column`` row (track_row, seg_row) of file ``other``."""
    with sqlite3.connect(store_dir / "catalog.sqlite") as db:
        row = f"(SELECT v.{column} FROM vectors v JOIN tracks t USING (content_hash) WHERE t.path LIKE ?)"
        db.execute(f"UPDATE vectors SET {column}={row} WHERE content_hash=(SELECT content_hash FROM tracks "
                   "WHERE path LIKE ?)", (f"%{other}", f"%{damaged}"))


@pytest.mark.parametrize("column", ["track_row", "seg_row"])
def test_two_files_at_one_row_are_refused_then_repaired(extracted_tones: Extracted, column: str) -> None:
    music, store = extracted_tones(5)
    want = _by_path(store)
    _point_at(store, column, "tone01.wav", "tone02.wav")
    match = "mean" if column == "track_row" else "segments"  # track rows are checked on open, windows when read
    similar = _mess("similar", "tone03.wav", "--match", match, "--json", "--store", str(store))
    assert similar.returncode == 1 and "Traceback" not in similar.stderr, similar.stdout
    assert "point at" in similar.stderr and "mess check --repair" in similar.stderr, similar.stderr
    assert _check_kinds(store) in ((1, ["shared-rows"]), (1, ["shared-rows", "checksum"]))  # another's bytes
    _repair_then_extract(music, store, dropped=2)
    _assert_same(_by_path(store), want)


def test_a_damaged_content_hash_is_named_not_silently_dropped(extracted_tones: Extracted) -> None:
    music, store = extracted_tones(4)
    want = _by_path(store)
    with sqlite3.connect(store / "catalog.sqlite") as db:  # one hex digit of tone01's content hash changed
        db.execute("UPDATE tracks SET content_hash=substr(content_hash, 1, length(content_hash) - 1) || "
                   "CASE WHEN substr(content_hash, -1) = '0' THEN '1' ELSE '0' END WHERE path LIKE '%tone01.wav'")
    similar = _mess("similar", "tone02.wav", "--store", str(store))
    assert similar.returncode == 0 and "tone01" not in similar.stdout, similar.stdout
    assert "1 file has no dsp vectors and was left out; `mess check` names them" in similar.stderr, similar.stderr
    query = _mess("similar", "tone01.wav", "--store", str(store))
    assert query.returncode == 1 and "has no vectors of dsp" in query.stderr and "Traceback" not in query.stderr
    check = _mess("check", "--json", "--store", str(store))
    (problem,) = json.loads(check.stdout)["problems"]
    assert check.returncode == 0 and problem["kind"] == "not-embedded" and "tone01.wav" in problem["message"]
    repaired = _mess("check", "--repair", "--store", str(store))
    assert "repaired:" not in repaired.stdout and f"{EMBED} embeds them" in repaired.stdout
    assert not repaired.stdout.strip().endswith(": ok"), repaired.stdout
    assert "1 embedded" in _mess("extract", str(music), *DSP, "--store", str(store)).stderr
    _assert_same(_by_path(store), want)
    assert _mess("check", "--store", str(store)).stdout.strip().endswith(": ok")


def _flip_bit(store_dir: Path, level: str, name: str) -> None:
    """Clear one set exponent bit of a value in the first ``level`` row of file ``name`` in layer 0: the value stays
    finite (only smaller), as a bit flipped on disk leaves most values."""
    column = "track_row" if level == "track" else "seg_row"
    with sqlite3.connect(store_dir / "catalog.sqlite") as db:
        (row,) = db.execute(f"SELECT v.{column} FROM vectors v JOIN tracks t USING (content_hash) WHERE t.path LIKE ?",
                            (f"%/{name}",)).fetchone()
        rows = db.execute("SELECT COUNT(*), SUM(n_segments) FROM vectors").fetchone()[level == "segment"]
    (path,) = store_dir.glob(f"runs/*/{level}/000.f16")
    bits = np.memmap(path, dtype="<u2", mode="r+")
    dim = bits.size // rows
    at = next(i for i in range(row * dim, (row + 1) * dim) if bits[i] & 0x7C00)
    before = float(bits[at:at + 1].view("<f2")[0])
    bits[at] ^= 1 << max(b for b in range(10, 15) if bits[at] >> b & 1)
    bits.flush()
    after = float(bits[at:at + 1].view("<f2")[0])
    assert np.isfinite(after) and after != before


@pytest.mark.parametrize("level", ["track", "segment"])
def test_a_flipped_bit_is_refused_then_repaired(extracted_tones: Extracted, level: str) -> None:
    music, store = extracted_tones(5)
    want = _by_path(store)
    _flip_bit(store, level, "tone01.wav")
    with pytest.raises(StoreDamaged, match=f"{level} vectors .* differ from their checksums.*mess check --repair"):
        _by_path(store)
    if level == "track":  # `mess similar` reads track vectors only
        similar = _mess("similar", "tone01.wav", "--json", "--store", str(store))
        assert similar.returncode == 1 and "differ from their checksums" in similar.stderr, similar.stderr
        assert "mess check --repair" in similar.stderr and "Traceback" not in similar.stderr
    assert _check_kinds(store) == (1, ["checksum"])
    _repair_then_extract(music, store, dropped=1)
    _assert_same(_by_path(store), want)


def _wait_for(path: Path, text: str, seconds: float) -> bool:
    """Whether ``text`` appears in the file at ``path`` within ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if text in path.read_text():
            return True
        time.sleep(0.1)
    return False


def _repair_behind_a_writer(store: Path, tmp_path: Path, holder: str, meanwhile: Callable[[], object]
                            ) -> tuple[int, dict, str]:
    """Run `mess check --repair --json` while this process holds the store's write lock as ``holder``; once the
    repair says it waits for the lock, do ``meanwhile``, then let go. (exit code, JSON report, stderr)."""
    err = tmp_path / "repair.err"
    with StoreLock(store).hold(holder), err.open("w") as stderr:
        repair = subprocess.Popen([*MESS, "check", "--repair", "--json", "--store", str(store)],
                                  stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert _wait_for(err, "waiting for the store lock", 30), err.read_text()
        meanwhile()
    out, _ = repair.communicate(timeout=300)
    return repair.returncode, json.loads(out), err.read_text()


def test_repair_acts_on_a_scan_under_the_lock_not_on_an_earlier_check(
        tmp_path: Path, extracted_tones: Extracted) -> None:
    """`mess check --repair` dropped what its check had found before it took the write lock: damage another writer
    mended while it waited for the lock cost a good file its vectors. It scans again under the lock, and acts on
    (and reports) only what that scan finds."""
    music, store = extracted_tones(5)
    want = _by_path(store)
    (path,) = store.glob("runs/*/track/000.f16")
    good = path.read_bytes()
    _damage_row(store, np.nan)
    assert _check_kinds(store) == (1, ["non-finite"])
    # mended while the repair waits (an older mess had scanned by then, and said nothing of waiting)
    code, report, said = _repair_behind_a_writer(store, tmp_path, "a writer that mends", lambda: path.write_bytes(good))
    assert code == 0 and report["ok"] and report["repaired"] == [], (report, said)
    _assert_same(_by_path(store), want)


def test_repair_acts_on_damage_that_came_after_the_check_while_it_waited_for_the_lock(
        tmp_path: Path, extracted_tones: Extracted) -> None:
    """The other way round: damage that appears after a first check, while `mess check --repair` waits for another
    writer's lock, is found by the repair's own scan, dropped with what that check found, and reported (the
    report is the check after the repair: both files wait for `mess extract`, which embeds them as before)."""
    music, store = extracted_tones(5)
    want = _by_path(store)
    _damage_row(store, np.nan)
    assert _check_kinds(store) == (1, ["non-finite"])
    code, report, said = _repair_behind_a_writer(store, tmp_path, "a writer that damages",
                                                 lambda: _flip_bit(store, "segment", "tone03.wav"))
    assert code == 0 and report["ok"], (report, said)
    assert any("dropped the vectors of 2 files" in line for line in report["repaired"]), report
    (left,) = report["problems"]
    assert left["kind"] == "not-embedded" and "2 files" in left["message"] and "tone03.wav" in left["message"], left
    assert "\n2 embedded," in _mess("extract", str(music), *DSP, "--store", str(store)).stderr
    _assert_same(_by_path(store), want)


def test_a_store_from_before_checksums_reads_and_gets_them_by_repair(extracted_tones: Extracted) -> None:
    music, store = extracted_tones(5)
    want = _by_path(store)
    with sqlite3.connect(store / "catalog.sqlite") as db:  # what an older mess wrote: no checksums column
        db.execute("ALTER TABLE vectors DROP COLUMN checksums")
    _assert_same(_by_path(store), want)  # read-only: not migrated, read unverified
    check = _mess("check", "--json", "--store", str(store))
    report = json.loads(check.stdout)
    assert check.returncode == 0 and report["ok"] and [p["kind"] for p in report["problems"]] == ["no-checksum"]
    assert "5 files' vectors have no checksum yet" in report["problems"][0]["message"]
    _damage_row(store, np.nan)  # one old row is damaged: repair drops it and sums only the other four
    assert "recorded the checksums of 4 files' vectors" in _repair_then_extract(music, store, dropped=1)
    assert _checksums_hold(store) == (5, 5)
    _assert_same(_by_path(store), want)
    _flip_bit(store, "segment", "tone03.wav")  # the sums repair recorded guard the rows
    assert _check_kinds(store) == (1, ["checksum"])


def test_a_store_name_with_uri_characters_is_read_as_itself(tmp_path: Path) -> None:
    """'%41', '#' and '?' in a store's path name that folder, not 'stA' (nor no store at all)."""
    stores = {"st%41": 3, "stA": 2, "odd#dir/s": 1, "q?x": 2}
    for offset, (name, n) in enumerate(stores.items()):
        music = tmp_path / f"music{offset}"
        _tones(music, n, seconds=2.0, offset=3 * offset)
        assert _mess("extract", str(music), *DSP, "--store", str(tmp_path / name)).returncode == 0
    for offset, (name, n) in enumerate(stores.items()):
        store = str(tmp_path / name)
        info = _mess("info", "--json", "--store", store)
        assert info.returncode == 0 and json.loads(info.stdout)["tracks"] == n, (name, info.stderr)
        similar = _mess("similar", "1", "--json", "--store", store)
        assert similar.returncode == 0, (name, similar.stderr)
        answer = json.loads(similar.stdout)
        names = {answer["query"]["label"]} | {r["name"] for r in answer["results"]}
        assert names == {f"tone{i:02d}" for i in range(3 * offset, 3 * offset + n)}, (name, names)
        out = tmp_path / f"out{offset}.npz"
        assert _mess("export", str(out), "--store", store).returncode == 0
        assert sorted(Path(p).parent.name for p in np.load(out)["path"]) == [f"music{offset}"] * n


def test_export_counts_the_files_it_left_out(tmp_path: Path, extracted_tones: Extracted) -> None:
    """A file whose vectors a repair dropped is counted by export (message, --json, file metadata), as by similar."""
    music, store = extracted_tones(4)
    _damage_row(store, np.inf)
    assert _mess("check", "--repair", "--store", str(store)).returncode == 0
    note = f"1 file has no dsp vectors and was left out; `mess check` names them; {EMBED}"
    out = _mess("export", str(tmp_path / "out.npz"), "--store", str(store))
    assert out.returncode == 0 and "3 tracks of 3 tracks" in out.stderr and note in out.stderr, out.stderr
    assert int(np.load(tmp_path / "out.npz")["files_not_embedded"]) == 1
    out = _mess("export", str(tmp_path / "out.parquet"), "--json", "--store", str(store))
    assert out.returncode == 0 and json.loads(out.stdout)["files_not_embedded"] == 1, out.stdout
    assert json.loads(pq.read_schema(tmp_path / "out.parquet").metadata[b"mess"])["files_not_embedded"] == 1
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:  # track ids follow decoding order, not rows
        (kept,) = db.execute("SELECT t.id FROM tracks t JOIN vectors v USING (content_hash) LIMIT 1").fetchone()
    assert note in _mess("similar", str(kept), "--store", str(store)).stderr
    _mess("extract", str(music), *DSP, "--store", str(store))
    out = _mess("export", str(tmp_path / "out.npz"), "--store", str(store))
    assert "4 tracks of 4 tracks" in out.stderr and "left out" not in out.stderr, out.stderr


@pytest.fixture(scope="module")
def forty_tones(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder of 40 short tones and a clean store of them (copy the store before damaging it)."""
    root = tmp_path_factory.mktemp("forty")
    _tones(root / "music", 40, seconds=1.5)
    _clean(root / "music", root / "store")
    return root / "music", root / "store"


def _checkpointed_copy(source: Path, store: Path) -> Path:
    """Copy the store ``source`` to ``store`` with its write-ahead log folded into the catalog; the catalog's path."""
    shutil.copytree(source, store)
    db = store / "catalog.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


@pytest.mark.xdist_group("forty_tones")  # one worker builds the fixture
@pytest.mark.parametrize("damage", ["garbage", "truncated", "store-is-a-file"])
def test_an_unreadable_catalog_gives_one_line(forty_tones: tuple[Path, Path], tmp_path: Path, damage: str) -> None:
    music, store = forty_tones[0], tmp_path / "store"
    db = _checkpointed_copy(forty_tones[1], store)
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        with db.open("r+b") as f:
            f.seek(4096)
            f.write(b"\x00" * 4096)
            f.truncate(db.stat().st_size * 2 // 3)
    else:
        shutil.rmtree(store)
        store.write_text("oops")
    expected = (
        "is a file, not a feature store folder"
        if damage == "store-is-a-file"
        else ("restore catalog.sqlite from a backup, or move the store aside and extract again")
    )
    for args in (["info"], ["similar", "1"], ["check"], ["check", "--repair"], ["extract", str(music), *DSP]):
        out = _mess(*args, "--store", str(store))
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert expected in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)


@pytest.mark.xdist_group("forty_tones")  # one worker builds the fixture
@pytest.mark.parametrize("page_of", ["tracks_hash", "tracks"])
def test_a_damaged_catalog_page_that_opening_does_not_read_gives_one_line(forty_tones: tuple[Path, Path],
                                                                          tmp_path: Path, page_of: str) -> None:
    """A zeroed page of the tracks table or of an index on it passed the checks made on open, then the first query
    that met it ended `info`, `similar`, `export`, `extract`, `playlist` in a traceback (sqlite3.DatabaseError:
    database disk image is malformed) and `config` called the store's default model 'none', exit 0."""
    music, store = forty_tones[0], tmp_path / "store"
    db = _checkpointed_copy(forty_tones[1], store)
    with sqlite3.connect(db) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (page_of,)).fetchone()[0]
    with db.open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\x00" * size)
    config = [["config"]] if page_of == "tracks_hash" else []  # which model answers: a query the index serves
    for args in (["info"], ["similar", "1"], ["export", str(tmp_path / "out.npz")], *config,
                 ["playlist", "radio", "1", "-n", "3"], ["extract", str(music), *DSP], ["check"]):
        out = _mess(*args, "--store", str(store))
        said = out.stdout if args == ["check"] else out.stderr  # check's finding is its result: stdout
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert "database disk image is malformed" in said and "Traceback" not in out.stderr, (args, said)
        assert "restore catalog.sqlite from a backup" in said, (args, said)


def test_bad_track_references_answer_clearly(tmp_path: Path, extracted_tones: Extracted) -> None:
    _, store = extracted_tones(3)
    for ref in ("99999999999999999999999", "%", "tone0_.wav", "²", "١", "１"):  # '١' is int() 1: an id is ASCII
        out = _mess("similar", ref, "--store", str(store))
        assert out.returncode == 1 and "unknown track" in out.stderr and "Traceback" not in out.stderr, out.stderr
    radio = _mess("playlist", "radio", "³", "--store", str(store))
    assert radio.returncode == 1 and "unknown track '³'" in radio.stderr and "Traceback" not in radio.stderr
    (tmp_path / "labels.csv").write_text("id,label\n²,a\n2,b\n3,a\n", encoding="utf-8")
    labels = _mess("evaluate", "--labels", str(tmp_path / "labels.csv"), "--store", str(store))
    assert "1 label row names an unknown track and was left out: line 2 '²'" in labels.stderr
    assert "Traceback" not in labels.stderr
    assert _mess("similar", "tone01.wav", "--store", str(store)).returncode == 0


def test_config_unset_without_a_setting_is_refused(extracted_tones: Extracted) -> None:
    _, store = extracted_tones(3)
    out = _mess("config", "--unset", "--store", str(store))
    assert out.returncode == 1 and "--unset needs the setting to remove" in out.stderr and not out.stdout, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert _mess("config", "default-model", "--unset", "--store", str(store)).returncode == 0


def test_a_default_model_without_vectors_is_said_not_replaced(extracted_tones: Extracted) -> None:
    _, store = extracted_tones(3)
    (store / "config.json").write_text('{"default-model": "nosuch"}')  # or a model whose run was removed
    out = _mess("similar", "1", "--store", str(store), "--json")  # answered from dsp without a word before
    assert out.returncode == 1 and not out.stdout and "Traceback" not in out.stderr, out.stdout
    message = " ".join(out.stderr.split())
    assert "default-model 'nosuch'" in message and "--model" in message, message
    assert "mess config default-model --unset" in message and len(out.stderr.strip().splitlines()) == 1
    served = _mess_process("serve", "--store", str(store), "--port", "0", timeout=60)  # start-up says it too
    assert served.returncode == 1 and "default-model 'nosuch'" in served.stderr and "serving" not in served.stderr
    shown = _mess("config", "--store", str(store), "--json")  # `mess config` still shows it, to unset it
    assert shown.returncode == 0 and json.loads(shown.stdout)["settings"] == {"default-model": "nosuch"}
    assert json.loads(shown.stdout)["default_model"] is None and "nosuch" in json.loads(shown.stdout)["problem"]
    assert _mess("config", "default-model", "--unset", "--store", str(store)).returncode == 0
    assert json.loads(_mess("similar", "1", "--store", str(store), "--json").stdout)["model"] == "dsp"


# ------------------------------------------------------------------ librosa's numba cache


_WARMS = """
import json, os, sys, time
from pathlib import Path
from mess.audio import jit_cache
import numba


@numba.njit(cache=True)
def double(x):
    return 2 * x


@numba.njit(cache=True)
def triple(x):
    return 3 * x


ran = []
function = {"double": double, "triple": triple}[sys.argv[3]]


def warm():
    ran.append(True)
    barrier, count = Path(sys.argv[1]), int(sys.argv[2])
    (barrier / str(os.getpid())).touch()  # the processes compile and publish at the same moment
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return function(21)


jit_cache.ensure_warm("test-warm", warm)
print(json.dumps({"ran": bool(ran), "value": function(21), "hits": sum(function.stats.cache_hits.values()),
                  "private": os.environ["NUMBA_CACHE_DIR"], "install": jit_cache._install_key()}))
"""


def test_concurrent_first_runs_on_an_empty_numba_cache(tmp_path: Path) -> None:
    """Two first runs at once fill the shared cache safely (each compiles into a folder of its own, the union is
    published under a lock, atomically); a later run starts warm; a run from a second librosa install warms and adds
    its own entries. numba files every cached function the same way (by its source's folder), so a function of the
    test's own stands in for librosa's, whose first compilation costs 10 s of CPU a process (a 90 s test before)."""
    import hashlib

    import librosa

    shared = tmp_path / "numba"
    env = {**os.environ, "MESS_NUMBA_CACHE": str(shared), "NUMBA_OPT": "0"}
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("MESS_NUMBA_PRIVATE", None)
    here = tmp_path / "app"
    here.mkdir()
    (here / "warms.py").write_text(_WARMS)

    def start(script: Path, barrier: Path, count: int, function: str = "double",
              extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(script), str(barrier), str(count), function],
                                env={**env, **(extra or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def answer(proc: subprocess.Popen[str]) -> dict:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        return json.loads(out)

    barrier = Path(tempfile.mkdtemp(dir=tmp_path))
    first = [answer(p) for p in [start(here / "warms.py", barrier, 2, f) for f in ("double", "triple")]]
    assert [a["ran"] for a in first] == [True, True] and [a["value"] for a in first] == [42, 63]
    assert all(not a["private"].startswith(str(shared)) for a in first)  # each compiled into its own folder
    assert first[0]["private"] != first[1]["private"]
    markers = sorted(p.name for p in shared.glob("test-warm-*.done"))
    assert len(markers) == 1 and first[0]["install"] in markers[0]
    assert not list(shared.glob("new-*")) and not list(shared.glob("old-*"))  # published atomically, cleaned up

    def entries(folder: Path, function: str = "double") -> list[Path]:
        return list((shared / "current" / f"{folder.name}_{hashlib.sha1(str(folder).encode()).hexdigest()}").glob(
            f"*{function}*.nbi"))

    assert entries(here.resolve()) and entries(here.resolve(), "triple")  # the union of what each compiled
    later = answer(start(here / "warms.py", Path(tempfile.mkdtemp(dir=tmp_path)), 1))
    assert not later["ran"] and later["value"] == 42 and later["hits"] >= 1  # the shared code, not compiled again
    # numba files cached code under its source's folder: another environment (a second venv, a CI clone) must warm
    # and publish its own entries, not take the marker of this one for its own and compile in every process
    other = tmp_path / "other-env"  # the same librosa, installed at another path, and the code beside it
    shutil.copytree(Path(librosa.__file__).parent, other / "librosa")
    shutil.copy(here / "warms.py", other / "warms.py")
    path = os.pathsep.join(filter(None, [str(other), os.environ.get("PYTHONPATH")]))
    elsewhere = answer(start(other / "warms.py", Path(tempfile.mkdtemp(dir=tmp_path)), 1, extra={"PYTHONPATH": path}))
    assert elsewhere["ran"] and elsewhere["value"] == 42 and elsewhere["install"] != first[0]["install"]
    assert len(list(shared.glob("test-warm-*.done"))) == 2
    assert entries(here.resolve()) and entries(here.resolve(), "triple") and entries(other.resolve())


def test_private_caches_of_killed_processes_are_removed_and_a_run_leaves_none(tmp_path: Path) -> None:
    """Each mess process copied the shared numba cache (3 MB) into a private temp folder, removed at exit; a killed
    process never removed it, and `mess extract` killed its decoders at the end: every run left 3 MB per decoder in
    the temp folder, for ever (16,000 folders, 48 GB, on the machine that found it). Only a process that imports
    numba makes one now."""
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    music = tmp_path / "music"
    _tones(music, 3, seconds=3.0)
    done = subprocess.run([*MESS, "extract", str(music), *DSP, "--workers", "2", "--store", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in temp.iterdir()) == []  # the run and its decoders removed their folders
    compiler = "import mess, numba, sys, time; print(flush=True); time.sleep(300)"
    decoder = compiler.replace("mess, numba", "mess.extract.decode_worker")  # all a decoder imports: no numba
    live, killed, quiet = (subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
                           for code in (compiler, compiler, decoder))
    try:
        for proc in (live, killed, quiet):
            assert proc.stdout is not None and proc.stdout.readline() == "\n"  # its imports are done
        assert len(list(temp.iterdir())) == 2  # the decoder made none
        killed.kill()
        killed.wait()
        subprocess.run([sys.executable, "-c", "import mess, numba"], env=env, check=True, timeout=60)
        assert [p.name.split("-")[2] for p in temp.iterdir()] == [str(live.pid)]  # the live one's is kept
    finally:
        for proc in (live, killed, quiet):
            proc.kill()
            proc.wait()


def _wait_http(httpx: object, url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer")


def test_a_store_from_before_audio_hashes_is_not_embedded_again(tmp_path: Path) -> None:
    from mess.audio.discover import _bytes_hash

    music = tmp_path / "music"
    paths = _tones(music, 3)
    store = tmp_path / "store"
    _clean(music, store)
    with sqlite3.connect(store / "catalog.sqlite") as db:  # what an older mess wrote: file-byte hashes, no stamps
        for path in paths:
            old, new = (
                _bytes_hash(path),
                db.execute("SELECT content_hash FROM tracks WHERE path=?", (str(path),)).fetchone()[0],
            )
            db.execute("UPDATE tracks SET content_hash=?, stamp='' WHERE path=?", (old, str(path)))
            db.execute("UPDATE vectors SET content_hash=? WHERE content_hash=?", (old, new))
    out = _mess("extract", str(music), *DSP, "--store", str(store))
    assert out.returncode == 0 and "0 embedded, 3 unchanged" in out.stderr, out.stderr
    paths[0].write_bytes(paths[0].read_bytes())  # rewritten: a new stamp, hashed the new way, embedded once more
    assert "1 embedded" in _mess("extract", str(music), *DSP, "--store", str(store)).stderr


def test_two_track_store_scores_a_copy_as_a_copy(tmp_path: Path) -> None:
    """z-scores fitted on two tracks made them exact opposites (-1.000), even a track and its own re-encoded copy;
    below MIN_FIT_TRACKS scores are plain cosines, said once, and radio skips the copy as a duplicate."""
    music = tmp_path / "m"
    (tone,) = _tones(music, 1)
    y, sr = sf.read(tone)
    sf.write(music / "tone00_copy.flac", y, sr, subtype="PCM_16")  # the same audio, quantised: other content
    store = str(tmp_path / "st")
    assert _mess("extract", str(music), *DSP, "--store", store).returncode == 0
    sim = _mess("similar", "1", "--store", store, "--json")
    assert sim.returncode == 0, sim.stderr
    answer = json.loads(sim.stdout)
    assert [r["score"] for r in answer["results"]] == [pytest.approx(1.0, abs=1e-3)]
    assert answer["results"][0]["duplicate"] and "plain cosines" in answer["norm_note"]
    shown = _mess("similar", "1", "--store", store)
    assert (shown.stdout + shown.stderr).count("plain cosines") == 1
    radio = _mess("playlist", "radio", "1", "--store", store)
    assert radio.returncode == 0, radio.stderr
    said = radio.stdout + radio.stderr
    assert "no track fits (no duplicates)" in said and "plain cosines" in said


_KILL_AT_REPORT_JSON = """
import builtins, io, os, signal, sys
real = io.open
def killing_open(file, mode="r", *args, **kwargs):
    handle = real(file, mode, *args, **kwargs)
    name = os.path.basename(str(file))
    if ("w" in mode or "x" in mode) and name.lstrip(".").startswith("probe-") and ".json" in name:
        os.kill(os.getpid(), signal.SIGKILL)  # the report JSON opened for writing, nothing written to it yet
    return handle
builtins.open = io.open = killing_open  # pathlib opens through io.open
sys.argv = ["mess", *sys.argv[1:]]
from mess.cli.main import main
main()
"""


def test_a_probe_killed_while_writing_its_report_leaves_map_and_report_agreeing(extracted_tones: Extracted) -> None:
    """The aspect map was stored before the reports, and the report JSON written in place: a kill in between left
    the map of the new probe beside the old report (or an empty one) that the server and `fuse report` read."""
    _, store = extracted_tones(10, "st")
    probe = ["probe", "--model", "dsp", "--store", str(store), "--control", "none", "--workers", "1"]
    first = _mess(*probe, "--folds", "2", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["aspect_map_stored"]
    report = Path(json.loads(first.stdout)["files"]["json"])
    killed = subprocess.run([sys.executable, "-c", _KILL_AT_REPORT_JSON, *probe, "--folds", "3"],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    on_disk = json.loads(report.read_text())  # whole: the old report
    fs = FeatureStore(store, readonly=True)
    try:
        stored = fs.aspect_scores(fs.run("dsp"))
    finally:
        fs.close()
    assert stored == pytest.approx({a["aspect"]: a["score"] for a in on_disk["aspects"]}, abs=1e-6)


def test_temp_files_of_interrupted_writes_are_named_and_repaired(extracted_tones: Extracted) -> None:
    """A killed `mess index` (or fuse, probe) left STORE/indexes/.NAME.XXXXXXXX.tmp for ever; check said ok."""
    from mess.store.paths import TEMP_GRACE_SECONDS, temp_path

    _, store = extracted_tones(3, "st")
    assert _mess("index", "--store", str(store), "--model", "dsp").returncode == 0
    index = next((store / "indexes").glob("*.faiss"))
    left = temp_path(index)
    left.write_bytes(b"\0" * 2_000_000)  # what a kill between write and rename leaves
    old = time.time() - TEMP_GRACE_SECONDS - 5
    os.utime(left, (old, old))
    live = temp_path(index)
    live.write_bytes(b"\0")  # a write in progress: not touched
    checked = _mess("check", "--store", str(store), "--json")
    assert checked.returncode == 0, checked.stderr
    temps = [p for p in json.loads(checked.stdout)["problems"] if p["kind"] == "temp-files"]
    assert len(temps) == 1 and "1 temp file of" in temps[0]["message"] and "2.0 MB" in temps[0]["message"]
    repaired = _mess("check", "--repair", "--store", str(store))
    assert repaired.returncode == 0 and "deleted 1 temp file of" in repaired.stdout + repaired.stderr
    assert not left.exists() and live.exists()
    live.unlink()
    after = _mess("check", "--store", str(store), "--json")
    assert json.loads(after.stdout)["problems"] == []


@pytest.fixture()
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """A read-only view of a folder: a read-only bind mount (skips where one cannot be made: not root, say)."""
    undo: list[Callable[[], object]] = []

    def view(folder: Path) -> Path:
        mount = tmp_path / f"ro-{len(undo)}"
        mount.mkdir()
        if subprocess.run(["mount", "--bind", str(folder), str(mount)], capture_output=True).returncode:
            pytest.skip("cannot bind-mount a read-only view here")
        undo.append(lambda: subprocess.run(["umount", str(mount)], capture_output=True))
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], capture_output=True).returncode:
            pytest.skip("cannot make a mount read-only here")
        return mount

    yield view
    for step in reversed(undo):
        step()


def test_a_store_on_a_read_only_file_system_is_read_not_called_damaged(tmp_path: Path, read_only) -> None:
    """SQLite cannot create the WAL's shared-memory file there, so every reader said the (whole) store was damaged
    and advised restoring the catalog from a backup or extracting again."""
    store = tmp_path / "store"
    _tones(tmp_path / "music", 3)
    assert _mess("extract", str(tmp_path / "music"), "--store", str(store), "--model", "dsp").returncode == 0
    assert not (store / "catalog.sqlite-shm").exists()  # the writer's close folded the WAL in and removed it
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    want = _mess("similar", "1", "--store", str(copy), "--json")
    view = read_only(store)
    got = _mess("similar", "1", "--store", str(view), "--json")
    assert got.returncode == 0 and json.loads(got.stdout)["results"] == json.loads(want.stdout)["results"], got.stderr
    checked = _mess("check", "--store", str(view))
    assert checked.returncode == 0 and "damaged" not in checked.stdout, checked.stdout + checked.stderr
    # a writer killed after a commit left it in the WAL file alone: read as it is, the catalog would miss it
    killed = subprocess.run([sys.executable, "-c", "import os, signal, sqlite3; db = sqlite3.connect('catalog.sqlite');"
                             "db.execute('PRAGMA wal_autocheckpoint=0'); db.execute(\"UPDATE tracks SET title='late'\")"
                             "; db.commit(); os.kill(os.getpid(), signal.SIGKILL)"], cwd=copy)
    assert killed.returncode == -signal.SIGKILL and (copy / "catalog.sqlite-wal").stat().st_size
    (copy / "catalog.sqlite-shm").unlink(missing_ok=True)
    refused = _mess("info", "--store", str(read_only(copy)))
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "damaged" not in said and "read-only file system" in said, said
    assert "mess check --repair" in said


def test_a_moved_folder_keeps_its_tracks_and_files_deleted_are_named_and_pruned(tmp_path: Path) -> None:
    """After the music folder moved, `mess extract NEW` added the files again and kept the old paths without a word
    (every search answered each file twice, once by a path that no longer exists). A moved file now takes its
    track's row (same id, the new path); files deleted from disk are named with `--prune`, which forgets them, and
    `--prune` of a folder that no longer exists forgets what was under it."""
    store, old, new = str(tmp_path / "store"), tmp_path / "old", tmp_path / "new"
    _tones(old, 3)
    assert _mess("extract", str(old), "--store", store, "--model", "dsp").returncode == 0
    with closing(FeatureStore(Path(store), readonly=True)) as fs:
        ids = {Path(t.path).name: t.id for t in fs.tracks()}
    old.rename(new)
    moved = _mess("extract", str(new), "--store", store, "--model", "dsp")
    said = " ".join((moved.stdout + moved.stderr).split())
    assert moved.returncode == 0 and "no longer on disk" not in said, said
    with closing(FeatureStore(Path(store), readonly=True)) as fs:
        assert {t.path: t.id for t in fs.tracks()} == {str(new / name): i for name, i in ids.items()}
    gone = sorted(new.glob("*.wav"))[0]
    gone.unlink()
    deleted = _mess("extract", str(new), "--store", store, "--model", "dsp")
    said = " ".join((deleted.stdout + deleted.stderr).split())
    assert deleted.returncode == 0 and "1 catalogued file is no longer on disk" in said, said
    assert str(gone) in said and "--prune" in said
    pruned = _mess("extract", str(new), "--prune", "--store", store, "--model", "dsp")
    said = " ".join((pruned.stdout + pruned.stderr).split())
    assert pruned.returncode == 0 and "1 removed" in said and "no longer on disk" not in said, said
    other = tmp_path / "other"
    _tones(other, 2, offset=3)
    assert _mess("extract", str(other), "--store", store, "--model", "dsp").returncode == 0
    shutil.rmtree(other)
    pruned = _mess("extract", str(new), str(other), "--prune", "--store", store, "--model", "dsp")
    said = " ".join((pruned.stdout + pruned.stderr).split())
    assert pruned.returncode == 0 and "2 removed" in said, said
    with closing(FeatureStore(Path(store), readonly=True)) as fs:
        assert sorted(fs.all_paths()) == [str(p) for p in sorted(new.glob("*.wav"))]


def test_index_and_evaluate_say_when_scores_are_plain_cosines(tmp_path: Path, extracted_tones: Extracted) -> None:
    """Below MIN_FIT_TRACKS the default z-scores fall back to plain cosines: similar said so, while index and
    evaluate reported figures under a normalisation they did not use."""
    music, st = extracted_tones(4, "st")
    paths, store = sorted(music.iterdir()), str(st)
    index = _mess("index", "--store", store, "--json")
    assert index.returncode == 0 and "plain cosines" in json.loads(index.stdout)["norm_note"], index.stderr
    labels = tmp_path / "labels.csv"
    labels.write_text("path,group\n" + "".join(f"{p},{'ab'[i // 2]}\n" for i, p in enumerate(paths)))
    args = ["evaluate", "--store", store, "--labels", str(labels), "--label", "group",
            "--plot", str(tmp_path / "e.png")]
    ev = _mess(*args, "--json")
    assert ev.returncode == 0 and "plain cosines" in json.loads(ev.stdout)["norm_note"], ev.stderr
    shown = _mess(*args)
    assert (shown.stdout + shown.stderr).count("plain cosines") == 1


def test_an_ivf_index_asked_of_too_few_tracks_says_it_is_flat(extracted_tones: Extracted) -> None:
    """`mess index --kind ivf` on a small collection built a flat index and printed 'built flat index' without
    saying why; the line and --json (note) now say how many tracks IVF needs."""
    store = str(extracted_tones(10, "st")[1])
    out = _mess("index", "--kind", "ivf", "--store", store, "--json")
    report = json.loads(out.stdout)
    assert report["kind"] == "flat" and report["note"] == "ivf needs 32 tracks to train its lists; 10 got a flat " \
        "index (exact)", out.stdout
    shown = _mess("index", "--kind", "ivf", "--rebuild", "--store", store)
    assert "ivf needs 32 tracks" in " ".join((shown.stdout + shown.stderr).split())
    assert json.loads(_mess("index", "--kind", "flat", "--store", store, "--json").stdout)["note"] == ""


def test_a_flat_index_built_for_too_small_an_ivf_request_is_kept_until_ivf_can_train(tmp_path: Path) -> None:
    """`mess index --kind ivf` on 10 tracks built a flat index, and every later run built it again (the index on disk
    was not of the kind asked for). It is current while the collection is unchanged (its files are not written
    again), a changed collection gets a new one, and it becomes IVF once IVF can train (32 tracks)."""
    music, store = tmp_path / "m", str(tmp_path / "st")
    _tones(music, 10, seconds=1.5)
    assert _mess("extract", str(music), *DSP, "--store", store).returncode == 0

    def saved(path: str) -> list[tuple[int, int]]:  # a save replaces each file: a new inode and mtime
        stats = [Path(path).with_suffix(suffix).stat() for suffix in (".faiss", ".json", ".npz")]
        return [(st.st_ino, st.st_mtime_ns) for st in stats]

    first = json.loads(_mess("index", "--kind", "ivf", "--store", store, "--json").stdout)
    files = saved(first["path"])
    again = json.loads(_mess("index", "--kind", "ivf", "--store", store, "--json").stdout)
    assert saved(first["path"]) == files, "an unchanged collection's index was written again"
    assert [(r["mode"], r["kind"]) for r in (first, again)] == [("built", "flat"), ("unchanged", "flat")], again
    assert "ivf needs 32 tracks" in again["note"]
    shown = _mess("index", "--kind", "ivf", "--store", store)
    assert "unchanged flat index" in " ".join((shown.stdout + shown.stderr).split()), shown.stderr
    assert " ".join((shown.stdout + shown.stderr).split()).count("ivf needs 32 tracks") == 1, shown.stderr
    _tones(music, 1, seconds=1.5, offset=10)
    assert _mess("extract", str(music), *DSP, "--store", store).returncode == 0
    changed = json.loads(_mess("index", "--kind", "ivf", "--store", store, "--json").stdout)
    assert (changed["mode"], changed["kind"], changed["n"]) == ("updated", "flat", 11), changed
    assert saved(first["path"]) != files
    _tones(music, 21, seconds=1.5, offset=11)
    assert _mess("extract", str(music), *DSP, "--store", store).returncode == 0
    grown = json.loads(_mess("index", "--store", store, "--json").stdout)  # the request is kept: ivf
    assert (grown["mode"], grown["kind"], grown["n"], grown["note"]) == ("built", "ivf", 32, ""), grown
