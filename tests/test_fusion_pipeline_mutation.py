"""`mess fuse train`'s pipeline (mess.fusion.pipeline) and its training log (mess.fusion.tracking), in-process on a
small synthetic store whose labels, unlabelled tracks and singletons are built into the fixture."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mess.audio.windows import WindowPolicy
from mess.fusion.pipeline import free_checkpoint, train_and_save
from mess.fusion.tracking import TrainingLog, log_mismatch, training_log_path
from mess.fusion.train import EpochLog, FusionConfig, StoppedBeforeFirstEpoch
from mess.store import FeatureStore, Run, RunKey, TrackVectors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = FusionConfig(fusion_dim=8, hidden_dim=16, common_dim=8, labels_per_batch=4, tracks_per_label=4,
                     weight_epochs=2, max_epochs=2, patience=2, val_frac=0.2, test_frac=0.3, seed=0)
N_LABELS, PER_LABEL, UNLABELLED = 10, 4, 3  # and one artist with a single track


def _store(root: Path) -> tuple[FeatureStore, Run]:
    """10 artists x 4 tracks, one artist of 1 track and 3 untagged tracks; three 12-d layers, the middle one
    carrying the artist."""
    rng = np.random.default_rng(0)
    store = FeatureStore(root)
    run = store.ensure_run(RunKey("synthetic", "r1", WindowPolicy().to_json(), 16000, ("l0", "l1", "l2"), (12, 12, 12)))
    centres = 2.0 * rng.normal(size=(N_LABELS + 1, 12))
    artists = [f"artist{i}" for i in range(N_LABELS) for _ in range(PER_LABEL)] + ["solo"] + [None] * UNLABELLED
    items = []
    for i, artist in enumerate(artists):
        h = f"{i:064x}"
        store.upsert_track(Path(f"/m/{i}.wav"), h, 1000 + i, 0.0, {"duration": 30.0}, {"artist": artist})
        label = int(artist[6:]) if artist and artist != "solo" else N_LABELS
        layers = [rng.normal(size=12) + (centres[label] if j == 1 else 0) for j in range(3)]
        items.append(TrackVectors(h, [v.astype(np.float32) for v in layers],
                                  [v[None, :].astype(np.float32) for v in layers], [0.0]))
    store.write_vectors(run, items)
    return store, run


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[FeatureStore, Run]:
    return _store(tmp_path / "store")


def test_train_and_save_writes_the_checkpoint_and_a_log_of_what_it_trained(synthetic: tuple, tmp_path: Path) -> None:
    store, run = synthetic
    path = store.root / "fusion" / "net.pt"
    seen: list[EpochLog] = []
    trained = train_and_save(store, run, SMALL, path, on_epoch=seen.append)
    summary = trained.summary
    assert path.exists() and path.with_suffix(".json").exists()
    assert summary["checkpoint"] == str(path) and summary["checkpoint_note"] is None
    assert summary["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (summary["model"], summary["label"]) == ("synthetic", "artist")
    assert summary["tracks"] == N_LABELS * PER_LABEL + 1 + UNLABELLED
    assert summary["labelled_tracks"] == N_LABELS * PER_LABEL  # neither the untagged nor the single-track artist
    split = summary["split"]
    assert sum(split.values()) == N_LABELS and split["test"] == 3 and split["val"] == 2  # round(0.3 * 10), 0.2 * 10
    assert summary["phase2"] is True
    # on_epoch and the log see the trained epochs 1..4; epoch 0 is the untrained network's
    assert summary["epochs"] == SMALL.weight_epochs + SMALL.max_epochs == len(seen) == seen[-1].epoch
    assert [e.epoch for e in seen] == list(range(1, len(seen) + 1))
    best = summary["best_epoch"]
    assert 1 <= best and summary["val_ndcg_best"] == seen[best - 1].val_ndcg
    assert trained.result.history[0].epoch == 0
    assert summary["val_ndcg_untrained"] == trained.result.history[0].val_ndcg != seen[0].val_ndcg
    assert summary["interrupted_at"] is None
    weights = summary["layer_weights"]
    assert list(weights) == ["l0", "l1", "l2"] and sum(weights.values()) == pytest.approx(1.0, abs=1e-4)
    log_path = training_log_path(store, path)
    assert summary["log"] == str(log_path)
    log = json.loads(log_path.read_text())
    assert log["summary"] == summary and len(log["epochs"]) == len(seen)
    assert [e["val_ndcg"] for e in log["epochs"]] == [e.val_ndcg for e in seen]
    assert log["params"]["model"] == "synthetic" and log["params"]["run_id"] == run.id
    assert log["params"]["fusion_dim"] == SMALL.fusion_dim and log["params"]["label"] == "artist"
    assert not log_path.with_suffix(".partial.json").exists()
    assert log_mismatch(store, path) is None
    assert trained.result.best_epoch == best


def test_a_training_stopped_after_its_first_epoch_saves_the_best_so_far_marked(synthetic: tuple) -> None:
    store, run = synthetic
    path = store.root / "fusion" / "net.pt"
    seen: list[EpochLog] = []
    summary = train_and_save(store, run, SMALL, path, on_epoch=seen.append, stop=lambda: len(seen) >= 2).summary
    assert summary["interrupted_at"] == summary["epochs"] == seen[-1].epoch == 2
    assert summary["stopped_early"] is False and path.exists()


def test_a_stop_before_the_first_epoch_writes_nothing(synthetic: tuple) -> None:
    store, run = synthetic
    path = store.root / "fusion" / "net.pt"
    with pytest.raises(StoppedBeforeFirstEpoch):
        train_and_save(store, run, SMALL, path, stop=lambda: True)
    assert not path.exists() and not store.reports_dir.exists() or not any(store.reports_dir.iterdir())


def test_a_name_taken_by_the_user_s_file_saves_under_the_next_free_name(synthetic: tuple, tmp_path: Path) -> None:
    store, run = synthetic
    folder = tmp_path / "nets"
    folder.mkdir()
    wanted = folder / "net.pt"
    wanted.write_bytes(b"my own weights")
    (folder / "net-1.json").write_text("{}")  # the description's name taken: the next name is net-2
    trained = train_and_save(store, run, SMALL, wanted)
    saved = folder / "net-2.pt"
    assert wanted.read_bytes() == b"my own weights" and saved.exists() and not (folder / "net-1.pt").exists()
    summary = trained.summary
    assert summary["checkpoint"] == str(saved)
    assert summary["checkpoint_note"].startswith(f"not saved at {wanted}: it would replace {wanted}, which is not")
    assert summary["checkpoint_note"].endswith(f"; saved at {saved} instead")
    assert summary["log"] == str(training_log_path(store, saved)) != str(training_log_path(store, wanted))
    assert json.loads(training_log_path(store, saved).read_text())["summary"]["checkpoint"] == str(saved)
    assert not training_log_path(store, wanted).exists()
    assert not training_log_path(store, wanted).with_suffix(".partial.json").exists()
    assert summary["checkpoint_sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()


def test_free_checkpoint_names(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    folder = tmp_path / "nets"
    folder.mkdir()
    assert free_checkpoint(folder / "a.pt", store) == folder / "a-1.pt"
    (folder / "a-1.pt").symlink_to(folder / "nowhere")  # a dangling link is something there
    (folder / "a-2.json").write_text("{}")
    assert free_checkpoint(folder / "a.pt", store) == folder / "a-3.pt"
    assert free_checkpoint(tmp_path / "new" / "a.pt", store) == tmp_path / "new" / "a-1.pt"  # a folder to be made
    (tmp_path / "file").write_text("")
    assert free_checkpoint(tmp_path / "file" / "a.pt", store) == store.root / "fusion" / "a-1.pt"


def test_log_mismatch_tells_a_log_of_another_checkpoint(synthetic: tuple) -> None:
    store, run = synthetic
    path = store.root / "fusion" / "net.pt"
    train_and_save(store, run, SMALL, path)
    log = training_log_path(store, path)
    good = log.read_text()
    path.write_bytes(path.read_bytes() + b"\0")  # a retrain's checkpoint saved, its log not yet
    note = log_mismatch(store, path)
    assert note == (f"the training log {log} describes another checkpoint than {path} (a `mess fuse train` stopped "
                    "after saving it, before its log): retrain with `mess fuse train` for a log of the checkpoint "
                    "in use")
    for text in ("not json", "[1, 2]", json.dumps({"summary": None}), json.dumps({"summary": {"x": 1}})):
        log.write_text(text)
        assert log_mismatch(store, path) is None, text
    log.write_text(good)
    path.unlink()
    assert log_mismatch(store, path) is None
    log.unlink()
    assert log_mismatch(store, path) is None


def test_training_log_writes_nothing_before_its_first_epoch_and_replaces_its_side_file(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "x-train.json"
    path.parent.mkdir()
    path.write_text('{"old": true}')
    log = TrainingLog(path, {"model": "m", "label": "artist"}, tmp_path / "mlruns")
    partial = tmp_path / "reports" / "x-train.partial.json"
    assert not partial.exists()
    log.epoch(EpochLog(0, None, None, 0.5, 0.1))
    log.epoch(EpochLog(1, 0.3, 0.2, 0.6, 0.1))
    side = json.loads(partial.read_text())
    assert [e["epoch"] for e in side["epochs"]] == [0, 1] and side["summary"] is None
    assert side["params"] == {"model": "m", "label": "artist"}
    assert json.loads(path.read_text()) == {"old": True}  # the log of the checkpoint in use, until finish
    log.finish({"done": 1}, [])
    got = json.loads(path.read_text())
    assert got["summary"] == {"done": 1} and len(got["epochs"]) == 2 and not partial.exists()


def test_a_training_log_finished_without_epochs_is_written_all_the_same(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path / "x-train.json", {"model": "m"})
    log.finish({"epochs": 0}, [])
    assert json.loads((tmp_path / "x-train.json").read_text())["summary"] == {"epochs": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-train.json"]


def _disk_full_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Make the real write of a new file fail with ENOSPC in ``folder`` (as on a full disk; /dev/full is never
    written); returns the paths whose write failed."""
    import errno
    import os

    from mess.store import paths

    real, failed = paths._write_new, []

    def full(path: Path, data: bytes) -> None:
        if path.parent == folder:
            failed.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data)

    monkeypatch.setattr(paths, "_write_new", full)
    return failed


def test_a_full_disk_at_save_time_saves_the_network_in_the_store_and_says_where(
        synthetic: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: an OSError at the save (a full disk) after training ended `mess fuse train` with the error, the trained
    network lost. Now it is saved in STORE/fusion/ under a free name, said in the summary's note."""
    store, run = synthetic
    folder = tmp_path / "nets"
    wanted = folder / "net.pt"
    failed = _disk_full_in(folder, monkeypatch)
    summary = train_and_save(store, run, SMALL, wanted).summary
    saved = store.root / "fusion" / "net-1.pt"
    assert failed and summary["checkpoint"] == str(saved)
    assert summary["checkpoint_note"] == f"not saved at {wanted}: No space left on device; saved at {saved} instead"
    assert summary["checkpoint_sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
    assert json.loads(saved.with_suffix(".json").read_text())["checkpoint_sha256"] == summary["checkpoint_sha256"]
    assert sorted(folder.iterdir()) == []  # nothing half-written left where the save failed
    assert json.loads(training_log_path(store, saved).read_text())["summary"]["checkpoint"] == str(saved)


def test_a_full_disk_in_the_store_s_own_fusion_folder_saves_the_network_in_the_temp_folder(
        synthetic: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default checkpoint is in STORE/fusion/ already: the fallback is the system's temp folder."""
    import tempfile

    store, run = synthetic
    wanted = store.root / "fusion" / "net.pt"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    _disk_full_in(wanted.parent, monkeypatch)
    summary = train_and_save(store, run, SMALL, wanted).summary
    saved = tmp_path / "tmp" / "mess-fusion" / "net-1.pt"
    assert summary["checkpoint"] == str(saved) and saved.exists() and not wanted.exists()
    assert summary["checkpoint_note"] == f"not saved at {wanted}: No space left on device; saved at {saved} instead"


def test_a_save_that_fails_everywhere_raises_the_first_error(synthetic: tuple, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os
    import tempfile

    from mess.store import paths

    store, run = synthetic
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(paths, "_write_new", full)
    with pytest.raises(OSError, match="No space left on device") as caught:
        train_and_save(store, run, SMALL, tmp_path / "nets" / "net.pt")
    assert caught.value.filename == str(tmp_path / "nets" / "net.pt")


def test_a_file_in_the_way_of_the_checkpoint_s_folders_is_refused_before_training(tmp_path: Path) -> None:
    """`--checkpoint FILE/sub/net.pt` (a file where a folder above the checkpoint should be) was not refused: the
    network trained, then could not be saved. Refused before training now, nothing written."""
    from typer.testing import CliRunner

    from mess.cli.main import app

    store, _ = _store(tmp_path / "store")
    store.close()
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    before = sorted(p for p in (tmp_path / "store").rglob("*") if not p.name.startswith("catalog.sqlite"))
    out = CliRunner().invoke(app, ["fuse", "train", "--model", "synthetic", "--fusion-dim", "8", "--weight-epochs", "1",
                                   "--max-epochs", "0", "--checkpoint",
                                   str(blocker / "sub" / "net.pt"), "--store", str(tmp_path / "store")],
                             env={"COLUMNS": "400"})
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert out.output.strip().splitlines() == [
        f"error: cannot save a checkpoint at {blocker / 'sub' / 'net.pt'}: {blocker} is a file, not a folder"]
    assert blocker.read_text() == "mine"
    assert sorted(p for p in (tmp_path / "store").rglob("*") if not p.name.startswith("catalog.sqlite")) == before


def test_a_training_log_that_cannot_be_written_leaves_the_saved_network_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """STORE/reports full once the checkpoint was saved: `mess fuse train` ended "error: cannot save the checkpoint
    ..." (exit 1) though the checkpoint was saved and whole. It ends as trained, the checkpoint named, with a note
    that its training log could not be written."""
    import errno
    import os

    from typer.testing import CliRunner

    from mess.cli.main import app
    from mess.fusion import tracking

    store, _ = _store(tmp_path / "store")
    store.close()
    real = tracking.replace_file

    def full(path: Path, data: bytes) -> None:
        if path.name.endswith("-train.json"):  # the log itself, not its epochs' side file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(tracking, "replace_file", full)
    checkpoint = tmp_path / "net.pt"
    args = ["fuse", "train", "--model", "synthetic", "--fusion-dim", "8", "--weight-epochs", "1", "--max-epochs", "0",
            "--checkpoint", str(checkpoint), "--store", str(tmp_path / "store")]
    out = CliRunner().invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["checkpoint"] == str(checkpoint) and summary["log"] is None
    assert summary["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert summary["log_note"].endswith(f"could not be written (No space left on device); the checkpoint {checkpoint} "
                                        "is saved")
    checkpoint.unlink()
    checkpoint.with_suffix(".json").unlink()
    out = CliRunner().invoke(app, [*args], env={"COLUMNS": "400"})
    assert out.exit_code == 0 and checkpoint.exists(), out.output
    assert "note: the training log " in out.stderr and "(No space left on device)" in out.stderr, out.stderr


def test_a_checkpoint_name_too_long_for_the_file_system_is_refused_before_training(synthetic: tuple,
                                                                                  tmp_path: Path) -> None:
    """train_and_save(..., 'nnn...300 characters.pt') trained, then every save and fallback raised ENAMETOOLONG (the
    fallback keeps the name): the network was lost. Refused before the first epoch now, nothing written."""
    from mess.fusion.data import FusionError

    store, run = synthetic
    path = tmp_path / ("n" * 300 + ".pt")
    seen: list[EpochLog] = []
    with pytest.raises(FusionError, match=r"^cannot save a checkpoint at .*: File name too long"):
        train_and_save(store, run, SMALL, path, on_epoch=seen.append)
    assert seen == [] and not (store.root / "fusion").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["store"]
