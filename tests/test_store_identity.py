"""The store's plain run identity: stores written before it still resolve the same runs and vectors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.extract.runs import run_key, run_policy
from mess.models.base import EmbeddingModel, ModelInfo
from mess.search.health import check_store
from mess.store import FeatureStore, StoreDamaged, StoreError

FIXTURE = Path(__file__).parent / "fixtures" / "store_v0"
TOY = ModelInfo("toy", "rev1", 16000, ("a", "b"), (4, 3))
OTHER = ModelInfo("other", "v2-x", 22050, ("only",), (2,))
# (model info, window policy, run id) as the fixture's README says they were written (WindowPolicy() was
# 30 s x at most 16 windows then)
WRITTEN = [
    (TOY, WindowPolicy(30.0, 16), 1),
    (TOY, WindowPolicy(4.0, 3), 2),
    (OTHER, WindowPolicy(10.0, 8, 0.5, 600.0), 3),
]


@pytest.fixture
def old_store(tmp_path: Path) -> Iterator[FeatureStore]:
    shutil.copytree(FIXTURE, tmp_path / "store", ignore=shutil.ignore_patterns("README.md"))
    store = FeatureStore(tmp_path / "store")
    yield store
    store.close()


@pytest.mark.parametrize(("info", "policy", "run_id"), WRITTEN)
def test_a_store_written_before_run_keys_resolves_the_same_run(
    old_store: FeatureStore, info: ModelInfo, policy: WindowPolicy, run_id: int
) -> None:
    run = old_store.ensure_run(run_key(info, policy))
    assert run.id == run_id and len(old_store.runs()) == len(WRITTEN)  # found, not created again
    assert (run.model, run.revision, run.sample_rate) == (info.name, info.revision, info.sample_rate)
    assert (run.layer_names, run.layer_dims) == (info.layer_names, info.layer_dims)
    assert run_policy(run) == policy


@pytest.mark.parametrize(("info", "policy", "run_id"), WRITTEN)
def test_vectors_of_an_old_store_read_back_as_written(
    old_store: FeatureStore, info: ModelInfo, policy: WindowPolicy, run_id: int
) -> None:
    run = old_store.ensure_run(run_key(info, policy))
    for layer, dim in enumerate(info.layer_dims):
        ids, mat = old_store.layer_matrix(run, layer)
        _, _, segs = old_store.segment_matrix(run, layer)
        want = [np.arange(dim * (i + 1), dtype=np.float32).reshape(i + 1, dim) / 8 + run_id for i in range(2)]
        np.testing.assert_array_equal(ids, [1, 2])
        np.testing.assert_array_equal(mat, np.stack([w.mean(axis=0) for w in want]))
        np.testing.assert_array_equal(segs, np.concatenate(want))


def test_new_runs_are_stored_with_the_same_identity_columns(tmp_path: Path) -> None:
    """What a run is stored under is unchanged: the policy's canonical JSON and JSON lists of layers."""
    store = FeatureStore(tmp_path)
    policy = WindowPolicy(12.5, 4)
    run = store.ensure_run(run_key(TOY, policy))
    row = store.db.execute("SELECT model, revision, policy, layer_names, layer_dims FROM runs").fetchone()
    assert tuple(row) == ("toy", "rev1", policy.to_json(), '["a", "b"]', "[4, 3]")
    assert run.policy == json.dumps(json.loads(policy.to_json()), sort_keys=True)
    store.close()


def test_an_old_store_opens_read_only(old_store: FeatureStore) -> None:
    old_store.close()
    store = FeatureStore(old_store.root, readonly=True)
    assert store.run("toy").id == 2 and store.run("toy").policy == WindowPolicy(4.0, 3).to_json()  # the latest
    store.close()


def test_an_old_store_gets_checksums_by_repair_and_they_guard_its_rows(old_store: FeatureStore) -> None:
    root = old_store.root
    old_store.close()
    found = check_store(root)
    assert [p.kind for p in found.problems] == ["no-checksum"] * len(WRITTEN) and not found.damaged
    assert all("2 files' vectors have no checksum yet" in p.message for p in found.problems)
    repaired = check_store(root, fix=True)
    assert repaired.problems == [] and len(repaired.repaired) == len(WRITTEN)
    with (root / "runs/3/segment/000.f16").open("r+b") as f:  # one value of a window of run 3: 3.25 -> 3.5
        f.seek(4 * 2)
        assert np.frombuffer(f.read(2), "<f2")[0] == 3.25
        f.seek(4 * 2)
        f.write(np.array([3.5], "<f2").tobytes())
    store = FeatureStore(root, readonly=True)
    with pytest.raises(StoreDamaged, match="segment vectors .* of track ids \\[2\\] differ from their checksums"):
        store.segment_matrix(store.runs()[2], 0)
    store.close()
    assert [p.kind for p in check_store(root).problems] == ["checksum"]


def _tone() -> np.ndarray:
    """3 s of a 440 Hz tone at 16 kHz (a constant is refused as silent before any model sees it)."""
    return (0.1 * np.sin(2 * np.pi * 440 * np.arange(3 * 16000) / 16000)).astype(np.float32)


class _Peak(EmbeddingModel):
    """A plugin-like model: each layer the window's peak, repeated to the layer's size, under one revision."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        self.info = ModelInfo("toy-peak", "1", 16000, tuple(f"l{i}" for i in range(len(dims))), dims)

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        peak = np.abs(windows).max(axis=1, keepdims=True).astype(np.float32)
        return [np.repeat(peak, d, axis=1) for d in self.info.layer_dims]


def test_a_model_whose_layers_change_under_one_revision_is_refused(tmp_path: Path) -> None:
    """A model (a plugin) giving other layer sizes under the revision of a run already stored got that run back: its
    vectors were written into the run's files of the old sizes, and the store was then refused as damaged ("differ
    from their checksums; run `mess check --repair`"). The run is refused, naming the sizes and the revision."""
    tone = (0.2 * np.sin(2 * np.pi * 220 * np.arange(3 * 16000) / 16000)).astype(np.float32)
    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", tone * (i + 1), 16000)
    with closing(FeatureStore(tmp_path / "store")) as store:
        extract(store, [tmp_path / "0.wav"], _Peak((1,)), WindowPolicy())
        with pytest.raises(StoreError, match=r"toy-peak revision 1 now makes layers of sizes \[2, 1\] at 16000 Hz, "
                                             r"but its run 1 here holds \[1\] at 16000 Hz"):
            extract(store, [tmp_path / "1.wav"], _Peak((2, 1)), WindowPolicy())
    assert not check_store(tmp_path / "store").problems


def test_a_model_with_a_layer_of_no_values_is_refused(tmp_path: Path) -> None:
    """A layer of size 0 (a plugin's, say) was stored; extraction then stopped with "cannot reshape array of size 0
    ...; the catalog references rows the file lacks: run `mess check --repair`", of a store not damaged."""
    sf.write(tmp_path / "0.wav", _tone(), 16000)
    with closing(FeatureStore(tmp_path / "store")) as store:
        with pytest.raises(StoreError, match=r"^toy-peak gives layers of sizes \[4, 0\]; every layer needs values$"):
            extract(store, [tmp_path / "0.wav"], _Peak((4, 0)), WindowPolicy())
        assert not store.runs()


class _Liar(_Peak):
    """Its ModelInfo names one layer of 3 values; it returns ``sizes``."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        super().__init__((3,))
        self.sizes = sizes

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        peak = np.abs(windows).max(axis=1, keepdims=True).astype(np.float32)
        return [np.repeat(peak, d, axis=1) for d in self.sizes]


@pytest.mark.parametrize("sizes", [(2,), (3, 2), ()], ids=["narrower", "one more", "none"])
def test_a_model_returning_other_layers_than_its_info_fails_the_file_saying_so(tmp_path: Path,
                                                                             sizes: tuple[int, ...]) -> None:
    """Layers other than a model's ModelInfo names failed each file with "could not broadcast input array from
    shape (2,) into shape (3,)" or "IndexError: list index out of range", or (one layer more) were dropped."""
    sf.write(tmp_path / "0.wav", _tone(), 16000)
    with closing(FeatureStore(tmp_path / "store")) as store:
        summary = extract(store, [tmp_path / "0.wav"], _Liar(sizes), WindowPolicy())
    assert summary.done == 0 and len(summary.failed) == 1
    assert "the model returned layers of shapes" in summary.failed[0][1]
    assert "not the 1 of sizes [3] its ModelInfo names" in summary.failed[0][1]


class _Loud(_Peak):
    """Each layer the window's peak x 200,000: past float16's largest value (65504) for a peak above 0.33."""

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        return [layer * 200_000 for layer in super().embed(windows)]


def test_a_model_output_past_float16_fails_its_file_and_the_run_goes_on(tmp_path: Path) -> None:
    """A finite output past float16's range (a plugin's unnormalised feature) passed the model's guard and reached the
    store, whose writer refused the whole batch: the run stopped. It fails that file alone, saying why."""
    for name, level in (("loud", 0.5), ("quiet", 0.1)):
        sf.write(tmp_path / f"{name}.wav", _tone() * (level / 0.1), 16000)
    with closing(FeatureStore(tmp_path / "store")) as store:
        summary = extract(store, sorted(tmp_path.glob("*.wav")), _Loud((2, 3)), WindowPolicy())
        assert summary.done == 1 and len(summary.failed) == 1, summary
        assert summary.failed[0][0].endswith("loud.wav")
        assert "65504" in summary.failed[0][1] and "loud.wav" in summary.failed[0][1]
        ids, matrix = store.layer_matrix(store.runs()[0], 0)
        assert len(ids) == 1 and np.allclose(matrix, 0.1 * 200_000, rtol=1e-3)
    assert not check_store(tmp_path / "store").problems


def test_a_policy_given_in_whole_numbers_is_the_cli_s_policy_and_its_run(tmp_path: Path) -> None:
    """WindowPolicy(5) and WindowPolicy(5.0) were equal but wrote different JSON ("5" and "5.0"): two runs, so a
    library user's extraction and the CLI's of the same settings embedded every file twice. Numbers are stored as
    their type's; a count that is not whole (or a flag) is refused."""
    assert WindowPolicy(5, 4.0, 1).to_json() == WindowPolicy(5.0, 4, 1.0).to_json()
    assert type(WindowPolicy(max_windows=np.int64(3)).max_windows) is int
    for bad in (2.5, True, float("nan")):
        with pytest.raises(ValueError, match="invalid window policy"):
            WindowPolicy(max_windows=bad)  # type: ignore[arg-type]
    sf.write(tmp_path / "0.wav", _tone(), 16000)
    with closing(FeatureStore(tmp_path / "store")) as store:
        assert extract(store, [tmp_path / "0.wav"], _Peak((2,)), WindowPolicy(5, 2)).done == 1
        again = extract(store, [tmp_path / "0.wav"], _Peak((2,)), WindowPolicy(5.0, 2.0))
        assert again.done == 0 and again.skipped == 1 and len(store.runs()) == 1
