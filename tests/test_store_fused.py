"""Fused vectors are read only as the run their network was trained on, on a real store in process."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_store_concurrency import INFO, _upsert, _vectors

from mess.audio.windows import WindowPolicy
from mess.constants import FUSED
from mess.extract.runs import run_key
from mess.store import FeatureStore, StoreError
from mess.store.fused import fused_matrix, fused_run_problem, left_out_note, trained_run_mismatch


def test_a_mismatch_names_only_the_fields_that_differ(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    try:
        run = store.ensure_run(run_key(INFO, WindowPolicy()))
        fields = json.loads(run.policy)
        assert trained_run_mismatch(run.revision, run.policy, run) is None
        assert trained_run_mismatch(run.revision, None, run) is None  # policy not recorded: the revision alone
        other = json.dumps({**fields, "window_seconds": 2 * fields["window_seconds"]})
        assert trained_run_mismatch(run.revision, other, run) == (
            f"window_seconds {2 * fields['window_seconds']}", f"window_seconds {fields['window_seconds']}")
        assert trained_run_mismatch("rev0", None, run) == ("revision rev0", f"revision {run.revision}")
        assert trained_run_mismatch("rev0", other, run) == (
            f"revision rev0, window_seconds {2 * fields['window_seconds']}",
            f"revision {run.revision}, window_seconds {fields['window_seconds']}")
        fewer = json.dumps({k: v for k, v in fields.items() if k != "max_windows"})
        assert trained_run_mismatch(run.revision, fewer, run) == (
            "max_windows ?", f"max_windows {fields['max_windows']}")
    finally:
        store.close()


def test_left_out_note_counts_the_tracks_in_words() -> None:
    assert left_out_note(1) == ("1 track has no fused vectors yet and was left out; `mess fuse apply` adds them")
    assert left_out_note(3, "tagged").startswith("3 tracks have no tagged vectors yet and were left out;")


def test_fused_vectors_are_read_only_as_the_run_their_network_was_trained_on(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    try:
        run = store.ensure_run(run_key(INFO, WindowPolicy()))
        hashes = [f"h{k}" for k in range(3)]
        for h in hashes:
            _upsert(store, h, h)
        store.write_vectors(run, [_vectors(h, 2, k) for k, h in enumerate(hashes)])
        fused = np.arange(6, dtype=np.float32).reshape(3, 2)
        trained = {"run_id": run.id, "revision": run.revision, "policy": run.policy}

        def stored(meta: dict) -> str | None:
            store.write_derived(run, FUSED, hashes, fused, meta)
            return fused_run_problem(store, run, store.derived_meta(run, FUSED))

        assert fused_run_problem(store, run, None) is None  # none stored
        with pytest.raises(StoreError):
            fused_matrix(store, run)
        assert stored({"trained_on": trained, "checkpoint": "/nets/a.pt"}) is None
        ids, matrix = fused_matrix(store, run)
        np.testing.assert_array_equal(matrix[np.argsort(ids)], fused)
        assert stored({"note": "written by a caller's code"}) is None  # no checkpoint: no network to check
        said = stored({"trained_on": {**trained, "run_id": 99, "revision": "rev0"}})
        assert said == (f"the stored fused vectors of toy run {run.id} were made by a network trained on run 99 "
                        f"(revision rev0; run {run.id} has revision {run.revision}); "
                        "run `mess fuse apply --model toy` again")
        with pytest.raises(StoreError, match="trained on run 99"):
            fused_matrix(store, run)
        assert "trained on another run (revision rev0;" in stored({"trained_on": {"revision": "rev0"}})

        # an older `fuse apply`: the run is read from the checkpoint's description, while it describes that file
        net = store.root / "nets" / "net.pt"
        net.parent.mkdir()
        digest = hashlib.sha256(b"weights").hexdigest()
        inside = {"checkpoint_in_store": "nets/net.pt", "checkpoint_sha256": digest}
        cannot = "cannot tell which run of toy the stored fused vectors were made for"
        assert stored(inside).startswith(cannot)  # no description
        net.with_suffix(".json").write_text(json.dumps({**trained, "checkpoint_sha256": digest}))
        assert stored(inside) is None
        assert stored({"checkpoint": str(net), "checkpoint_sha256": digest}) is None  # named by its full path
        assert stored({**inside, "checkpoint_sha256": "0" * 64}).startswith(cannot)  # describes another file
        assert stored({"checkpoint_in_store": "nets/net.pt"}).startswith(cannot)  # which file made them: unknown
        net.with_suffix(".json").write_text(json.dumps({**trained, "revision": "rev0", "checkpoint_sha256": digest}))
        assert "trained on run" in stored(inside)
        net.with_suffix(".json").write_text(json.dumps({**trained, "policy": None, "checkpoint_sha256": digest}))
        assert stored(inside).startswith(cannot)  # a description without the run's policy
        net.with_suffix(".json").write_text(json.dumps([digest]))
        assert stored(inside).startswith(cannot)
        net.with_suffix(".json").write_text("{cut")
        assert stored(inside).startswith(cannot)
        other = replace(run, id=run.id + 1, revision="rev0")
        assert fused_run_problem(store, other, {"trained_on": trained}).startswith(
            f"the stored fused vectors of toy run {run.id + 1} were made by a network trained on run {run.id} ")
    finally:
        store.close()

