"""The dsp baseline's fast paths against the librosa computations they replace."""

import librosa
import numpy as np
import pytest

from mess.audio.spectrum import stft
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
    mel = np.abs(librosa.stft(y, n_fft=2048, hop_length=512)).swapaxes(-1, -2) ** 2 @ dsp._banks(22050)[0]
    env = librosa.onset.onset_strength(S=dsp._db(mel).swapaxes(-1, -2), sr=22050, hop_length=512)
    ref = librosa.feature.tempo(onset_envelope=env, sr=22050, hop_length=512).reshape(3)
    assert np.array_equal(dsp._tempo(env, 22050, stride=1), ref)
    strided = dsp._tempo(env, 22050)
    assert np.all(np.abs(np.log2(strided / ref)) < 0.03), (strided, ref)  # within one lag step
    assert np.all(np.abs(np.log2(ref / [80.0, 100.0, 132.0])) < 0.05), ref  # and the tempo is the clicks'
