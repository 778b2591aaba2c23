"""`mess extract --engine ray` and byte-identical copies: a copy shares its original's vectors, or its failure.

The Ray engine's catalogue counted a copy before its original was decoded or embedded: when the original then failed,
its copies stayed 'copies of a file embedded in this run' and were named nowhere among the failures (the local engine
had the same bug, fixed with its test in tests/test_extract_mutation.py).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import test_scale_mutation
import test_scale_ray
from store_vectors import assert_same_vectors, vectors_by_path

from mess.extract.pipeline import extract
from mess.models.dsp import DspModel
from mess.scale.ray_extract import extract_ray
from mess.store import FeatureStore

ray_address = test_scale_ray.ray_address  # the Ray modules' shared local 2-CPU cluster
driver = test_scale_ray.driver  # its shared driver process
local_ray = test_scale_mutation.local_ray  # Ray Data run in this process


def _tone(path: Path, seconds: float, hz: float, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), sr)
    return path


def _copy(original: Path, name: str) -> Path:
    return Path(shutil.copyfile(original, original.with_name(name)))


def test_the_copies_of_a_file_that_fails_on_ray_fail_with_it_and_a_copy_of_one_embedded_shares_its_vectors(
        driver: test_scale_ray.Driver, tmp_path: Path) -> None:
    """Two copies of a file too short to embed (it fails in a Ray decoding task) were counted as copies of a file
    embedded in this run and named nowhere; each now fails, named, as on the local engine. A copy of a file that
    was embedded is still a copy, its vectors those of its original."""
    music = tmp_path / "music"
    music.mkdir()
    short = _tone(music / "short.wav", 0.3, 440.0)  # under WindowPolicy's 1 s minimum: refused when decoded
    fine = _tone(music / "fine.wav", 5.0, 220.0)
    other = _tone(music / "other.wav", 5.0, 330.0)
    paths = [short, fine, _copy(short, "short_copy1.wav"), other, _copy(fine, "fine_copy.wav"),
             _copy(short, "short_copy2.wav")]
    policy = test_scale_ray.POLICY
    local = FeatureStore(tmp_path / "local")
    want = extract(local, paths, DspModel(), policy)
    got = driver(tmp_path / "ray", paths, "dsp", policy, actors=1)
    failing = [short, paths[2], paths[5]]
    assert (got.done, got.copies, got.skipped) == (2, 1, 0) == (want.done, want.copies, want.skipped)
    assert sorted(p for p, _ in got.failed) == sorted(map(str, failing))
    for path, reason in got.failed:
        assert reason.startswith(f"{path}: too short (0.30 s; "), reason
    assert sorted(got.failed) == sorted(want.failed)
    with contextlib.closing(FeatureStore(tmp_path / "ray", readonly=True)) as remote:
        assert sorted(remote.failures(remote.run("dsp"))) == sorted(got.failed)
        vectors = vectors_by_path(remote, "dsp", starts=True)
    assert sorted(vectors) == sorted(map(str, [fine, other, paths[4]]))
    assert_same_vectors({str(paths[4]): vectors[str(paths[4])]}, {str(paths[4]): vectors[str(fine)]})
    assert_same_vectors(vectors, vectors_by_path(local, "dsp", starts=True))


def test_the_copies_of_a_file_the_model_fails_on_fail_with_it_on_both_engines(
        local_ray: test_scale_mutation.LocalRay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The model's failure on a file (in the Ray engine's actor) failed only that file: its copies, counted before it
    was embedded, stayed copies of a file embedded in this run. Each now fails, named, with the local engine's
    reason; a copy of a file the model embedded still shares its vectors."""
    from mess.scale import embedder

    monkeypatch.setattr(embedder, "load_model", lambda name, device: test_scale_mutation._Picky())
    music = tmp_path / "music"
    music.mkdir()
    high = _tone(music / "high.wav", 3.0, 3000.0)  # the model refuses it: 3 kHz crosses zero often
    low = _tone(music / "low.wav", 3.0, 110.0)
    paths = [high, low, _copy(high, "high_copy1.wav"), _copy(low, "low_copy.wav"), _copy(high, "high_copy2.wav")]
    policy = test_scale_mutation.POLICY
    local = FeatureStore(tmp_path / "local")
    want = extract(local, paths, test_scale_mutation._Picky(), policy, batch_size=8)
    remote = FeatureStore(tmp_path / "ray")
    got = extract_ray(remote, paths, "dsp", policy, batch_size=8, info=test_scale_mutation._Picky().info)
    assert (got.done, got.copies, got.skipped) == (1, 1, 0) == (want.done, want.copies, want.skipped)
    failing = [high, paths[2], paths[4]]
    assert sorted(got.failed) == sorted((str(p), f"{p}: model failed (ParameterError: too many zero crossings)")
                                        for p in failing) == sorted(want.failed)
    assert sorted(remote.failures(remote.run("dsp"))) == sorted(got.failed)
    vectors = vectors_by_path(remote, "dsp", starts=True)
    assert sorted(vectors) == sorted(map(str, [low, paths[3]]))
    assert_same_vectors({str(paths[3]): vectors[str(paths[3])]}, {str(paths[3]): vectors[str(low)]})
    assert_same_vectors(vectors, vectors_by_path(local, "dsp", starts=True))
