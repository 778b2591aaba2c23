"""Small deterministic signals and files for fast tests and bad-input tests.

Signals are float32 arrays, mono ``[frames]`` or ``[frames, channels]``. ``write``
picks soundfile for the formats libsndfile writes (wav, flac, ogg, mp3, aiff) and
FFmpeg through PyAV for m4a (AAC) and opus.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile as sf

SOUNDFILE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3", ".aiff": "AIFF"}
AV_CODECS = {".m4a": "aac", ".opus": "libopus"}
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def tone(freq: float = 440.0, seconds: float = 1.0, sr: int = 22050, harmonics: int = 1,
         amplitude: float = 0.5) -> np.ndarray:
    """A harmonic tone: partial k at k * freq with amplitude 1/k, peak-scaled to ``amplitude``."""
    t = np.arange(int(seconds * sr)) / sr
    partials = [np.sin(2 * np.pi * k * freq * t) / k for k in range(1, harmonics + 1) if k * freq < sr / 2]
    signal = np.sum(partials, axis=0)
    return (amplitude * signal / max(float(np.abs(signal).max()), 1e-12)).astype(np.float32)


def noise(seconds: float = 1.0, sr: int = 22050, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """Uniform white noise in [-amplitude, amplitude]."""
    return np.random.default_rng(seed).uniform(-amplitude, amplitude, int(seconds * sr)).astype(np.float32)


def clicks(bpm: float = 120.0, seconds: float = 4.0, sr: int = 22050, amplitude: float = 0.9) -> np.ndarray:
    """A 1 kHz blip with a 10 ms decay on every beat, starting at 0."""
    out = np.zeros(int(seconds * sr), dtype=np.float32)
    t = np.arange(int(0.05 * sr)) / sr
    blip = (amplitude * np.sin(2 * np.pi * 1000 * t) * np.exp(-t / 0.01)).astype(np.float32)
    for start in np.arange(0, out.size, 60 / bpm * sr).astype(int):
        stop = min(out.size, start + blip.size)
        out[start:stop] = blip[: stop - start]
    return out


def silence(seconds: float = 1.0, sr: int = 22050) -> np.ndarray:
    """Digital silence."""
    return np.zeros(int(seconds * sr), dtype=np.float32)


def multichannel(signal: np.ndarray, channels: int) -> np.ndarray:
    """``[frames, channels]``: channel c is the signal at gain 1 / (c + 1), so channels stay distinguishable."""
    gains = 1.0 / np.arange(1, channels + 1, dtype=np.float32)
    return signal[:, None] * gains[None, :]


def write(path: Path, audio: np.ndarray, sr: int) -> Path:
    """Write ``audio`` in the format named by the extension; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in SOUNDFILE_FORMATS:
        sf.write(path, audio, sr, format=SOUNDFILE_FORMATS[suffix])
    elif suffix in AV_CODECS:
        _encode_av(path, audio if audio.ndim == 2 else audio[:, None], sr, AV_CODECS[suffix])
    else:
        raise ValueError(f"cannot write {suffix!r}: use one of {sorted([*SOUNDFILE_FORMATS, *AV_CODECS])}")
    return path


def corrupt(path: Path, n_bytes: int = 4096, seed: int = 0) -> Path:
    """Random bytes under an audio extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(n_bytes))
    return path


def truncate(source: Path, path: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``'s bytes: a valid header, then the stream cut mid-frame."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_test_set(out_dir: Path) -> dict[str, Path]:
    """A small fixed set of good, odd and broken files (skipping files already there).

    Good: ``tone.{wav,flac,ogg,mp3,m4a,opus}`` (2 s, A440 with harmonics), ``stereo.flac``,
    ``surround51.flac``, ``rate_8000.wav``, ``rate_96000.flac``, ``noise.wav``,
    ``clicks_120bpm.wav``. Odd: ``silence.wav``, ``short.wav`` (10 ms). Broken (rewritten
    each call, deterministically): ``empty.wav`` (0 bytes), ``corrupt.mp3``, ``corrupt.flac``,
    ``truncated.flac``, ``truncated.mp3``.
    """
    sr = 22050
    a440 = tone(440.0, 2.0, sr, harmonics=4)
    makers = {f"tone{ext}": (a440, sr) for ext in (".wav", ".flac", ".ogg", ".mp3", ".m4a")}
    makers |= {
        "tone.opus": (tone(440.0, 2.0, 48000, harmonics=4), 48000),  # libopus encodes at a few rates only
        "stereo.flac": (multichannel(a440, 2), sr),
        "surround51.flac": (multichannel(a440, 6), sr),
        "rate_8000.wav": (tone(440.0, 2.0, 8000, harmonics=4), 8000),
        "rate_96000.flac": (tone(440.0, 2.0, 96000, harmonics=4), 96000),
        "noise.wav": (noise(2.0, sr), sr),
        "clicks_120bpm.wav": (clicks(120.0, 4.0, sr), sr),
        "silence.wav": (silence(2.0, sr), sr),
        "short.wav": (tone(440.0, 0.01, sr), sr),
    }
    files = {name: out_dir / name for name in makers}
    for name, (audio, rate) in makers.items():
        if not files[name].exists():
            write(files[name], audio, rate)
    files["empty.wav"] = out_dir / "empty.wav"
    files["empty.wav"].touch()
    files["corrupt.mp3"] = corrupt(out_dir / "corrupt.mp3", seed=1)
    files["corrupt.flac"] = corrupt(out_dir / "corrupt.flac", seed=2)
    files["truncated.flac"] = truncate(files["tone.flac"], out_dir / "truncated.flac")
    files["truncated.mp3"] = truncate(files["tone.mp3"], out_dir / "truncated.mp3")
    return files


def _encode_av(path: Path, audio: np.ndarray, sr: int, codec: str) -> None:
    """Encode ``[frames, channels]`` float audio with FFmpeg through PyAV."""
    if codec == "libopus" and sr not in OPUS_RATES:
        raise ValueError(f"opus encodes only at {OPUS_RATES} Hz, not {sr}")
    layout = LAYOUTS[audio.shape[1]]
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream(codec, rate=sr, layout=layout)
        if not isinstance(stream, av.audio.stream.AudioStream):
            raise ValueError(f"{codec} is not an audio codec")
        fmt = stream.codec_context.format
        samples = (audio.T if fmt.is_planar else audio.reshape(1, -1)).astype(np.float32)
        if fmt.name.startswith("s16"):
            samples = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format=fmt.name, layout=layout)
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    tmp.replace(path)
