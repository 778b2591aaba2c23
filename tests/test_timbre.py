"""The timbre layer (the MFCC Gaussian up to 16 kHz) and how the all-layer vector weighs it."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.fft

from mess.models import timbre
from mess.models.filters import mel_basis
from mess.search.vectors import TIMBRE_WEIGHT, Preprocessor, block_roles

# timbre-v1's recipe as the module's docstring and docs/quality.md state it, written out here so that the
# references below do not take the module's own constants: 20 MFCCs of 40 Slaney mel bands 0-16 kHz of a 44.1 kHz
# STFT (2048 points, hop 1024), dB floored 80 dB below each window's peak; logm of the covariance + 1e-3 I
SR, N_FFT, HOP, N_MELS, F_MAX, N_MFCC, TOP_DB, RIDGE = 44100, 2048, 1024, 40, 16000.0, 20, 80.0, 1e-3
ENSEMBLE = f"musicnn-0.1.0+{timbre.REVISION}"  # the revision of a musicnn ensemble's run: its timbre layer is mess's


@pytest.fixture(scope="module")
def basis() -> np.ndarray:
    bank = mel_basis(SR, N_FFT, N_MELS, F_MAX)
    np.testing.assert_allclose(bank, librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmax=F_MAX), rtol=1e-6)
    return bank


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    """Three 3 s windows of different sounds: a bright chord with noise, a dull tone, a chirp up to 15 kHz."""
    t = np.arange(3 * SR) / SR
    rng = np.random.default_rng(0)
    bright = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((440, 1320, 5280, 10560), 1))
    bright = bright + 0.05 * rng.standard_normal(len(t))
    dull = np.sin(2 * np.pi * 110 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
    chirp = np.sin(2 * np.pi * (200 + 2400 * t) * t)
    return (0.3 * np.stack([bright, dull, chirp])).astype(np.float32)


def _reference(window: np.ndarray) -> np.ndarray:
    """librosa's MFCCs of one window, the recipe written out: mel power, power_to_db (top_db 80), DCT-II ortho."""
    mel = librosa.feature.melspectrogram(y=window, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, fmax=F_MAX)
    return scipy.fft.dct(librosa.power_to_db(mel, top_db=TOP_DB), axis=0, norm="ortho")[:N_MFCC].T


def _gaussian(frames: np.ndarray) -> np.ndarray:
    """[mean, upper triangle of logm(cov + RIDGE I)] of MFCC frames [n, 20], by scipy's matrix logarithm."""
    import warnings

    from scipy.linalg import logm

    cov = np.cov(frames.T, bias=True) + RIDGE * np.eye(N_MFCC)
    with warnings.catch_warnings():  # "logm result may be inaccurate, approximate err = 4e-13"
        warnings.simplefilter("ignore", RuntimeWarning)
        log = np.real(logm(cov))
    return np.concatenate([frames.mean(axis=0), log[np.triu_indices(N_MFCC)]])


def test_mfccs_are_librosas(windows: np.ndarray, basis: np.ndarray) -> None:
    got = timbre.mfcc(windows, basis)
    for window, frames in zip(windows, got, strict=True):
        want = _reference(window)
        assert frames.shape == want.shape
        assert np.abs(frames - want).max() <= 1e-3 * np.abs(want).max()


def test_a_silent_windows_mfccs_are_librosas(basis: np.ndarray) -> None:
    """Silence is power_to_db's floor (its amin, -100 dB) in every band: c0 carries it, the other MFCCs are 0."""
    silent = np.zeros(SR, np.float32)
    np.testing.assert_allclose(timbre.mfcc(silent[None], basis)[0], _reference(silent), rtol=1e-5, atol=1e-4)


def test_window_vector_is_the_log_euclidean_gaussian_of_its_frames(windows: np.ndarray, basis: np.ndarray) -> None:
    got = timbre.window_vectors(windows, basis)
    assert got.shape == (3, N_MFCC + N_MFCC * (N_MFCC + 1) // 2) == (3, timbre.DIM) and got.dtype == np.float32
    for vector, window in zip(got, windows, strict=True):
        want = _gaussian(_reference(window))
        assert np.abs(vector - want).max() <= 1e-3 * np.abs(want).max()
    # the distance tells the sounds apart: each window is nearest itself, and the bright one is far from the dull
    d = np.linalg.norm(got[:, None] - got[None], axis=-1)
    assert (d + np.eye(3) * 1e9).min() > 0 and d[0, 1] > 0


def test_track_vector_is_the_gaussian_of_all_frames_not_the_mean_of_windows(windows: np.ndarray,
                                                                            basis: np.ndarray) -> None:
    """Two windows, one dull and one bright: the track's Gaussian holds the spread between them."""
    vectors = timbre.window_vectors(windows[:2], basis)
    pooled = timbre.pool(vectors)
    frames = np.concatenate([_reference(w) for w in windows[:2]])
    want = _gaussian(frames)
    assert np.abs(pooled - want).max() <= 2e-3 * np.abs(want).max()
    cov = slice(N_MFCC, None)  # the naive mean of the windows' vectors misses the spread between them
    assert np.linalg.norm(vectors.mean(axis=0)[cov] - want[cov]) > 0.1 * np.linalg.norm(want[cov])
    np.testing.assert_allclose(timbre.pool(vectors[:1]), vectors[0], atol=1e-4 * np.abs(vectors[0]).max())


def test_a_track_of_one_window_is_that_windows_gaussian_even_a_silent_one(windows: np.ndarray,
                                                                       basis: np.ndarray) -> None:
    """The Gaussian of one window's frames is that window's: pooling one vector (given as [1, DIM] or [DIM])
    gives it back, the covariance block too, where a silent window's covariance is 0 (logm of RIDGE I); two
    windows pool to the scipy Gaussian of their frames in the covariance block on its own scale."""
    silent = timbre.window_vectors(np.zeros((1, SR), np.float32), basis)[0]
    for vector in (*timbre.window_vectors(windows, basis), silent):
        for given in (vector, vector[None]):
            np.testing.assert_allclose(timbre.pool(given), vector, atol=1e-4 * np.abs(vector).max())
            np.testing.assert_allclose(timbre.pool(given)[N_MFCC:], vector[N_MFCC:], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(silent[N_MFCC:][np.triu_indices(N_MFCC)[0] == np.triu_indices(N_MFCC)[1]],
                               np.log(RIDGE), rtol=1e-4)
    pooled = timbre.pool(timbre.window_vectors(windows[:2], basis))
    want = _gaussian(np.concatenate([_reference(w) for w in windows[:2]]))
    assert np.abs(pooled[N_MFCC:] - want[N_MFCC:]).max() <= 2e-3 * np.abs(want[N_MFCC:]).max()

def test_silence_and_a_short_clip_give_finite_vectors(basis: np.ndarray) -> None:
    silent = timbre.window_vectors(np.zeros((1, SR), np.float32), basis)
    short = timbre.window_vectors(np.random.default_rng(1).standard_normal((1, SR // 2)).astype(np.float32), basis)
    assert np.isfinite(silent).all() and np.isfinite(short).all()
    assert np.isfinite(timbre.pool(np.concatenate([silent, short]))).all()


def test_all_layer_vector_weighs_timbre_and_leaves_it_out_of_the_power() -> None:
    rng = np.random.default_rng(2)
    names = ("msd.cnn1", "mtt.cnn1", timbre.LAYER)
    dims = (6, 6, timbre.DIM)
    raw = rng.standard_normal((40, sum(dims))).astype(np.float32) * 3
    unpowered, weights = block_roles(names, "all", ENSEMBLE)
    assert unpowered == (False, False, True) and weights == (1.0, 1.0, TIMBRE_WEIGHT)
    assert block_roles(names, "group", ENSEMBLE) == ((False, False, True), (1.0, 1.0, 1.0))
    prep = Preprocessor.fit(raw, dims, "power", unpowered, weights)
    unit = prep.apply(raw)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    # the timbre block holds 12 of the 14 layers' weight in every cosine
    share = np.linalg.norm(unit[:, 12:], axis=1) ** 2
    np.testing.assert_allclose(share, TIMBRE_WEIGHT / (TIMBRE_WEIGHT + 2), rtol=1e-5)
    # power on the network blocks only: the timbre block's z-scores are those of the raw values
    z = (raw[:, 12:] - raw[:, 12:].mean(axis=0)) / raw[:, 12:].std(axis=0)
    block = unit[:, 12:] / np.linalg.norm(unit[:, 12:], axis=1, keepdims=True)
    np.testing.assert_allclose(block, z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-5)
    powered = np.sign(raw[:, :6]) * np.abs(raw[:, :6]) ** 0.25
    zp = (powered - powered.mean(axis=0)) / powered.std(axis=0)
    np.testing.assert_allclose(unit[:, :6] / np.linalg.norm(unit[:, :6], axis=1, keepdims=True),
                               zp / np.linalg.norm(zp, axis=1, keepdims=True), atol=1e-5)
    # roles given as arrays (as a saved file holds them): the same vectors
    arrays = Preprocessor.fit(raw, np.array(dims), "power", np.array(unpowered), np.array(weights))
    np.testing.assert_array_equal(arrays.apply(raw), unit)
    # saved and loaded with an index, the same vectors
    again = Preprocessor.from_arrays(prep.arrays())
    np.testing.assert_array_equal(again.apply(raw), unit)
    # a file saved before block roles existed loads with all blocks powered and equal
    old = {k: v for k, v in prep.arrays().items() if k not in ("unpowered", "weights")}
    assert Preprocessor.from_arrays(old).weights == () and Preprocessor.from_arrays(old).unpowered == ()


def test_a_model_whose_only_layer_is_the_timbre_layer_gets_unit_vectors() -> None:
    """The timbre weight of an all-layer vector is relative to the other layers: a model whose one layer is named
    'timbre' (an Essentia model so described) got vectors of length sqrt(12), so every cosine was 12 times too large
    and a track 0.09 alike was flagged a duplicate (0.9999)."""
    rng = np.random.default_rng(4)
    raw = rng.standard_normal((30, timbre.DIM)).astype(np.float32) * 3
    prep = Preprocessor.fit(raw, (timbre.DIM,), "power", *block_roles((timbre.LAYER,), "all", ENSEMBLE))
    z = (raw - raw.mean(axis=0)) / raw.std(axis=0)  # left out of the power, z-scored
    np.testing.assert_allclose(prep.apply(raw), z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-5)


@pytest.mark.parametrize("revision", ["essentia-1", f"musicnn-0.1.0+{timbre.REVISION}",
                                      f"musicnn-0.1.0+{timbre.REVISION}+bf16"])
def test_only_the_ensembles_timbre_layer_is_weighed_and_left_out_of_the_power(tmp_path: Path, revision: str) -> None:
    """The weight of 12 and the exemption from the power were measured for mess's own timbre layer beside
    musicnn's 18: any model's layer named 'timbre' (an Essentia output so described) got them, so the all-layer
    cosine of a model with layers 'embeddings' and 'timbre' was 1/13 embeddings, 12/13 that output."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.runs import run_key
    from mess.models.base import ModelInfo
    from mess.search.vectors import VectorSpec, load_vectors
    from mess.store import FeatureStore, TrackVectors

    rng = np.random.default_rng(5)
    dims = (4, 6)
    raw = [rng.standard_normal((20, d)).astype(np.float32) * 2 + 1 for d in dims]
    store = FeatureStore(tmp_path / "store")
    try:
        run = store.ensure_run(run_key(ModelInfo("other", revision, 16000, ("embeddings", timbre.LAYER), dims),
                                       WindowPolicy()))
        for i in range(20):
            store.upsert_track(Path(f"/m/{i}.wav"), f"h{i}", 1, 0.0, {"duration": 10.0},
                               {"artist": None, "album": None, "title": f"t{i}", "genre": None, "composer": None})
            layers = [r[i] for r in raw]
            store.write_vectors(run, [TrackVectors(f"h{i}", layers, [v[None] for v in layers], [0.0])])
        vs = load_vectors(store, run, VectorSpec("all", "", "power"))
        stored, unit = vs.raw.astype(np.float64), vs.unit()  # as stored (float16)
    finally:
        store.close()
    ours = timbre.REVISION in revision
    blocks = []
    for r, weight, powered in zip(np.split(stored, [dims[0]], axis=1), (1.0, 12.0 if ours else 1.0),
                                  (True, not ours), strict=True):
        x = np.sign(r) * np.abs(r) ** 0.25 if powered else r
        z = (x - x.mean(axis=0)) / x.std(axis=0)
        blocks.append(np.sqrt(weight) * z / np.linalg.norm(z, axis=1, keepdims=True))
    want = np.concatenate(blocks, axis=1) / np.sqrt(13.0 if ours else 2.0)
    np.testing.assert_allclose(unit, want, atol=1e-5)


def test_a_reduced_precision_wrapper_pools_as_its_model(windows: np.ndarray) -> None:
    """`--precision bf16` wraps the model: the timbre layer must still be the Gaussian of all frames, not a mean."""
    pytest.importorskip("musicnn.configuration", reason="pip install --no-deps musicnn==0.1.0")
    from mess.models.musicnn.ensemble import MusicnnEnsemble
    from mess.scale.gpu import AutocastModel

    model = MusicnnEnsemble(runtime="torch")
    wrapped = AutocastModel(model, "bf16")
    segments = model.embed(windows[:2])
    pooled = wrapped.pool(segments)
    np.testing.assert_array_equal(pooled[-1], timbre.pool(segments[-1]))
    assert not np.allclose(pooled[-1], segments[-1].mean(axis=0))
