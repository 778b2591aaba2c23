"""Red-team of the store's promises with real processes: writers frozen (SIGSTOP) at a chosen call, then let go or
killed (SIGKILL); readers and other writers meanwhile; a store's files replaced by what a row file cannot be. The
commands around them (the readers, the other writers, `check`) run in this process (:func:`mess_here`).

A process is frozen by itself, at the call named in ``FREEZE`` (``module:attribute:before|after``), and the test
waits for it to stop (``waitpid`` with ``WUNTRACED``): no sleeps, no races on timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_store_faults import (  # noqa: F401 -- fixtures
    DSP,
    Extracted,
    _assert_same,
    _by_path,
    _tones,
    extracted_tones,
    read_only,
    tone_templates,
)

from conftest import mess_here
from mess.store import FeatureStore, StoreDamaged

_FREEZING = """
import importlib, os, signal, sys, threading
module, attribute, when = os.environ["FREEZE"].split(":")
owner = importlib.import_module(module)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
real, frozen = getattr(owner, name), []
def freeze():  # sent to this thread, which stops at once (sent to the process, the main thread takes it, later)
    if not frozen:
        frozen.append(signal.pthread_kill(threading.get_ident(), signal.SIGSTOP))
match = os.environ.get("FREEZE_MATCH", "")  # only at a call one of whose arguments holds it
def freezing(*args, **kwargs):
    hit = not match or any(match in str(a) for a in args)
    if when == "before" and hit:
        freeze()
    out = real(*args, **kwargs)
    if when == "after" and hit:
        freeze()
    return out
setattr(owner, name, freezing)
sys.argv = ["mess", *sys.argv[1:]]
from mess.cli.main import main
main()
"""


def _frozen(at: str, *args: str, match: str = "") -> subprocess.Popen:
    """`mess ARGS`, stopped by itself once at the call ``at`` (``module:attribute:before|after``), the first one with
    an argument holding ``match``."""
    proc = subprocess.Popen([sys.executable, "-c", _FREEZING, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "FREEZE": at, "FREEZE_MATCH": match})
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"{args} ended before {at}: {proc.communicate()}"
    return proc


def _killed(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _said(out: subprocess.CompletedProcess) -> str:
    """stdout and stderr as one line (rich wraps long messages)."""
    return " ".join((out.stdout + out.stderr).split())


# ------------------------------------------------------------------ fused vectors: export racing fuse apply


@pytest.fixture(scope="module")
def fused_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """(music, a dsp store of 8 tagged FLACs whose fused vectors come from the first checkpoint, two checkpoints)."""
    from mutagen.flac import FLAC

    from mess.fusion.apply import apply_fusion
    from mess.fusion.data import load_layers
    from mess.fusion.train import FusionConfig, save_checkpoint, train_fusion

    root = tmp_path_factory.mktemp("fused")
    music, store = root / "music", root / "store"
    music.mkdir()
    for i, wav in enumerate(_tones(root / "wav", 8, seconds=2.0)):
        sf.write(music / f"{wav.stem}.flac", *sf.read(wav, dtype="float32"))
        tags = FLAC(music / f"{wav.stem}.flac")
        tags["album"] = f"album {i // 2}"
        tags.save()
    assert mess_here("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    checkpoints = [root / "first.pt", root / "second.pt"]
    with closing(FeatureStore(store)) as fs:
        layers = load_layers(fs, fs.run("dsp"))
        for seed, path in enumerate(checkpoints):
            config = FusionConfig(label="album", fusion_dim=8, weight_epochs=2, max_epochs=0, seed=seed)
            save_checkpoint(train_fusion(layers, config), path)
        apply_fusion(fs, checkpoints[0], "dsp")
    return music, store, checkpoints


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fused(store: Path) -> dict[int, np.ndarray]:
    """track id -> fused vector, as a fresh reader gets them."""
    from mess.constants import FUSED

    with closing(FeatureStore(store, readonly=True)) as fs:
        return dict(zip(*fs.derived_matrix(fs.run("dsp"), FUSED), strict=True))


def _exported(out: Path) -> tuple[str, dict[int, np.ndarray], int]:
    """(checkpoint SHA-256, track id -> vector, tracks not fused) of an `export --fused` npz."""
    with np.load(out) as npz:
        rows = dict(zip(npz["track_id"].tolist(), npz["vectors_fused"], strict=True))
        return str(npz["fused_checkpoint_sha256"]), rows, int(npz["tracks_not_fused"])


def _same(got: dict[int, np.ndarray], want: dict[int, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for key, vec in want.items():
        np.testing.assert_array_equal(got[key], vec, err_msg=str(key))


@pytest.mark.xdist_group("store_redteam_fused")  # one worker builds the module's fixture
def test_export_frozen_between_vectors_and_checkpoint_names_the_network_that_made_them(
        fused_store: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    """`export --fused` read the vectors, then (outside that snapshot) the checkpoint's SHA-256 and the track count:
    a `fuse apply` committing in between paired the first network's rows with the second network's hash. Frozen
    right after it read the vectors while another network's apply commits, it still writes one version."""
    store, before, out, export = _frozen_export(fused_store, tmp_path, "after")
    first, second = fused_store[2]
    applied = mess_here("fuse", "apply", "--checkpoint", str(second), "--store", str(store))
    assert applied.returncode == 0, applied.stderr
    sha, rows, not_fused = _resumed(export, out)
    assert (sha, not_fused) == (_sha(first), 0)
    _same(rows, before)
    after = _fused(store)
    assert not all(np.array_equal(after[k], before[k]) for k in before)  # the second network's vectors differ
    assert _exported(out)[0] != _sha(second)


def _resumed(export: subprocess.Popen, out: Path) -> tuple[str, dict[int, np.ndarray], int]:
    """The frozen ``export`` let go: what it wrote to ``out`` (see :func:`_exported`), once it ended well."""
    export.send_signal(signal.SIGCONT)
    _, err = export.communicate(timeout=120)
    assert export.returncode == 0, err
    return _exported(out)


def _frozen_export(fused_store: tuple[Path, Path, list[Path]], tmp_path: Path, when: str
                   ) -> tuple[Path, dict[int, np.ndarray], Path, subprocess.Popen]:
    """A copy of the fused store, its fused vectors, and `export --fused` into ``out`` frozen ``when`` ('before',
    'after') it read the fused file: (store, fused vectors before, out, the frozen export)."""
    store = tmp_path / "store"
    shutil.copytree(fused_store[1], store)
    before = _fused(store)
    out = tmp_path / "fused.npz"
    export = _frozen(f"mess.store.export:fused_matrix:{when}", "export", str(out), "--fused", "--store", str(store))
    return store, before, out, export


@pytest.mark.xdist_group("store_redteam_fused")
def test_export_frozen_across_two_fuse_applies_reads_the_newest_set_itself(
        fused_store: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    """`export --fused` frozen before it read the fused file, while two `fuse apply`s commit (the second deletes the
    file its catalog version names), was told 'rewritten twice while read (try again)'. It now reads again, on the
    newest version: the last network's hash with its rows."""
    store, before, out, export = _frozen_export(fused_store, tmp_path, "before")
    first, second = fused_store[2]
    for checkpoint in (first, second):
        applied = mess_here("fuse", "apply", "--checkpoint", str(checkpoint), "--store", str(store))
        assert applied.returncode == 0, applied.stderr
    sha, rows, not_fused = _resumed(export, out)
    assert (sha, not_fused) == (_sha(second), 0)
    after = _fused(store)
    _same(rows, after)
    assert not all(np.array_equal(after[k], before[k]) for k in before)


@pytest.mark.xdist_group("store_redteam_fused")
def test_fuse_apply_killed_before_its_commit_leaves_the_set_before_whole(
        fused_store: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    """`fuse apply` frozen after writing its new file, before the catalog names it: a reader gets the committed set;
    killed there, the store checks whole, still serves that set, and a rerun applies the network, leaving no
    orphan file."""
    _, original, (_, second) = fused_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    before = _fused(store)
    apply = _frozen("mess.store.derived:RowFile.replace:after", "fuse", "apply", "--checkpoint", str(second),
                    "--store", str(store))
    _same(_fused(store), before)
    _killed(apply)
    checked = mess_here("check", "--store", str(store))
    assert checked.returncode == 0 and "damaged" not in _said(checked), _said(checked)
    _same(_fused(store), before)
    again = mess_here("fuse", "apply", "--checkpoint", str(second), "--store", str(store))
    assert again.returncode == 0, again.stderr
    assert len(list((store / "runs" / "1" / "derived").iterdir())) == 2  # the new file and the one before it


@pytest.mark.xdist_group("store_redteam_fused")
def test_a_fused_file_replaced_by_a_directory_is_named_and_dropped_by_repair(
        fused_store: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    """The fused file replaced by a directory read as 'holds 0 rows', and `check --repair` then failed ('cannot write
    to the store (...: Is a directory) ... free disk space, say'): the store stayed refused. It is named, and the
    repair drops the set, setting the directory aside (nothing deleted)."""
    from mess.constants import FUSED

    _, original, _ = fused_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    with closing(FeatureStore(store, readonly=True)) as fs:
        path = fs.derived_path(fs.run("dsp"), FUSED)
    path.unlink()
    path.mkdir()
    (path / "kept.txt").write_text("a user's file")
    checked = mess_here("check", "--store", str(store))
    assert checked.returncode == 1 and f"{path.name} is a directory, not a row file" in _said(checked), _said(checked)
    repaired = mess_here("check", "--repair", "--store", str(store))
    assert repaired.returncode == 0 and "dropped the damaged fused vectors" in _said(repaired), _said(repaired)
    assert [p.read_text() for p in path.parent.glob("*.not-a-row-file/kept.txt")] == ["a user's file"]
    with closing(FeatureStore(store, readonly=True)) as fs:
        assert fs.derived_meta(fs.run("dsp"), FUSED) is None


# ------------------------------------------------------------------ an extract frozen mid-write


@pytest.fixture(scope="module")
def dsp_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(music, a dsp store of its 4 tones); copy the store before changing it."""
    root = tmp_path_factory.mktemp("dsp")
    _tones(root / "music", 4, seconds=2.0)
    assert mess_here("extract", str(root / "music"), *DSP, "--store", str(root / "store")).returncode == 0
    return root / "music", root / "store"


@pytest.mark.xdist_group("store_redteam_dsp")
def test_an_extract_frozen_mid_write_is_waited_for_named_and_killed_without_loss(dsp_store: tuple[Path, Path],
                                                                                 tmp_path: Path) -> None:
    """`mess extract` frozen with its rows written but not committed (holding the write lock): a reader gets what
    is committed, `check` finds no damage, another writer says who holds the store, a repair waits for it, saying
    so; killed there, the repair goes on, and the next extract adds the files, every committed vector kept."""
    _, original = dsp_store
    store, new = tmp_path / "store", tmp_path / "new"
    shutil.copytree(original, store)
    _tones(new, 3, seconds=2.0, offset=4)
    extract = _frozen("mess.store.vectors:pack:before", "extract", str(new), *DSP, "--store", str(store))
    try:
        _assert_same(_by_path(store), _by_path(original))
        checked = mess_here("check", "--json", "--store", str(store))  # bytes past the catalog's rows; files not done
        kinds = {p["kind"] for p in json.loads(checked.stdout)["problems"]}
        assert checked.returncode == 0 and kinds == {"orphan-rows", "not-embedded"}, checked.stdout
        repair = subprocess.Popen([sys.executable, "-m", "mess.cli", "check", "--repair", "--store", str(store)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert repair.stderr is not None
        waiting = repair.stderr.readline()
        assert "waiting for the store lock" in waiting and f"pid {extract.pid}" in waiting, waiting
    finally:
        _killed(extract)
    _, err = repair.communicate(timeout=120)
    assert repair.returncode == 0 and "Traceback" not in err, err
    again = mess_here("extract", str(new), *DSP, "--store", str(store))
    assert again.returncode == 0 and "3 embedded" in again.stderr, again.stderr
    now, before = _by_path(store), _by_path(original)  # read back through their checksums
    assert sorted(set(now) - set(before)) == [str(p) for p in sorted(new.glob("*.wav"))]
    _assert_same({path: now[path] for path in before}, before)


# ------------------------------------------------------------------ files that are not what the store wrote


@pytest.mark.xdist_group("store_redteam_dsp")
def test_row_files_replaced_by_a_directory_and_a_link_loop_are_named_and_repaired(dsp_store: tuple[Path, Path],
                                                                                 tmp_path: Path) -> None:
    """A row file replaced by a directory: every reader ended in 'error: .../001.f16: Is a directory', `check` too
    (no repair possible), extract in 'cannot write to the store (Is a directory)'. By a link loop: `check --repair`
    dropped every file's vectors and said the store was whole, and extract still failed ('Too many levels of
    symbolic links ... free disk space, say')."""
    music, original = dsp_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    folder, loop = store / "runs" / "1" / "track" / "001.f16", store / "runs" / "1" / "segment" / "002.f16"
    folder.unlink()
    folder.mkdir()
    (folder / "kept.txt").write_text("a user's file")
    loop.unlink()
    loop.symlink_to(loop.name)
    with pytest.raises(StoreDamaged, match="runs/1/track/001.f16 is a directory, not a row file"):
        FeatureStore(store, readonly=True)
    checked = mess_here("check", "--store", str(store), "--json")
    problems = json.loads(checked.stdout)["problems"]
    assert checked.returncode == 1 and [p["kind"] for p in problems] == ["not-a-file"] * 2, checked.stdout
    assert "runs/1/segment/002.f16 is a symbolic link loop" in problems[1]["message"]
    repaired = mess_here("check", "--repair", "--store", str(store))
    said = _said(repaired)
    assert repaired.returncode == 0 and "moved runs/1/track/001.f16 (a directory, not a row file) aside" in said, said
    assert "moved runs/1/segment/002.f16 (a symbolic link loop, not a row file) aside" in said
    assert "dropped the vectors of 4 files" in said
    assert [p.read_text() for p in store.glob("runs/1/track/*.not-a-row-file/kept.txt")] == ["a user's file"]
    again = mess_here("extract", str(music), *DSP, "--store", str(store))
    assert again.returncode == 0 and "4 embedded" in again.stderr, again.stderr
    _assert_same(_by_path(store), _by_path(original))


@pytest.mark.xdist_group("store_redteam_dsp")
def test_a_file_where_the_runs_folder_belongs_is_named_and_set_aside(dsp_store: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    """STORE/runs replaced by a file: every command, `check` included, ended in 'error: STORE/runs/1/track/000.f16:
    Not a directory', and nothing could repair it."""
    music, original = dsp_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    shutil.rmtree(store / "runs")
    (store / "runs").write_text("not a folder")
    with pytest.raises(StoreDamaged, match="runs/1/track/000.f16 is out of reach: a folder on its path is a file"):
        FeatureStore(store, readonly=True)
    repaired = mess_here("check", "--repair", "--store", str(store))
    said = _said(repaired)
    assert repaired.returncode == 0 and "moved runs (a file where a folder of runs/1/track/000.f16 belongs) aside" \
        in said, said
    assert [p.read_text() for p in store.glob("runs.*.not-a-row-file")] == ["not a folder"]
    again = mess_here("extract", str(music), *DSP, "--store", str(store))
    assert again.returncode == 0 and "4 embedded" in again.stderr, again.stderr
    _assert_same(_by_path(store), _by_path(original))


@pytest.mark.xdist_group("store_redteam_dsp")
@pytest.mark.parametrize(("damage", "said"), [("empty", "is empty but it holds vectors"),
                                              ("a folder", "is a folder or a device, not a file")])
def test_a_catalog_that_holds_nothing_is_damage_not_a_new_store(dsp_store: tuple[Path, Path], tmp_path: Path,
                                                                damage: str, said: str) -> None:
    """A zero-byte catalog.sqlite beside the row files was 'no feature store at STORE yet (run `mess extract`
    first)', and `mess extract` then started a new catalog over them: every file embedded again at row 0, the old
    rows overwritten, without a word. A folder in its place was 'cannot open a feature store (disk I/O error)'."""
    music, original = dsp_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    catalog = store / "catalog.sqlite"
    if damage == "empty":
        catalog.write_bytes(b"")
    else:
        catalog.unlink()
        catalog.mkdir()
    rows = {p: p.read_bytes() for p in store.glob("runs/*/*/*.f16")}
    for command in (["similar", "1"], ["extract", str(music), *DSP]):
        out = mess_here(*command, "--store", str(store))
        assert out.returncode == 1 and f"catalog (catalog.sqlite) {said}" in _said(out), _said(out)
        assert "restore catalog.sqlite from a backup" in _said(out) and "Traceback" not in _said(out)
    assert {p: p.read_bytes() for p in store.glob("runs/*/*/*.f16")} == rows


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (skips where one cannot be mounted: not root, say)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode:  # busy: detached now, freed when not
        subprocess.run(["umount", "--lazy", str(mount)], capture_output=True)


@pytest.mark.xdist_group("store_redteam_dsp")
def test_a_store_on_a_full_disk_says_the_disk_is_full(dsp_store: tuple[Path, Path], small_disk: Path) -> None:
    """With no byte left where SQLite must create the catalog's shared-memory file, every command said 'cannot
    open a feature store at STORE (disk I/O error)'; it now says the disk is full, and works once space is freed."""
    music, original = dsp_store
    store = small_disk / "store"
    shutil.copytree(original, store)
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:  # the last one to close removes -wal and -shm
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not list(store.glob("catalog.sqlite-*"))
    filler = small_disk / "filler"
    with filler.open("wb", buffering=0) as f, pytest.raises(OSError):  # unbuffered: nothing left to fail on close
        while True:
            f.write(b"\0" * 65536)
    for command in (["similar", "1"], ["extract", str(music), *DSP]):
        full = mess_here(*command, "--store", str(store))
        said = _said(full)
        assert full.returncode == 1 and "its disk is full (0 kB free): free space and run the command again" in said
        assert "Traceback" not in said
    filler.unlink()
    assert mess_here("similar", "1", "--store", str(store)).returncode == 0


@pytest.mark.xdist_group("store_redteam_dsp")
def test_an_indexes_folder_replaced_by_a_file_leaves_search_answering(dsp_store: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    """STORE/indexes replaced by a file ended `mess similar` in 'error: STORE/indexes/run1-....faiss: Not a
    directory': the saved index is a cache, and the search answers from the vectors without it."""
    _, original = dsp_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    want = mess_here("similar", "1", "--json", "--store", str(store))
    shutil.rmtree(store / "indexes", ignore_errors=True)
    (store / "indexes").write_text("not a folder")
    got = mess_here("similar", "1", "--json", "--store", str(store))
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["results"] == json.loads(want.stdout)["results"]


@pytest.mark.xdist_group("store_redteam_dsp")
@pytest.mark.parametrize("part", ["faiss", "npz", "augment.npz"])
def test_a_folder_where_an_index_file_belongs_is_moved_aside_by_repair(dsp_store: tuple[Path, Path], tmp_path: Path,
                                                                       part: str) -> None:
    """A folder named like a saved index file: `mess check` called the index out of date and said `--repair`
    deletes it; the repair ended in 'error: ...: Is a directory' (the store's own repairs unsaid), and `mess index`
    failed so for good. The repair renames the folder aside (its files kept) and `mess index` saves again."""
    _, original = dsp_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    assert mess_here("index", "--store", str(store)).returncode == 0
    target = store / "indexes" / f"run1-all-power.{part}"
    target.unlink()
    target.mkdir()
    (target / "kept.txt").write_text("mine")
    checked = mess_here("check", "--json", "--store", str(store))
    assert checked.returncode == 0 and {p["kind"] for p in json.loads(checked.stdout)["problems"]} == {"stale-index"}
    repaired = mess_here("check", "--repair", "--store", str(store))
    said = repaired.stdout + repaired.stderr
    assert repaired.returncode == 0 and "moved the folder" in said, said
    aside = list((store / "indexes").glob(f"run1-all-power.{part}.*.not-an-index"))
    assert len(aside) == 1 and (aside[0] / "kept.txt").read_text() == "mine"
    assert mess_here("index", "--store", str(store)).returncode == 0 and target.is_file()
    assert mess_here("check", "--json", "--store", str(store)).stdout.count("stale-index") == 0


@pytest.mark.xdist_group("store_redteam_dsp")
@pytest.mark.parametrize(("renamed", "left"), [
    ("layer-mfcc", ["run1-layer-mfcc-zscore.json"]),
    ("mfcc-zscore.faiss", ["run1-layer-mfcc-zscore.faiss", "run1-layer-mfcc-zscore.json"]),
])
def test_a_first_index_killed_between_its_files_leaves_nothing_unnamed(dsp_store: tuple[Path, Path], tmp_path: Path,
                                                                        renamed: str, left: list[str]) -> None:
    """The first `mess index` of a vector set killed between the renames of its three files (they are written and
    synced first, then renamed: the .json, the .faiss, the .npz): `mess check` said ok and `--repair` kept a lone .npz
    for good (128 MB at a million tracks), when the .npz was renamed first. What is left is named as an index out of
    date, deleted by the repair, and the next `mess index` saves all three files."""
    _, original = dsp_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    index = _frozen("os:replace:after", "index", "--layer", "mfcc", "--store", str(store), match=renamed)
    _killed(index)
    assert sorted(p.name for p in (store / "indexes").iterdir() if not p.name.startswith(".")) == left
    checked = mess_here("check", "--json", "--store", str(store))
    stale = [p["message"] for p in json.loads(checked.stdout)["problems"] if p["kind"] == "stale-index"]
    assert len(stale) == 1 and stale[0] in [f"{name} is out of date" for name in left], stale
    assert mess_here("check", "--repair", "--store", str(store)).returncode == 0
    assert not any((store / "indexes" / name).exists() for name in left)
    assert mess_here("index", "--layer", "mfcc", "--store", str(store)).returncode == 0
    assert "stale-index" not in mess_here("check", "--json", "--store", str(store)).stdout


@pytest.mark.xdist_group("store_redteam_dsp")
def test_a_writer_on_a_read_only_file_system_is_told_so(dsp_store: tuple[Path, Path], tmp_path: Path,
                                                        read_only: Callable[[Path], Path]) -> None:  # noqa: F811
    """`mess extract` (and index, fuse apply, probe, check --repair) into a store on a read-only mount said only
    'cannot open a feature store at STORE (unable to open database file)'."""
    music, original = dsp_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:  # no -shm: readers need none on a read-only mount
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    refused = subprocess.run([sys.executable, "-m", "mess.cli", "extract", str(music), *DSP, "--store",
                              str(read_only(store))], capture_output=True, text=True, timeout=300)  # a process: in
    # this one the refused writer left catalog.sqlite open, and the mount could not be undone
    said = _said(refused)
    assert refused.returncode == 1 and "it is on a read-only file system: open it read-only" in said, said
    assert "Traceback" not in said


# ------------------------------------------------------------------ the write lock, the write-ahead log


def test_a_folder_named_write_lock_is_named_and_moved_aside_by_repair(extracted_tones: Extracted,  # noqa: F811
                                                                       tmp_path: Path) -> None:
    """A folder where STORE/write.lock belongs stopped every writer with 'error: STORE/write.lock: Is a directory'
    (no advice), and `mess check` said ok. Writers now name the path and what to do, `mess check` names it (exit
    1), `--repair` renames it aside (deleting nothing) and the next extract writes."""
    music, store = extracted_tones(3)
    (store / "write.lock").unlink()
    (store / "write.lock").mkdir()
    (store / "write.lock" / "kept").write_text("mine")
    more = tmp_path / "more"
    _tones(more, 1, seconds=2.0, offset=5)
    refused = mess_here("extract", str(more), *DSP, "--store", str(store))
    said = _said(refused)
    assert refused.returncode == 1 and "Traceback" not in said, said
    assert (f"{store}/write.lock is a folder, not the store's lock file, so nothing can write to the store: move it "
            "aside (`mess check --repair` does) and run the command again") in said, said
    checked = mess_here("check", "--store", str(store))
    assert checked.returncode == 1 and "not-a-file: write.lock is a folder" in _said(checked), _said(checked)
    repaired = mess_here("check", "--repair", "--store", str(store))
    assert repaired.returncode == 0 and "moved write.lock (a folder) aside to write.lock." in _said(repaired)
    aside = [p for p in store.glob("write.lock.*.not-the-lock")]
    assert len(aside) == 1 and (aside[0] / "kept").read_text() == "mine"
    assert mess_here("extract", str(more), *DSP, "--store", str(store)).returncode == 0
    assert len(_by_path(store)) == 4
    assert mess_here("check", "--store", str(store)).returncode == 0


_HOLD = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1], uri=True); db.execute('SELECT COUNT(*) FROM tracks')"
         ".fetchall(); print('open', flush=True); sys.stdin.read()")


def _holding(store: Path) -> subprocess.Popen:
    """A process holding a read-only connection to the store's catalog open until its stdin closes."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, f"{(store / 'catalog.sqlite').as_uri()}?mode=ro"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"
    return holder


@pytest.fixture(scope="module")
def wal_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """(a dsp store whose last `mess extract`, of three more tones, left its commits in catalog.sqlite-wal: a reader
    kept the file open meanwhile, so the extract's close could not fold them in; the six tones)."""
    root = tmp_path_factory.mktemp("wal")
    store = root / "store"
    first, second = _tones(root / "first", 3, seconds=2.0), _tones(root / "second", 3, seconds=2.0, offset=3)
    for music in ("first", "second"):
        holder = _holding(store) if music == "second" else None
        out = mess_here("extract", str(root / music), *DSP, "--store", str(store))
        assert out.returncode == 0, out.stdout + out.stderr
    assert holder is not None
    holder.communicate("")  # a read-only connection folds nothing in when it closes
    assert _wal_frames(store)[2] >= 3
    return store, first + second


def _wal_frames(store: Path) -> tuple[int, list[int], int]:
    """(page size, the 1-based frames of catalog.sqlite-wal that end a commit, frames), read from the file."""
    data = (store / "catalog.sqlite-wal").read_bytes()
    page = int.from_bytes(data[8:12], "big")
    n = (len(data) - 32) // (24 + page)
    at = [32 + i * (24 + page) for i in range(n)]
    return page, [i + 1 for i in range(n) if int.from_bytes(data[at[i] + 4:at[i] + 8], "big")], n


def _frame_offset(page: int, frame: int) -> int:
    return 32 + (frame - 1) * (24 + page)


def test_a_changed_wal_file_names_the_commits_it_lost(wal_store: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """One bit flipped in catalog.sqlite-wal: SQLite's recovery stopped at that frame and every later commit (the
    tracks and vectors of files embedded) counted as never written, without a word. The first command to open the
    store now names it (before SQLite recovers), `mess check` keeps naming it until `--repair` clears the note, and
    the next extract embeds the files again."""
    template, tones = wal_store
    store = tmp_path / "store"
    shutil.copytree(template, store)
    page, commits, _ = _wal_frames(store)
    # the first frame of the third commit (the first records the folder given, the second catalogues its files):
    # every commit after the second is lost, the files catalogued but not embedded
    damaged = commits[1] + 1
    wal = store / "catalog.sqlite-wal"
    data = bytearray(wal.read_bytes())
    data[_frame_offset(page, damaged) + 24 + 1000] ^= 0x10
    wal.write_bytes(bytes(data))
    lost = (f"catalog.sqlite-wal was changed on disk: {len(commits) - 2} commits past frame {damaged} were lost, and "
            "the catalog is as it was before them; the files they embedded are embedded again by the next `mess "
            "extract`")
    searched = mess_here("similar", "1", "--store", str(store))
    assert searched.returncode == 0 and lost in _said(searched), _said(searched)
    for _ in range(2):  # found once, named until cleared
        checked = mess_here("check", "--store", str(store))
        said = _said(checked)
        assert checked.returncode == 0 and f"lost-commits: {lost} (found " in said, said
        assert "not-embedded" in said and said.count("lost-commits:") == 1, said
    assert lost not in _said(mess_here("similar", "1", "--store", str(store)))  # said once by commands
    holder = _holding(store)  # the repair's close then leaves the log as it is (the last writer's folds it in)
    repaired = mess_here("check", "--repair", "--store", str(store))
    assert repaired.returncode == 0 and "cleared the note of the commits catalog.sqlite-wal lost" in _said(repaired)
    checked = mess_here("check", "--store", str(store))  # the same frames, still in the log: not noted again
    assert checked.returncode == 0 and "lost-commits" not in _said(checked) and lost not in _said(checked)
    holder.communicate("")
    again = mess_here("extract", str(tones[3].parent), *DSP, "--store", str(store))
    assert again.returncode == 0 and "0 unchanged" not in again.stdout, again.stdout
    assert sorted(_by_path(store)) == sorted(str(t) for t in tones)
    assert _said(mess_here("check", "--store", str(store))).endswith(": ok")


def test_a_wal_file_cut_short_names_the_commits_its_index_said_were_there(wal_store: tuple[Path, list[Path]],
                                                                         tmp_path: Path) -> None:
    """catalog.sqlite-wal cut short inside a frame: the frames past the cut are gone, but the -shm index the last
    process left says which frame the last commit ended at; the commits between are named."""
    template, _ = wal_store
    store = tmp_path / "store"
    shutil.copytree(template, store)
    page, commits, _ = _wal_frames(store)
    cut = commits[0] + 1
    with (store / "catalog.sqlite-wal").open("r+b") as f:
        f.truncate(_frame_offset(page, cut) + 24 + 100)
    checked = mess_here("check", "--store", str(store))
    said = _said(checked)
    assert checked.returncode == 0, said
    assert (f"lost-commits: catalog.sqlite-wal was cut short on disk at frame {cut}: the commits up to frame "
            f"{commits[-1]} were lost") in said, said


def test_a_changed_wal_header_names_every_commit_of_the_log(wal_store: tuple[Path, list[Path]],
                                                            tmp_path: Path) -> None:
    """A bit flipped in the log's header (its checkpoint count): SQLite reads no frame of a log whose header fails,
    so every commit in it is lost; each is named."""
    template, _ = wal_store
    store = tmp_path / "store"
    shutil.copytree(template, store)
    _, commits, _ = _wal_frames(store)
    with (store / "catalog.sqlite-wal").open("r+b") as f:
        f.seek(15)
        byte = f.read(1)[0]
        f.seek(15)
        f.write(bytes([byte ^ 1]))
    checked = mess_here("check", "--store", str(store))
    said = _said(checked)
    assert checked.returncode == 0, said
    assert (f"lost-commits: catalog.sqlite-wal was changed on disk: {len(commits)} commits past frame 1 were "
            "lost") in said, said


_SPILL = """
import os, signal, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[3]:
    db.execute(sys.argv[3])  # committed: the log's next frames go after it
db.execute("PRAGMA cache_size=2")  # pages: a transaction's changes go to the log before it commits
db.execute("BEGIN IMMEDIATE")
db.execute("CREATE TABLE scratch (x BLOB)")
for _ in range(int(sys.argv[2])):
    db.execute("INSERT INTO scratch VALUES (randomblob(3000))")
os.kill(os.getpid(), signal.SIGSTOP)
"""


def _killed_mid_transaction(store: Path, rows: int, first: str = "") -> None:
    """A real SQLite writer (that commits ``first``, if given) killed (SIGKILL) inside a transaction whose pages
    already went to the log."""
    proc = subprocess.Popen([sys.executable, "-c", _SPILL, str(store / "catalog.sqlite"), str(rows), first])
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    proc.kill()
    proc.wait()


def test_a_killed_writers_unfinished_tail_in_the_wal_is_not_called_damage(wal_store: tuple[Path, list[Path]],
                                                                          tmp_path: Path) -> None:
    """Frames a writer killed mid-transaction left past the last commit (none of them a commit), and those left
    past a later, shorter commit, are what SQLite is meant to drop: no lost commits are named."""
    template, _ = wal_store
    store = tmp_path / "store"
    shutil.copytree(template, store)
    _, commits, frames = _wal_frames(store)
    _killed_mid_transaction(store, 40)
    _, after, grown = _wal_frames(store)
    assert after == commits and grown > frames + 20  # its pages are in the log, uncommitted
    for _ in range(2):
        checked = mess_here("check", "--store", str(store))
        assert checked.returncode == 0 and "lost-commits" not in _said(checked), _said(checked)
        assert not (store / "lost-commits.txt").exists()
        # a shorter commit over the start of that tail (frames of this log past it stay in the file), then a writer
        # killed inside its next transaction
        _killed_mid_transaction(store, 5, "UPDATE tracks SET title='late' WHERE id=1")


def _shm_locks(store: Path) -> set[str]:
    """The POSIX locks this process holds on the store's -shm file (/proc/locks)."""
    st = (store / "catalog.sqlite-shm").stat()
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    lines = Path("/proc/locks").read_text().splitlines()
    return {" ".join(line.split()[1:]) for line in lines  # without the list's own numbering
            if f" {os.getpid()} " in line and f" {device} " in line and "POSIX" in line}


def test_reading_the_wal_index_keeps_this_processs_sqlite_locks(wal_store: tuple[Path, list[Path]],
                                                               tmp_path: Path) -> None:
    """Opening a store reads the -shm index beside a WAL file that holds commits; a descriptor of it closed would
    drop every POSIX lock this process holds on the file, those of its other connections to the store included (a
    reader's mark: a writer could then overwrite pages it reads). They stay."""
    if not Path("/proc/locks").exists():
        pytest.skip("no /proc/locks here")
    template, _ = wal_store
    store = tmp_path / "store"
    shutil.copytree(template, store)
    with closing(FeatureStore(store, readonly=True)) as reader, reader.snapshot():
        assert reader.tracks(reader.run("dsp"))
        held = _shm_locks(store)
        assert held  # the reader's: it has the index open, and a read mark
        with closing(FeatureStore(store, readonly=True)) as again:
            assert held <= _shm_locks(store)
            assert again.tracks(again.run("dsp"))
        assert held <= _shm_locks(store)


def _spec_checksum(data: bytes, seed: tuple[int, int], big: bool) -> tuple[int, int]:
    """The WAL checksum as https://www.sqlite.org/fileformat2.html#walformat defines it, word pair by word pair."""
    order = "big" if big else "little"
    s0, s1 = seed
    for at in range(0, len(data), 8):
        x, y = int.from_bytes(data[at:at + 4], order), int.from_bytes(data[at + 4:at + 8], order)
        s0 = (s0 + x + s1) & 0xFFFFFFFF
        s1 = (s1 + y + s0) & 0xFFFFFFFF
    return s0, s1


def _live_wal(root: Path, page: int, commits: int, pending: int = 0) -> tuple[Path, list[int], int]:
    """A copy (catalog.sqlite, -wal, -shm) of a real SQLite database in WAL mode whose ``commits`` transactions are all
    in its log, taken while its connection is open (and, with ``pending``, inside a transaction whose pages already
    went to the log): (the -wal copy, the 1-based frames that end a commit, frames)."""
    live = root / "live"
    live.mkdir(parents=True)
    db = sqlite3.connect(live / "catalog.sqlite", isolation_level=None)
    db.execute(f"PRAGMA page_size={page}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (x BLOB)")
    for i in range(commits - 1):
        db.execute("INSERT INTO t VALUES (?)", (bytes([i]) * (page * (i % 3 + 1)),))
    if pending:
        db.execute("PRAGMA cache_size=2")
        db.execute("BEGIN IMMEDIATE")
        for _ in range(pending):
            db.execute("INSERT INTO t VALUES (randomblob(?))", (page,))
    store = root / "store"
    store.mkdir()
    for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
        shutil.copyfile(live / name, store / name)
    db.close()
    data = (store / "catalog.sqlite-wal").read_bytes()
    n = (len(data) - 32) // (24 + page)
    ends = [i + 1 for i in range(n) if int.from_bytes(data[32 + i * (24 + page) + 4:][:4], "big")]
    return store / "catalog.sqlite-wal", ends, n


@pytest.mark.parametrize("page", [512, 4096])
def test_the_wal_checksums_are_sqlites_own(tmp_path: Path, page: int) -> None:
    """The checksums lost_commits compares are those SQLite itself stored in a real log (header and every frame,
    each continuing the one before), and the format's definition of them in either byte order."""
    from mess.store.wal import _checksum, _checksums
    wal, ends, n = _live_wal(tmp_path, page, 6)
    data = wal.read_bytes()
    assert n > 6 and len(ends) == 6
    stored = (int.from_bytes(data[24:28], "big"), int.from_bytes(data[28:32], "big"))
    assert _checksum(data[:24], (0, 0), False) == stored == _spec_checksum(data[:24], (0, 0), False)
    frames = np.frombuffer(data, np.uint8, n * (24 + page), 32).reshape(n, 24 + page)
    rows = np.concatenate([frames[:, :8], frames[:, 24:]], axis=1)
    seeds, seed = [], stored
    for i in range(n):
        seeds.append(seed)
        seed = (int.from_bytes(frames[i, 16:20].tobytes(), "big"), int.from_bytes(frames[i, 20:24].tobytes(), "big"))
        assert _spec_checksum(rows[i].tobytes(), seeds[i], False) == seed
    assert _checksums(rows, np.array(seeds, dtype=np.int64), False).tolist() == [
        list(_spec_checksum(rows[i].tobytes(), seeds[i], False)) for i in range(n)]
    big = _checksums(rows, np.array(seeds, dtype=np.int64), True).tolist()
    assert big == [list(_spec_checksum(rows[i].tobytes(), seeds[i], True)) for i in range(n)]
    assert _checksum(data[:24], (7, 2**32 - 1), True) == _spec_checksum(data[:24], (7, 2**32 - 1), True)


def test_lost_commits_of_a_real_log_damaged_cut_or_left_mid_transaction(tmp_path: Path) -> None:
    """On a real SQLite log: intact, or with a killed writer's uncommitted pages past its last commit, nothing is lost;
    a byte changed in a frame loses every commit after the one before it (the -shm index names the last); the file cut
    inside a frame loses the commits from that frame on, as the index said; the header changed loses all of them."""
    from mess.store.wal import lost_commits
    wal, ends, n = _live_wal(tmp_path / "intact", 1024, 5)
    assert lost_commits(wal) is None and ends[-1] == n
    wal, ends, n = _live_wal(tmp_path / "pending", 1024, 5, pending=30)
    assert n > ends[-1] + 20 and lost_commits(wal) is None
    assert ends[2] > ends[1] + 2  # the third commit spans frames
    intact = wal.read_bytes()
    for frame in (ends[1] + 1, ends[1] + 2):  # the first frame of the third commit, or its second
        data = bytearray(intact)
        data[32 + (frame - 1) * (24 + 1024) + 24 + 900] ^= 0x04
        wal.write_bytes(bytes(data))
        damage = lost_commits(wal)
        assert damage is not None and (damage.valid, damage.damaged_at, damage.commits, damage.claimed) == (
            ends[1], frame, sum(end > frame for end in ends), ends[-1])
    wal.write_bytes(intact[:32 + (ends[2] - 1) * (24 + 1024) + 24 + 10])  # cut inside the frame after commit 2's
    damage = lost_commits(wal)
    assert damage is not None and (damage.valid, damage.damaged_at, damage.commits, damage.claimed) == (
        ends[1], ends[2], 0, ends[-1])
    assert damage.key == f"{intact[16:24].hex()}:{ends[-1]}"
    wal.write_bytes(intact[:15] + bytes([intact[15] ^ 1]) + intact[16:])
    damage = lost_commits(wal)
    assert damage is not None and (damage.valid, damage.damaged_at, damage.commits) == (0, 1, len(ends))


@pytest.mark.parametrize(("at", "bit"), [(3, 0x02), (3, 0x01), (10, 0x01)])
def test_a_wal_header_whose_magic_or_page_size_changed_loses_every_commit_and_says_so(tmp_path: Path, at: int,
                                                                                     bit: int) -> None:
    """A bit flipped in the log header's magic number (byte 3: no magic, or the other byte order's) or page size (byte
    10): SQLite then reads no frame of the log, so every commit in it was lost, and lost_commits said nothing ('not a
    log', or frames checked in the wrong byte order). It names them all now; a file that is no log (text, zeros, a
    header cut short) still loses nothing."""
    from mess.store.wal import lost_commits
    wal, ends, _ = _live_wal(tmp_path, 1024, 4)
    data = wal.read_bytes()
    wal.write_bytes(data[:at] + bytes([data[at] ^ bit]) + data[at + 1:])
    with closing(sqlite3.connect(wal.with_name("catalog.sqlite"))) as db:  # what SQLite makes of it
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
    wal.write_bytes(data[:at] + bytes([data[at] ^ bit]) + data[at + 1:])
    damage = lost_commits(wal)
    assert damage is not None and (damage.valid, damage.damaged_at, damage.commits) == (0, 1, len(ends))
    for other in (b"", data[:31], b"not a log\n" * 4000, bytes(40000), data[:8] + b"\0\0\x10\0" + bytes(9000)):
        wal.write_bytes(other)
        assert lost_commits(wal) is None


def test_lost_commits_of_a_real_log_whose_first_frame_or_last_bytes_changed(tmp_path: Path) -> None:
    """A byte of the first frame's salt changed (the header still whole): SQLite reads no frame, every commit is lost
    and named. The file cut inside its first frame, or 20 bytes short of a frame's end: the commits the -shm index
    said were there are named as cut, and SQLite agrees on what is left."""
    from mess.store.wal import lost_commits
    wal, ends, _ = _live_wal(tmp_path, 1024, 4)
    intact = wal.read_bytes()
    size = 24 + 1024
    salt_changed = intact[:32 + 9] + bytes([intact[32 + 9] ^ 0x40]) + intact[32 + 10:]
    for data, want in ((salt_changed, (0, 1, len(ends), ends[-1])),
                       (intact[:32 + 500], (0, 1, 0, ends[-1])),
                       (intact[:32 + ends[1] * size - 20], (ends[0], ends[1], 0, ends[-1]))):
        wal.write_bytes(data)
        damage = lost_commits(wal)
        assert damage is not None and (damage.valid, damage.damaged_at, damage.commits, damage.claimed) == want


def test_lost_commits_trusts_only_a_whole_wal_index_of_this_log(tmp_path: Path) -> None:
    """The -shm index counts only when both copies of its header agree, its checksum holds and it is about this log
    (its salts): a cut log with a torn, changed or other log's index names no loss it cannot show. A frame changed
    just before a commit frame loses that commit too; with no index, none is said to be claimed; the loss's key is the
    log's salts and its last lost commit's checksum, as stored."""
    from mess.store.wal import lost_commits
    wal, ends, _ = _live_wal(tmp_path, 1024, 5)
    shm = wal.with_name("catalog.sqlite-shm")
    intact, index = wal.read_bytes(), shm.read_bytes()
    size = 24 + 1024
    wal.write_bytes(intact[:32 + ends[1] * size + 10])
    cut = lost_commits(wal)
    assert cut is not None and cut.claimed == ends[-1] and cut.commits == 0
    def whole(at: int, new: bytes) -> bytes:  # the index header with ``new`` at ``at``, both copies, checksum redone
        head = bytearray(index[:48])
        head[at:at + len(new)] = new
        head[40:48] = b"".join(v.to_bytes(4, sys.byteorder) for v in _spec_checksum(bytes(head[:40]), (0, 0),
                                                                                       sys.byteorder == "big"))
        return bytes(head) * 2 + index[96:]

    later = (ends[-1] + 7).to_bytes(4, sys.byteorder)
    shm.write_bytes(whole(16, later))
    assert lost_commits(wal).claimed == ends[-1] + 7  # type: ignore[union-attr]  # a whole index is believed
    for changed in (index[:64] + later + index[68:],  # the second copy torn
                    index[:16] + later + index[20:64] + later + index[68:],  # both copies, the checksum not
                    whole(32, bytes(8)),  # another log's (salts)
                    whole(0, (3007001).to_bytes(4, sys.byteorder)),  # another version
                    whole(12, b"\0"),  # not initialised
                    index[:96 - 1], b""):
        shm.write_bytes(changed)
        for cut_at in (32 + ends[1] * size + 10, 32 + 10):  # past a commit, or inside the first frame
            wal.write_bytes(intact[:cut_at])
            assert lost_commits(wal) is None
    frame = ends[2] - 1
    data = bytearray(intact)
    data[32 + (frame - 1) * size + 24 + 7] ^= 0x08
    wal.write_bytes(bytes(data))
    shm.unlink()
    damage = lost_commits(wal)
    last = 32 + (ends[-1] - 1) * size
    assert damage is not None and (damage.valid, damage.damaged_at, damage.commits, damage.claimed) == (
        ends[1], frame, 3, 0)
    assert damage.key == f"{intact[16:24].hex()}:{intact[last + 16:last + 24].hex()}"


def test_lost_commits_of_a_big_endian_log_and_of_a_log_cut_to_its_header(tmp_path: Path) -> None:
    """A log written where words are big-endian (magic 0x377f0683, every checksum summed big-endian, as SQLite reads
    it anywhere) loses nothing whole, and its commits past a changed frame when damaged. A log cut to its header
    loses the commits the -shm index said were there, and none when no index says so."""
    from mess.store.wal import lost_commits
    wal, ends, n = _live_wal(tmp_path, 512, 4)
    data, size = bytearray(wal.read_bytes()), 24 + 512
    data[:4] = (0x377F0683).to_bytes(4, "big")
    seed = _spec_checksum(bytes(data[:24]), (0, 0), True)
    data[24:32] = b"".join(v.to_bytes(4, "big") for v in seed)
    for i in range(n):
        at = 32 + i * size
        seed = _spec_checksum(bytes(data[at:at + 8] + data[at + 24:at + size]), seed, True)
        data[at + 16:at + 24] = b"".join(v.to_bytes(4, "big") for v in seed)
    with closing(sqlite3.connect(tmp_path / "live" / "catalog.sqlite")) as db:  # SQLite reads it: all rows back
        rows = db.execute("SELECT COUNT(*) FROM t").fetchone()[0]
    wal.write_bytes(bytes(data))
    assert lost_commits(wal) is None
    probe = tmp_path / "probe"
    shutil.copytree(wal.parent, probe)
    with closing(sqlite3.connect(probe / "catalog.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == rows == len(ends) - 1
    data[32 + ends[0] * size + 24 + 5] ^= 0x20  # the first frame of the second commit
    wal.write_bytes(bytes(data))
    damage = lost_commits(wal)
    assert damage is not None and (damage.valid, damage.damaged_at, damage.commits) == (
        ends[0], ends[0] + 1, len(ends) - 1)
    wal.write_bytes(bytes(data[:32]))
    cut = lost_commits(wal)
    assert cut is not None and (cut.valid, cut.damaged_at, cut.commits, cut.claimed) == (0, 1, 0, ends[-1])
    wal.with_name("catalog.sqlite-shm").unlink()
    assert lost_commits(wal) is None


def test_a_process_that_met_many_stores_still_reads_the_wal_index(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The -shm descriptors kept open for the process's life were capped at 64 and, past them, the index was not
    read: the full suite's workers met more stores than that, and a damaged log's lost commits read 'claimed 0'.
    Those of deleted stores are closed to make room now (no connection can open a deleted file again)."""
    from mess.store import wal as walmod
    from mess.store.wal import lost_commits

    monkeypatch.setattr(walmod, "_SHM_FILES", {})
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))  # a cap of 64
    for i in range(64):  # 64 stores met and since deleted
        path = tmp_path / f"old{i}-shm"
        path.write_bytes(b"\0" * 100)
        fd = os.open(path, os.O_RDONLY)
        walmod._SHM_FILES[(os.fstat(fd).st_dev, os.fstat(fd).st_ino)] = fd
        path.unlink()
    wal, ends, _ = _live_wal(tmp_path / "live", 1024, 5)
    data = bytearray(wal.read_bytes())
    data[32 + ends[1] * (24 + 1024) + 24 + 900] ^= 0x04  # the first frame of the third commit
    wal.write_bytes(bytes(data))
    damage = lost_commits(wal)
    assert damage is not None and damage.claimed == ends[-1]
    assert len(walmod._SHM_FILES) == 1  # the deleted ones' descriptors closed, the live store's kept
    for fd in walmod._SHM_FILES.values():
        os.close(fd)
