"""The dsp baseline's fast paths against the librosa computations they replace."""

import librosa
import numpy as np
import pytest
import scipy.fft

from mess.audio.spectrum import frames, stft
from mess.models import dsp


def _music(seconds: float = 12.0, sr: int = 22050, bpm: float = 100.0) -> np.ndarray:
    """A chord with a decaying click every beat: real harmonic and rhythmic content, known tempo."""
    t = np.arange(int(seconds * sr)) / sr
    chord = sum(np.sin(2 * np.pi * f * t) for f in (196.0, 246.9, 293.7)) / 3
    beat = np.exp(-30 * ((t * bpm / 60) % 1.0))
    noise = np.random.default_rng(0).standard_normal(t.size)
    return (0.5 * chord + beat * noise).astype(np.float32)


@pytest.mark.parametrize(("n_fft", "hop"), [(512, 256), (2048, 512)])
def test_stft_in_float64_is_librosas_stft(n_fft: int, hop: int) -> None:
    y = np.stack([_music(3.0), _music(3.0, bpm=140.0)])
    ref = librosa.stft(y, n_fft=n_fft, hop_length=hop).swapaxes(-1, -2)
    assert np.array_equal(stft(y, n_fft, hop), ref)
    fast = stft(y, n_fft, hop, "float32")
    assert np.abs(fast - ref).max() < 1e-4 * np.abs(ref).max()


def test_tempo_with_every_window_is_librosas_and_the_strided_one_agrees() -> None:
    y = np.stack([_music(bpm=bpm) for bpm in (80.0, 100.0, 132.0)])
    bank = librosa.filters.mel(sr=22050, n_fft=2048).T
    mel = np.abs(librosa.stft(y, n_fft=2048, hop_length=512)).swapaxes(-1, -2) ** 2 @ bank
    env = librosa.onset.onset_strength(S=dsp._db(mel).swapaxes(-1, -2), sr=22050, hop_length=512)
    ref = librosa.feature.tempo(onset_envelope=env, sr=22050, hop_length=512).reshape(3)
    assert np.array_equal(dsp._tempo(env, 22050, stride=1), ref)
    strided = dsp._tempo(env, 22050)
    assert np.all(np.abs(np.log2(strided / ref)) < 0.03), (strided, ref)  # within one lag step
    assert np.all(np.abs(np.log2(ref / [80.0, 100.0, 132.0])) < 0.05), ref  # and the tempo is the clicks'


def test_the_onset_envelope_is_librosas_to_the_bit() -> None:
    """dsp computes librosa's onset strength itself (importing librosa cost each dsp process 1.8 s of CPU)."""
    y = np.stack([_music(bpm=bpm) for bpm in (80.0, 132.0)])
    bank = librosa.filters.mel(sr=22050, n_fft=2048).T
    log_mel = dsp._db(np.abs(librosa.stft(y, n_fft=2048, hop_length=512)).swapaxes(-1, -2) ** 2 @ bank)
    ref = librosa.onset.onset_strength(S=log_mel.transpose(0, 2, 1), sr=22050, hop_length=512)
    ours = dsp._onset_strength(log_mel)
    assert ours.dtype == ref.dtype and np.array_equal(ours, ref)


def test_block_features_are_librosas_features_of_the_same_spectrum() -> None:
    """Per-frame work on blocks (band-limited mel/chroma/RMS products, roll-off from block sums, sorted
    contrast bands) against librosa's features computed from the same magnitudes."""
    sr = 22050
    noise = 1e-3 * np.random.default_rng(1).standard_normal(6 * sr)  # keeps contrast valleys within top_db
    for y in (_music(6.0) + noise, _music(6.0, bpm=140.0) + noise):
        y = (y / np.abs(y).max()).astype(np.float32)
        ours = dsp._frame_features(frames(y[None], 2048, 512, "float32")[0], dsp._banks(sr), sr)
        mag = np.abs(stft(y[None], 2048, 512, "float32"))[0].T  # [bins, frames]
        chroma = ours[:, 128:140] / ours[:, 128:140].max(axis=-1, keepdims=True)
        pairs = {
            "mel": (ours[:, :128], librosa.feature.melspectrogram(S=mag**2, sr=sr).T),
            "chroma": (chroma, librosa.feature.chroma_stft(S=mag**2, sr=sr, tuning=0.0).T),
            "rms": (np.sqrt(ours[:, 140]), librosa.feature.rms(S=mag)[0]),
            "centroid": (np.expm1(ours[:, 141]), librosa.feature.spectral_centroid(S=mag, sr=sr)[0]),
            "bandwidth": (np.expm1(ours[:, 142]), librosa.feature.spectral_bandwidth(S=mag, sr=sr)[0]),
            "flatness": (10 ** ours[:, 144] - 1e-10, librosa.feature.spectral_flatness(S=mag)[0]),
            "contrast": (ours[:, 145:], librosa.feature.spectral_contrast(S=mag, sr=sr).T),
        }
        for name, (fast, ref) in pairs.items():
            np.testing.assert_allclose(fast, ref, rtol=2e-4, atol=1e-4 * np.abs(ref).max(), err_msg=name)
        # the roll-off bin is a threshold crossing: compare with the exact (float64) cumulative sum
        exact = librosa.feature.spectral_rolloff(S=mag.astype(np.float64), sr=sr)[0]
        step = sr / 2048
        assert np.array_equal(np.rint(np.expm1(ours[:, 143].astype(np.float64)) / step), np.rint(exact / step))


def test_zero_crossing_rate_from_blocks_counts_each_frames_crossings() -> None:
    y = np.stack([_music(2.0), _music(2.0, bpm=140.0)[::-1].copy()])[:, :40000]
    n = 1 + y.shape[1] // 512
    sign = np.signbit(y)  # no crossing before the first sample, nor in the edge samples padding the signal
    crossings = np.abs(np.diff(sign, axis=-1, prepend=sign[:, :1])).astype(np.float64)
    padded = np.pad(crossings, ((0, 0), (1024, 1024)))
    ref = np.lib.stride_tricks.sliding_window_view(padded, 2048, axis=-1)[:, ::512][:, :n].mean(axis=-1)
    assert np.array_equal(dsp._zero_crossing_rate(y, n), ref.astype(np.float32))


def test_zero_crossing_rate_is_librosas_whatever_the_first_samples_sign() -> None:
    """librosa pads a centred frame with the edge samples, which cross nothing: a window that starts below zero
    (or ends on a crossing) had its first frame's rate 0.5 too high, its second 0.25, so a track and the same
    track with its polarity inverted differed. librosa counts a frame's crossings between its own samples (2047
    pairs), the blocks count the crossing into each frame's first sample too: at most one crossing more."""
    y = np.stack([_music(2.0), _music(2.0, bpm=140.0)[::-1].copy()])[:, :40000]
    y[1, -1] = -np.copysign(0.5, y[1, -2])  # the last two samples cross
    both = np.concatenate([y, -y])
    assert (np.signbit(both[:, 0]) == [False, True, True, False]).all()
    n = 1 + y.shape[1] // 512
    ours = dsp._zero_crossing_rate(both, n)
    ref = np.stack([librosa.feature.zero_crossing_rate(w, frame_length=2048, hop_length=512)[0] for w in both])
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1 / 2048
    assert np.array_equal(ours[:2], ours[2:])


def test_the_hann_window_is_scipys() -> None:
    """spectrum computes the window itself: importing scipy.signal for it cost musicnn's load 0.5 s."""
    import scipy.signal

    from mess.audio.spectrum import hann

    for n_fft in (344, 400, 512, 1024, 2048):  # 344: dsp's tempogram window
        for dtype in ("float64", "float32"):
            assert np.array_equal(hann(n_fft, dtype), scipy.signal.get_window("hann", n_fft).astype(dtype))


def test_numpys_float64_fft_is_scipys() -> None:
    """spectrum takes numpy's FFT for float64 frames (musicnn's) and scipy's for float32 (dsp's): the same values."""
    import scipy.fft

    frames = np.random.default_rng(0).standard_normal((2, 40, 2048))
    for n_fft in (512, 2048):
        part = frames[..., :n_fft]
        assert np.array_equal(np.fft.rfft(part, axis=-1), scipy.fft.rfft(part, axis=-1))


def test_float32_spectra_are_scipys_float32_fft_of_librosas_frames() -> None:
    """dsp's descriptors (stored under its revision) come from float32 spectra: scipy's float32 FFT of librosa's
    centred frames times scipy's periodic Hann window, to the bit (numpy's float32 FFT rounds otherwise)."""
    import scipy.fft
    import scipy.signal

    y = np.stack([_music(3.0), _music(3.0, bpm=140.0)])
    for n_fft, hop in ((512, 256), (2048, 512)):
        padded = np.pad(y, ((0, 0), (n_fft // 2, n_fft // 2)))
        framed = librosa.util.frame(padded, frame_length=n_fft, hop_length=hop, axis=-1).swapaxes(-1, -2)
        window = scipy.signal.get_window("hann", n_fft).astype(np.float32)
        want = scipy.fft.rfft(np.ascontiguousarray(framed) * window, axis=-1).astype(np.complex64)
        got = stft(y, n_fft, hop, "float32")
        assert got.dtype == np.complex64 and np.array_equal(got, want)
        assert not np.array_equal(np.fft.rfft(framed * window, axis=-1).astype(np.complex64), want)


def test_onset_rate_counts_each_click_once_as_librosas_onset_detect_does() -> None:
    """The rhythm group's onset rate: a click every beat at 80, 100 and 132 BPM gives one onset a beat (librosa's
    onset_detect finds the same peaks, with its 30 ms wait rule), per second of the window."""
    seconds, sr = 12.0, 22050
    y = np.stack([_music(seconds, bpm=bpm) for bpm in (80.0, 100.0, 132.0)])
    bank = librosa.filters.mel(sr=sr, n_fft=2048).T
    mel = np.abs(librosa.stft(y, n_fft=2048, hop_length=512)).swapaxes(-1, -2) ** 2 @ bank
    env = librosa.onset.onset_strength(S=dsp._db(mel).swapaxes(-1, -2), sr=sr, hop_length=512)
    rates = dsp._onset_rate(env, seconds, sr)
    detected = [len(librosa.onset.onset_detect(onset_envelope=e, sr=sr, hop_length=512)) for e in env]
    beats = [np.ceil(seconds * bpm / 60) for bpm in (80.0, 100.0, 132.0)]  # clicks at 0, 60 / bpm, ...
    np.testing.assert_array_equal(rates * seconds, detected)
    np.testing.assert_allclose(rates * seconds, beats, atol=1)
    assert np.array_equal(dsp._onset_rate(env[1:2], seconds / 2, sr), 2 * rates[1:2])
    assert np.array_equal(dsp._onset_rate(3 * env + 1000, seconds, sr), rates)  # normalised first
    # a peak is the maximum within +-30 ms (+-1 frame of 23 ms): two 46 ms apart are both onsets, the lower one
    # too, as it exceeds the mean of the 200 ms around it by more than 0.07
    pairs = np.zeros((1, 200))
    pairs[0, 10::20], pairs[0, 12::20] = 1.0, 0.8
    assert np.array_equal(dsp._onset_rate(pairs, 2.0, sr), [20 / 2.0])
    assert np.array_equal(dsp._onset_rate(pairs, 2.0, 44100), [10 / 2.0])  # at 44.1 kHz 23 ms apart: within 30 ms


def _librosa_descriptors(y: np.ndarray, sr: int = 22050) -> dict[str, np.ndarray]:
    """describe's groups of one window, the recipe written out with librosa (its docstrings and the module's):
    the window scaled to peak 1; MFCCs 1-20 (orthonormal DCT-II of the 128-band log-mel, 80 dB below its peak),
    chroma (A440), spectral centroid, bandwidth, 85% roll-off (log1p Hz), flatness (log10), zero-crossing rate and
    the 7 contrast bands, each as mean then standard deviation over frames; then tempo (log1p BPM), onsets per
    second, the onset envelope's mean and deviation, the 95th-10th percentile range of the frames' RMS in dB and
    the RMS's coefficient of variation."""
    y = (y / np.abs(y).max()).astype(np.float32)
    mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    log_mel = librosa.power_to_db(librosa.feature.melspectrogram(S=mag**2, sr=sr), top_db=80.0)
    spectral = np.vstack([
        np.log1p(librosa.feature.spectral_centroid(S=mag, sr=sr)),
        np.log1p(librosa.feature.spectral_bandwidth(S=mag, sr=sr)),
        np.log1p(librosa.feature.spectral_rolloff(S=mag.astype(np.float64), sr=sr)),
        np.log10(librosa.feature.spectral_flatness(S=mag) + 1e-10),
        librosa.feature.zero_crossing_rate(y),
        librosa.feature.spectral_contrast(S=mag, sr=sr),
    ])
    env = librosa.onset.onset_strength(S=log_mel, sr=sr)
    rms = librosa.feature.rms(S=mag)[0]
    level = 20 * np.log10(rms + 1e-9)

    def stats(feature: np.ndarray) -> np.ndarray:
        return np.concatenate([feature.mean(axis=1), feature.std(axis=1)])

    return {
        "mfcc": stats(scipy.fft.dct(log_mel, axis=0, norm="ortho")[1:21]),
        "chroma": stats(librosa.feature.chroma_stft(S=mag**2, sr=sr, tuning=0.0)),
        "spectral": stats(spectral),
        "rhythm": np.array([np.log1p(librosa.feature.tempo(onset_envelope=env, sr=sr)[0]),
                            len(librosa.onset.onset_detect(onset_envelope=env, sr=sr)) / (len(y) / sr),
                            env.mean(), env.std(), np.percentile(level, 95) - np.percentile(level, 10),
                            rms.std() / rms.mean()]),
    }


def test_describe_is_librosas_descriptors_of_each_window_scaled_to_peak_one() -> None:
    """The whole assembly against librosa, for a batch of two windows (clicks at 100 BPM; another at 140 BPM,
    inverted, fading in); each window alone gives its row as [dim]; a window at 1e-12 of that level is described
    as the same window (the scaling to peak 1 comes first), and the model's layers are these groups."""
    sr = 22050
    noise = 1e-3 * np.random.default_rng(1).standard_normal(6 * sr)  # keeps contrast valleys within top_db
    y = np.stack([_music(6.0) + noise, -_music(6.0, bpm=140.0) * np.linspace(0.2, 1.0, 6 * sr) + noise])
    y = y.astype(np.float32)
    got = dsp.describe(y)
    assert {k: v.shape for k, v in got.items()} == {"mfcc": (2, 40), "chroma": (2, 24), "spectral": (2, 24),
                                                   "rhythm": (2, 6)}
    for row, window in enumerate(y):
        want = _librosa_descriptors(window)
        for name, ref in want.items():
            ours = got[name][row]
            # the tempogram's windows every 8 frames pick librosa's lag for these clicks (in general, within one
            # lag step: test_tempo_with_every_window_is_librosas_and_the_strided_one_agrees)
            np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=1e-4 * np.abs(ref).max(), err_msg=f"{name} {row}")
        alone = dsp.describe(window)
        for name in got:  # the same values up to the matrix products' summation order
            np.testing.assert_allclose(alone[name], got[name][row], rtol=1e-5, atol=1e-5 * np.abs(got[name]).max())
    quiet = dsp.describe(1e-12 * y)
    for name in got:
        np.testing.assert_allclose(quiet[name], got[name], rtol=1e-4, atol=1e-4 * np.abs(got[name]).max())
    # a window's descriptors do not hang on the windows batched with it: a pure tone beside brown noise, whose
    # quietest bands lie further than 80 dB below the tone's loudest (each window's dB floor is its own)
    t = np.arange(3 * sr) / sr
    brown = np.cumsum(np.random.default_rng(0).standard_normal(t.size))
    pair = np.stack([np.sin(2 * np.pi * 440 * t), brown - brown.mean()]).astype(np.float32)
    together = dsp.describe(pair)
    for row, window in enumerate(pair):
        alone = dsp.describe(window)
        for name in got:
            np.testing.assert_allclose(alone[name], together[name][row], rtol=1e-5,
                                       atol=1e-5 * np.abs(together[name]).max(), err_msg=name)
    # below zero throughout (a DC offset): the peak is the most negative sample, here too at any level
    below = y[:1] - (y[:1].max() + 0.5)
    low, tiny = dsp.describe(below), dsp.describe(1e-12 * below)
    for name in got:
        assert np.isfinite(low[name]).all(), name
        np.testing.assert_allclose(tiny[name], low[name], rtol=1e-4, atol=1e-4 * np.abs(low[name]).max())
    # a window that ends in digital silence (a fourth of it): its level's 10th percentile is that of silence,
    # far below the music's, and finite
    ending = y[:1].copy()
    ending[:, -ending.shape[1] // 4:] = 0.0
    rhythm = dsp.describe(ending)["rhythm"][0]
    assert np.isfinite(rhythm).all() and rhythm[4] > 100
    model = dsp.DspModel()
    layers = model.embed(y)
    assert model.info.layer_names == ("mfcc", "chroma", "spectral", "rhythm")
    assert [layer.shape[1] for layer in layers] == list(model.info.layer_dims) == [40, 24, 24, 6]
    assert all(layer.dtype == np.float32 and np.array_equal(layer, got[name].astype(np.float32))
               for layer, name in zip(layers, model.info.layer_names, strict=True))


def test_the_db_floor_of_each_window_is_80_db_below_its_own_peak_as_in_librosa() -> None:
    """_db of a batch [windows, frames, bands] is librosa's power_to_db (top_db 80) of each window alone: a window
    60 dB quieter than its neighbour keeps its own range."""
    power = np.random.default_rng(4).gamma(0.3, size=(2, 50, 128)).astype(np.float32) ** 4
    power[1] *= 1e-6
    got = dsp._db(power)
    for window, ours in zip(power, got, strict=True):
        np.testing.assert_allclose(ours, librosa.power_to_db(window, top_db=80.0), rtol=1e-5, atol=1e-4)
