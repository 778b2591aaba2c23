"""The identity a run is stored under, the policy read back from it, and where its model came from."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from mess.audio.windows import WindowPolicy
from mess.extract.runs import record_source, run_key, run_policy
from mess.models.base import ModelInfo
from mess.store import FeatureStore


def test_a_run_is_stored_under_its_models_identity_and_gives_back_its_policy(tmp_path: Path) -> None:
    info = ModelInfo("mine", "sha-1", 22050, ("conv", "head"), (8, 2))
    policy = WindowPolicy(window_seconds=12.5, max_windows=3)
    key = run_key(info, policy)
    assert (key.model, key.revision, key.sample_rate, key.layer_names, key.layer_dims) == (
        "mine", "sha-1", 22050, ("conv", "head"), (8, 2))
    assert WindowPolicy.from_json(key.policy) == policy
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = store.ensure_run(key)
        assert run_policy(run) == policy
        assert store.model_source(run) is None
        record_source(store, run, None)  # a registry model: nothing to record
        assert store.model_source(run) is None
        record_source(store, run, {"kind": "onnx", "path": "/models/a.onnx"})
        record_source(store, run, None)  # a later run by name keeps the record
        assert store.model_source(run) == {"kind": "onnx", "path": "/models/a.onnx"}
        record_source(store, run, {"kind": "onnx", "path": "/moved/a.onnx"})  # the latest place
        assert store.model_source(run) == {"kind": "onnx", "path": "/moved/a.onnx"}
