"""Decoding every supported container, channel layout and sample rate to mono at the model rate."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from mess.audio.decode import AudioError, downmix, load_audio, load_segments, probe
from mess.audio.discover import content_hash, find_audio
from mess.audio.tags import read_tags
from mess.audio.windows import WindowPolicy


def _sine(sr: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    mono = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def _encode_av(path: Path, audio: np.ndarray, sr: int, codec: str, container_format: str | None = None,
               tags: dict[str, str] | None = None, sample_format: str | None = None,
               options: dict[str, str] | None = None) -> None:
    """Encode [frames, channels] float audio with FFmpeg through PyAV (opus, aac, mp3; wmav2 in asf, flac in
    matroska), with ``tags`` as the container's metadata and ``options`` as the muxer's."""
    layout = {1: "mono", 2: "stereo"}[audio.shape[1]]
    with av.open(str(path), "w", format=container_format, options=options or {}) as container:
        stream = container.add_stream(codec, rate=sr, layout=layout)
        if sample_format is not None:
            stream.codec_context.format = sample_format
        if codec == "wmav2":
            stream.bit_rate = 128000
        container.metadata.update(tags or {})
        fmt = stream.codec_context.format
        samples = audio.T if fmt.is_planar else audio.reshape(1, -1)
        if fmt.name.startswith("s16"):
            samples = (samples * 32767).astype(np.int16)
        elif fmt.name.startswith("s32"):
            samples = (samples * 2147483647).astype(np.int32)
        elif fmt.name.startswith("u8"):
            samples = np.round(samples * 127 + 128).astype(np.uint8)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format=fmt.name, layout=layout)
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            if packet.size:  # FLAC's last packet in Matroska: side data only, which the muxer refuses
                container.mux(packet)


def _dominant_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.argmax(spectrum) * sr / y.size)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3", "opus", "m4a"])
def test_every_container_decodes_to_the_same_pitch_at_the_target_rate(tmp_path: Path, ext: str) -> None:
    sr = 48000 if ext == "opus" else 44100
    audio = _sine(sr, 2.0, channels=2)
    path = tmp_path / f"tone.{ext}"
    if ext in ("opus", "m4a"):
        _encode_av(path, audio, sr, {"opus": "libopus", "m4a": "aac"}[ext])
    else:
        sf.write(path, audio, sr)
    y = load_audio(path, 24000)
    assert abs(y.size / 24000 - 2.0) < 0.1
    assert abs(_dominant_hz(y, 24000) - 440.0) < 2.0
    assert 0.2 < np.abs(y).max() < 0.4
    assert probe(path).channels == 2


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("sr", [8000, 22050, 96000])
def test_channel_layouts_and_rates_downmix_and_resample(tmp_path: Path, channels: int, sr: int) -> None:
    path = tmp_path / "multi.flac"
    sf.write(path, _sine(sr, 1.5, freq=330.0, channels=channels), sr)
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 24000) <= 2
    assert abs(_dominant_hz(y, 16000) - 330.0) < 2.0


def test_max_seconds_bounds_a_long_file(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, _sine(8000, 60.0), 8000)
    y = load_audio(path, 16000, max_seconds=10.0)
    assert y.size == 160000


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEfmt garbage", bytes(range(256)) * 40])
def test_unreadable_files_raise_audio_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.flac"
    path.write_bytes(content)
    with pytest.raises(AudioError, match="broken.flac"):
        load_audio(path, 16000)


def _decoded_seconds(path: Path) -> float:
    """Seconds of audio FFmpeg decodes from ``path`` (an independent decoder; reference for truncated files)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    return sum(f.samples for f in frames) / frames[0].sample_rate


@pytest.mark.parametrize("ext", ["wav", "mp3"])
def test_a_truncated_file_decodes_only_the_audio_that_is_there(tmp_path: Path, ext: str) -> None:
    """WAV and MP3 frames stand alone: the first half of the bytes is the first half of the tone, nothing more."""
    full = tmp_path / f"full.{ext}"
    if ext == "mp3":  # as most MP3s are made (LAME through FFmpeg)
        _encode_av(full, _sine(44100, 4.0), 44100, "libmp3lame")
    else:
        sf.write(full, _sine(44100, 4.0), 44100)
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    y = load_audio(cut, 16000)
    assert y.size / 16000 == pytest.approx(_decoded_seconds(cut), abs=0.05)
    assert 1.5 < y.size / 16000 < 2.5  # the header still claims 4 s
    inner = y[1600: y.size - 1600]  # edges aside (encoder delay, resampler tail)
    blocks = np.abs(inner[: inner.size // 160 * 160]).reshape(-1, 160).max(axis=1)  # 10 ms blocks
    assert blocks.min() > 0.2, "no silence or stale samples in place of the missing half"
    assert abs(_dominant_hz(y, 16000) - 440.0) < 2.0


@pytest.mark.parametrize("ext", ["aac", "m4a"])
def test_an_aac_file_cut_short_decodes_the_audio_that_is_there(tmp_path: Path, ext: str) -> None:
    """AAC (ADTS, or MP4 with its index first, as downloads are made) cut inside its last packet failed whole:
    'cannot decode (invalid data found when processing input: damaged, or not audio)'. The packet cut short is
    passed over, and the audio before it decoded, as for MP3 and WAV."""
    full = tmp_path / f"full.{ext}"
    options = {"movflags": "faststart"} if ext == "m4a" else None
    _encode_av(full, _sine(44100, 4.0, channels=2), 44100, "aac", "adts" if ext == "aac" else None, options=options)
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2 + 7])  # inside a packet
    y = load_audio(cut, 16000)
    assert 1.5 < y.size / 16000 < 2.5
    assert abs(_dominant_hz(y, 16000) - 440.0) < 2.0


def test_a_truncated_flac_fails_naming_the_file(tmp_path: Path) -> None:
    """A FLAC stream cut mid-frame loses sync: an AudioError, as for any broken file (the pipeline reports it)."""
    path = tmp_path / "cut.flac"
    sf.write(path, _sine(44100, 4.0), 44100)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AudioError, match=r"cut\.flac: decoding failed part-way"):
        load_audio(path, 16000)


def test_discovery_hashing_and_tags(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    a = tmp_path / "sub" / "a.flac"
    sf.write(a, _sine(22050, 1.0), 22050)
    sf.write(tmp_path / ".hidden" / "b.wav", _sine(22050, 1.0), 22050)
    (tmp_path / "notes.txt").write_text("not audio")
    assert find_audio([tmp_path]) == [a.resolve()]
    import mutagen.flac

    tagged = mutagen.flac.FLAC(a)
    tagged["artist"], tagged["genre"] = "Bach", "classical"
    tagged.save()
    tags = read_tags(a)
    assert (tags["artist"], tags["genre"], tags["album"]) == ("Bach", "classical", None)
    b = tmp_path / "copy.flac"
    b.write_bytes(a.read_bytes())
    assert content_hash(a) == content_hash(b)


@pytest.mark.parametrize("channels", [1, 2, 6, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_downmix_is_numpys_float32_mean_to_the_bit(channels: int, dtype: type) -> None:
    """The channel-by-channel downmix gives the very samples of ``mean(axis=1, dtype=float32)`` it replaces."""
    rng = np.random.default_rng(channels)
    block = rng.standard_normal((48_001, channels)) * (3000 if dtype is np.int16 else 0.3)
    block = block.astype(dtype)
    mono = downmix(block)
    assert mono.dtype == np.float32 and mono.shape == (48_001,)
    assert np.array_equal(mono, block.mean(axis=1, dtype=np.float32))


def test_windows_are_ceil_of_duration_over_window_spread_evenly_to_the_end() -> None:
    """ceil(duration / window) full windows (at most max_windows), the first at the start, the last ending at the
    end of the track, evenly spaced; a track no longer than a window is one window of its own length."""
    import math

    from mess.audio.windows import WindowPolicy

    policy, rate = WindowPolicy(window_seconds=1.0, max_windows=10), 100
    for n in (101, 250, 299, 301, 999, 5000):
        starts, length = policy.starts(n, rate)
        count = min(10, math.ceil(n / 100))
        assert length == 100 and len(starts) == count, n
        assert starts[0] == 0 and starts[-1] + length == n, n
        np.testing.assert_allclose(np.diff(starts), (n - 100) / (count - 1), atol=1)
        assert policy.analysed_seconds(n / rate) == count * 1.0
    for n in (50, 100):
        starts, length = policy.starts(n, rate)
        assert starts.tolist() == [0] and length == n


def test_a_window_policy_refuses_what_cuts_no_window_and_cuts_exactly_at_its_bounds() -> None:
    """A window of 0, negative, infinite or NaN seconds, no windows or no minimum length is refused; the smallest
    sensible values are kept. A track exactly one window long is that window; one sample longer is two windows, the
    second ending at the end; cut returns each window's samples with its start in seconds."""
    from mess.audio.windows import WindowPolicy

    for bad in ({"window_seconds": 0.0}, {"window_seconds": -1.0}, {"window_seconds": float("inf")},
                {"window_seconds": float("nan")}, {"max_windows": 0}, {"min_seconds": 0.0}, {"min_seconds": -1.0}):
        with pytest.raises(ValueError, match="invalid window policy"):
            WindowPolicy(**bad)  # type: ignore[arg-type]
    assert WindowPolicy(window_seconds=0.5, max_windows=1, min_seconds=0.01).max_windows == 1
    two = WindowPolicy(window_seconds=2.0, max_windows=4)
    assert two.analysed_seconds(2.0) == 2.0 and two.analysed_seconds(0.5) == 0.5
    assert two.analysed_seconds(2.02) == 4.0 and two.analysed_seconds(100.0) == 8.0
    policy = WindowPolicy(window_seconds=1.0, max_windows=4)
    starts, length = policy.starts(100, 100)
    assert starts.tolist() == [0] and length == 100
    starts, length = policy.starts(101, 100)
    assert starts.tolist() == [0, 1] and length == 100
    audio = np.arange(250, dtype=np.float32)
    seconds, windows = policy.cut(audio, 100)
    assert seconds.tolist() == [0.0, 0.75, 1.5] and windows.shape == (3, 100)
    assert [w.tolist() for w in windows] == [list(range(a, a + 100)) for a in (0, 75, 150)]


def test_silence_is_a_peak_below_minus_80_dbfs_of_either_sign(tmp_path: Path) -> None:
    """-90 dBFS is refused as silent, -70 dBFS is music; a signal that only goes negative is not silence. A
    constant offset (a DC-coupled input with nothing plugged in) is silent, and was embedded as music."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.prepare import decode_windows, inspect_file

    rate = 22050
    tone = np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate).astype(np.float32)
    files = {"quiet.wav": tone * 10 ** (-90 / 20), "soft.wav": tone * 10 ** (-70 / 20),
             "negative.wav": -0.3 * np.abs(tone), "offset.wav": np.full_like(tone, 0.25) + tone * 10 ** (-90 / 20),
             "soft_offset.wav": np.full_like(tone, -0.25) + tone * 10 ** (-70 / 20)}
    for name, audio in files.items():
        sf.write(tmp_path / name, audio, rate, subtype="FLOAT")
    policy = WindowPolicy(window_seconds=1.0)
    with pytest.raises(AudioError, match="silent"):
        decode_windows(inspect_file(tmp_path / "quiet.wav"), rate, policy)
    refusal = r"/offset\.wav: silent \(a constant offset of 0\.25, varying by -\d+ dBFS\)"
    for model_rate in (rate, 16000):  # resampled, the step into the offset rings at each end
        with pytest.raises(AudioError, match=refusal):
            decode_windows(inspect_file(tmp_path / "offset.wav"), model_rate, policy)
    for name in ("soft.wav", "negative.wav", "soft_offset.wav"):
        assert decode_windows(inspect_file(tmp_path / name), 16000, policy).audio.size
        windows = decode_windows(inspect_file(tmp_path / name), rate, policy)
        assert np.abs(windows.audio).max() == pytest.approx(np.abs(files[name]).max(), rel=1e-3), name


FIXTURES = Path(__file__).parent / "fixtures" / "audio"  # made by encoders FFmpeg lacks: see its README


def _write_format(folder: Path, ext: str) -> Path:
    """A 440 Hz stereo tone tagged artist 'Fixture Artist', album 'Fixture Album', in a format FFmpeg decodes
    and libsndfile does not (AIFF-C aside), written by PyAV's encoders or copied from tests/fixtures/audio."""
    path = folder / f"tone{ext}"
    tags = {"artist": "Fixture Artist", "album": "Fixture Album"}
    if ext in (".ape", ".mpc"):  # Monkey's Audio (jmac 1.74) and Musepack SV8 (mpcenc 1.30.1)
        path.write_bytes((FIXTURES / f"tone{ext}").read_bytes())
    elif ext == ".aifc":  # libsndfile writes float AIFF as AIFF-C; its tags go in an ID3 chunk
        sf.write(path, _sine(44100, 2.0, channels=2), 44100, format="AIFF", subtype="FLOAT")
        import mutagen.aiff
        from mutagen.id3 import TALB, TPE1

        tagged = mutagen.aiff.AIFF(path)
        tagged.add_tags()
        tagged.tags.add(TPE1(encoding=3, text=tags["artist"]))
        tagged.tags.add(TALB(encoding=3, text=tags["album"]))
        tagged.save()
    else:
        codec, container = {".wma": ("wmav2", "asf"), ".wv": ("wavpack", None), ".tta": ("tta", None),
                            ".mka": ("flac", "matroska")}[ext]
        _encode_av(path, _sine(44100, 2.0, channels=2), 44100, codec, container, tags)
    return path


@pytest.mark.parametrize("ext", [".wma", ".wv", ".ape", ".mpc", ".mka", ".tta", ".aifc"])
def test_more_formats_are_found_decoded_hashed_and_tagged(tmp_path: Path, ext: str) -> None:
    """WMA, WavPack, Monkey's Audio, Musepack, Matroska audio, TTA and AIFF-C were passed over without a word.
    Each is found in a folder, probed and decoded (FFmpeg), its tags read (mutagen names WMA's 'Author' so; it
    does not read Matroska; FFmpeg reads AIFF's ID3 chunk and TTA's APEv2 tags), and retagging keeps its hash."""
    path = _write_format(tmp_path, ext)
    (tmp_path / "clip.mkv").write_bytes(b"\x1a\x45\xdf\xa3")  # video containers stay out of a music folder's files
    assert find_audio([tmp_path]) == [path.resolve()]
    seconds = 3.0 if ext in (".ape", ".mpc") else 2.0
    # FFmpeg reads Musepack SV8's length in whole 1.67 s packets (a file's decode gives the catalog its length)
    assert probe(path).duration == pytest.approx(seconds, abs=1.7 if ext == ".mpc" else 0.1)
    y = load_audio(path, 16000)
    assert abs(y.size / 16000 - seconds) < 0.1
    assert abs(_dominant_hz(y, 16000) - 440.0) < 2.0
    assert 0.25 < np.abs(y).max() < 0.35 and abs(float(y.mean())) < 0.01
    tags = read_tags(path)
    assert (tags["artist"], tags["album"]) == ("Fixture Artist", "Fixture Album")
    if ext == ".mka":  # no tag writer here
        return
    before = content_hash(path)
    import mutagen

    retagged = mutagen.File(path)
    if ext in (".tta", ".aifc"):
        from mutagen.id3 import TPE1

        if retagged.tags is None:
            retagged.add_tags()
        retagged.tags.add(TPE1(encoding=3, text="Someone Else " * 50))
    else:
        retagged.tags["Author" if ext == ".wma" else "Artist"] = "Someone Else " * 50
    retagged.save()
    assert read_tags(path)["artist"] == ("Someone Else " * 50).strip()
    assert content_hash(path) == before  # the audio packets' (Monkey's Audio: the bytes between the tags)


def test_unsigned_8_bit_pcm_from_ffmpeg_is_centred_on_zero(tmp_path: Path) -> None:
    """8-bit PCM is unsigned, silence at 128: a TTA file of it decoded to a tone lifted by +0.5 at half scale."""
    path = tmp_path / "tone.tta"
    _encode_av(path, _sine(44100, 1.0), 44100, "tta", sample_format="u8")
    y = load_audio(path, 16000)
    assert abs(float(y.mean())) < 0.01 and 0.28 < np.abs(y).max() < 0.32


def test_a_wav_whose_header_was_never_finished_is_read_to_its_end(tmp_path: Path) -> None:
    """A recorder killed mid-take leaves its WAV header's RIFF and data sizes at 0: libsndfile read 0 frames of
    it, and the file failed as 'contains no audio samples'. FFmpeg reads such data to the end, as players do."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.prepare import decode_windows, inspect_file

    finished, unfinished = tmp_path / "finished.wav", tmp_path / "unfinished.wav"
    sf.write(finished, _sine(44100, 25.0, channels=2), 44100, subtype="PCM_24")
    data = bytearray(finished.read_bytes())
    at = data.find(b"data")
    data[4:8] = data[at + 4 : at + 8] = bytes(4)
    unfinished.write_bytes(data)
    assert probe(unfinished).duration == pytest.approx(25.0)
    np.testing.assert_allclose(load_audio(unfinished, 16000), load_audio(finished, 16000), atol=1e-6)
    policy = WindowPolicy(window_seconds=10.0)
    windows = decode_windows(inspect_file(unfinished), 16000, policy)  # seeked: three windows over all 25 s
    np.testing.assert_allclose(windows.starts, [0.0, 7.5, 15.0])
    np.testing.assert_allclose(windows.audio, decode_windows(inspect_file(finished), 16000, policy).audio, atol=1e-6)


@pytest.mark.parametrize(("sr", "ext"), [(8000, "mp3"), (22050, "mp3"), (8000, "wav")])
def test_an_mp3_decoded_whole_is_the_audio_one_read_gives(tmp_path: Path, sr: int, ext: str) -> None:
    """libsndfile's MP3 reads one after another (the whole decode reads 65536 frames at a time) go wrong around
    some of their ends in low-rate mono files: spans up to 0.18 away from the audio one read of the whole file
    gives (and FFmpeg's decode). A whole MP3 is decoded by FFmpeg, in a WAV file too (Windows' MPEG Layer-3)."""
    path = tmp_path / f"speech.{ext}"
    rng = np.random.default_rng(0)
    t = np.arange(20 * sr) / sr
    audio = 0.3 * np.sin(2 * np.pi * 220 * 2 ** (rng.integers(0, 24, t.size // sr * 4 + 4)[(t * 4).astype(int)] / 12)
                         * t) + 0.01 * rng.standard_normal(t.size)
    _encode_av(path, audio.astype(np.float32)[:, None], sr, "libmp3lame", "wav" if ext == "wav" else None)
    one_read, rate = sf.read(path, dtype="float32")
    assert rate == sr
    np.testing.assert_allclose(load_audio(path, sr), one_read, atol=1e-5)


def test_an_opus_file_decoded_whole_starts_where_its_audio_does(tmp_path: Path) -> None:
    """libsndfile's Opus reads one after another (the whole decode reads 65536 frames at a time) drop the 312
    pre-skip samples at the start of the second read, not the first: its first 1.4 s came 6.5 ms late, then
    jumped. The whole of an Opus file is decoded by FFmpeg (libsndfile's seeks and one read are right)."""
    sr = 48000
    audio = (0.2 * np.random.default_rng(0).standard_normal(12 * sr)).astype(np.float32)  # one lag correlates
    path = tmp_path / "clip.opus"
    _encode_av(path, audio[:, None], sr, "libopus", "ogg")
    decoded = load_audio(path, sr)
    part = audio[4800:52800]  # within the first read
    lags = [float(np.dot(decoded[4800 + lag : 52800 + lag], part)) for lag in range(-400, 401)]
    assert int(np.argmax(lags)) - 400 == 0


def test_a_flac_without_its_length_is_decoded_whole(tmp_path: Path) -> None:
    """A FLAC stream written to a pipe (`flac -`, FFmpeg to stdout) has 0 for its length in STREAMINFO: libsndfile
    counted 2^63-1 frames, a probe said 2e14 s, and its reads failed part-way ('decoding failed part-way (Internal
    psf_fseek() failed.)'): the file failed. Its length is unknown (0), and FFmpeg decodes it whole."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.prepare import decode_windows, inspect_file

    known, unknown = tmp_path / "known.flac", tmp_path / "piped.flac"
    sf.write(known, _sine(44100, 25.0, channels=2), 44100)
    data = bytearray(known.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first: its 36-bit sample count at bytes 21-25
    data[21] &= 0xF0
    data[22:26] = bytes(4)
    unknown.write_bytes(data)
    assert probe(unknown).duration == 0.0
    policy = WindowPolicy(window_seconds=10.0)
    windows = decode_windows(inspect_file(unknown), 16000, policy)
    assert windows.duration == pytest.approx(25.0)  # the catalog's length, from the decode
    np.testing.assert_allclose(windows.starts, [0.0, 7.5, 15.0])
    expected = decode_windows(inspect_file(known), 16000, policy).audio  # libsndfile's: 16-bit scaled by 2^15
    np.testing.assert_allclose(windows.audio, expected, atol=1e-4)


def test_silence_is_judged_below_8_khz_whatever_rate_a_model_decodes(tmp_path: Path) -> None:
    """A lossy encoder's noise above 11 kHz (Wesnoth's silence.ogg peaks at -79 dBFS at 44.1 kHz, -97 at 16 kHz) made
    the default model (44.1 kHz) embed as music what dsp (22.05 kHz) refused as silent."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.prepare import decode_windows, inspect_file

    rate = 44100
    t = np.arange(3 * rate) / rate
    hiss = 10 ** (-75 / 20) * np.sin(2 * np.pi * 15000 * t)  # audible to no one, above the 8 kHz band
    quiet = 10 ** (-75 / 20) * np.sin(2 * np.pi * 1000 * t)  # the same peak in the band: soft music, not silence
    sf.write(tmp_path / "hiss.wav", hiss.astype(np.float32), rate, subtype="FLOAT")
    sf.write(tmp_path / "quiet.wav", quiet.astype(np.float32), rate, subtype="FLOAT")
    policy = WindowPolicy(window_seconds=1.0)
    for model_rate in (rate, 22050, 16000):
        with pytest.raises(AudioError, match=r"hiss\.wav: silent \(peak -\d+ dBFS"):
            decode_windows(inspect_file(tmp_path / "hiss.wav"), model_rate, policy)
        assert decode_windows(inspect_file(tmp_path / "quiet.wav"), model_rate, policy).audio.size


def test_every_value_of_a_multi_valued_genre_tag_is_kept_and_the_first_is_its_label(tmp_path: Path) -> None:
    """Two GENRE comments in a FLAC, an ID3v2.4 TCON list in an MP3 and two M4A genre values kept only their first
    ('Ambient'): 'Electronic' vanished from the catalogue, the export and `mess artists --hybrid`'s genre sets. All
    are kept ('Ambient; Electronic'); a genre label (evaluate, fuse, cluster names) is still the first value."""
    import mutagen
    from mutagen.easyid3 import EasyID3

    from mess.artists.hybrid import _TAG_SPLIT
    from mess.audio.names import label_key

    genres = ["Ambient", "Electronic", "Ambient"]  # a repeated value is kept once
    flac, mp3, m4a = tmp_path / "a.flac", tmp_path / "b.mp3", tmp_path / "c.m4a"
    sf.write(flac, _sine(22050, 1.0), 22050)
    _encode_av(mp3, _sine(22050, 1.0), 22050, "mp3")
    _encode_av(m4a, _sine(22050, 1.0), 22050, "aac")
    for path in (flac, m4a):
        tagged = mutagen.File(path, easy=True)
        tagged["genre"] = genres
        tagged.save()
    id3 = EasyID3()
    id3["genre"] = genres
    id3.save(mp3, v2_version=4)
    for path in (flac, mp3, m4a):
        genre = read_tags(path)["genre"]
        assert genre is not None and [g.casefold() for g in _TAG_SPLIT.split(genre)] == ["ambient", "electronic"]
        assert label_key("genre", genre) == "Ambient", path.name
    assert label_key("genre", "Drum & Bass") == "Drum & Bass" and label_key("genre", " ; ") is None


def _id3v1(title: str, artist: str) -> bytes:
    """An ID3v1 tag: the 128 bytes some taggers append to a file (foobar2000 writes APEv2 and ID3v1 to WavPack)."""
    return (b"TAG" + title.encode().ljust(30, b"\0") + artist.encode().ljust(30, b"\0") + bytes(30) + b"2000"
            + bytes(30) + b"\xff")


@pytest.mark.parametrize("ext", [".wv", ".mpc"])
def test_wavpack_and_musepack_with_an_id3v1_tag_at_their_end_decode(tmp_path: Path, ext: str) -> None:
    """A WavPack or Musepack file with an ID3v1 tag after its audio (and APEv2 tag) failed: FFmpeg's demuxers read
    the tag as a damaged block ('cannot decode (invalid data ...)', 'operation not permitted'), and its hash was of
    its bytes, so rewriting the tag changed it. FFmpeg is given the bytes before the trailing tags."""
    plain = _write_format(tmp_path, ext)
    tagged = tmp_path / f"tagged{ext}"
    tagged.write_bytes(plain.read_bytes() + _id3v1("Title", "Tagger"))
    assert probe(tagged) == probe(plain)
    whole = load_audio(tagged, 16000)
    assert np.array_equal(whole, load_audio(plain, 16000))
    if ext == ".wv":  # Musepack's coarse timestamps leave it to whole decodes
        starts = [0.2, 1.0]
        windows = load_segments(tagged, 16000, starts, 0.5)
        for start, window in zip(starts, windows, strict=True):
            assert np.allclose(window, whole[int(start * 16000):int(start * 16000) + 8000], atol=1e-4)
    assert content_hash(tagged) == content_hash(plain)
    retagged = tmp_path / f"retagged{ext}"
    retagged.write_bytes(plain.read_bytes() + _id3v1("Other", "Someone Else"))
    assert content_hash(retagged) == content_hash(tagged)


def test_a_flac_with_an_id3v1_tag_at_its_end_keeps_its_hash_when_the_tag_is_rewritten(tmp_path: Path) -> None:
    """FFmpeg's FLAC demuxer hands an ID3v1 tag after the audio on inside the last packet, so the audio's hash
    covered the tag: rewriting it (an old tagger's artist) made the file a new recording, embedded again."""
    import mutagen

    plain = tmp_path / "plain.flac"
    sf.write(plain, _sine(44100, 2.0, channels=2), 44100)
    tagged = mutagen.File(plain)
    tagged["artist"] = "Vorbis Artist"
    tagged.save()
    first, second = tmp_path / "first.flac", tmp_path / "second.flac"
    first.write_bytes(plain.read_bytes() + _id3v1("Title", "Tagger"))
    second.write_bytes(plain.read_bytes() + _id3v1("Other", "Someone Else"))
    assert content_hash(first) == content_hash(second) == content_hash(plain)
    assert read_tags(first)["artist"] == "Vorbis Artist"
    assert np.array_equal(load_audio(first, 16000), load_audio(plain, 16000))
    from mutagen.id3 import ID3, TPE1

    bare = tmp_path / "bare.flac"  # ID3 tags only, before and after: FFmpeg reads the ID3v2 one
    sf.write(bare, _sine(44100, 2.0), 44100)
    id3 = ID3()
    id3.add(TPE1(encoding=3, text="Id3 Artist"))
    id3.save(bare)
    both = tmp_path / "both.flac"
    both.write_bytes(bare.read_bytes() + _id3v1("Title", "Tagger"))
    assert read_tags(both)["artist"] == "Id3 Artist" and content_hash(both) == content_hash(bare)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32"])
def test_integer_pcm_has_one_scale_through_ffmpeg_and_libsndfile(tmp_path: Path, subtype: str) -> None:
    """FFmpeg's integer samples were divided by 32767 (2^31 - 1), libsndfile's by 32768 (2^31): the same WAV read
    by each (its header unfinished sends it to FFmpeg) differed by a gain of 1.00003 and full scale was -1.00003."""
    finished, unfinished = tmp_path / "finished.wav", tmp_path / "unfinished.wav"
    rng = np.random.default_rng(0)
    audio = np.concatenate([[-1.0, 1.0 - 2.0 ** -15], rng.uniform(-1, 1, 44100)]).astype(np.float32)
    sf.write(finished, audio, 44100, subtype=subtype)
    data = bytearray(finished.read_bytes())
    at = data.find(b"data")
    data[4:8] = data[at + 4 : at + 8] = bytes(4)
    unfinished.write_bytes(data)
    by_ffmpeg, by_libsndfile = load_audio(unfinished, 44100), load_audio(finished, 44100)
    assert by_libsndfile[0] == -1.0 and np.array_equal(by_ffmpeg, by_libsndfile)


@pytest.mark.parametrize("ext", [".ape", ".wv", ".mpc"])
def test_monkeys_audio_wavpack_and_musepack_after_an_id3v2_tag_decode(tmp_path: Path, ext: str) -> None:
    """An ID3v2 tag written before a Monkey's Audio, WavPack or Musepack file (their own decoders skip it) made the
    file unreadable ('cannot decode (invalid data ...)': FFmpeg's demuxers look for their header at byte 0), and a
    WavPack's or Musepack's hash was of its bytes. FFmpeg is given the bytes after the tag."""
    from mutagen.id3 import ID3, TPE1

    plain = _write_format(tmp_path, ext)
    tagged, retagged = tmp_path / f"tagged{ext}", tmp_path / f"retagged{ext}"
    for path, artist in ((tagged, "Id3 Artist"), (retagged, "Someone Else " * 40)):
        path.write_bytes(plain.read_bytes())
        id3 = ID3()
        id3.add(TPE1(encoding=3, text=artist))
        id3.save(path)
        assert path.read_bytes()[:3] == b"ID3"
    assert probe(tagged) == probe(plain)
    assert np.array_equal(load_audio(tagged, 16000), load_audio(plain, 16000))
    assert content_hash(tagged) == content_hash(retagged) == content_hash(plain)


@pytest.mark.parametrize("ext", [".mp3", ".tta"])
def test_apev2_tags_of_an_mp3_or_tta_file_are_read_with_every_value(tmp_path: Path, ext: str) -> None:
    """An MP3 tagged with APEv2 only (foobar2000 can write it so) had no tags at all (neither mutagen's MP3 nor
    FFmpeg reads APEv2 there), and a TTA file's APEv2 credits kept their first value (FFmpeg's reading)."""
    from mutagen.apev2 import APEv2

    path = tmp_path / f"tone{ext}"
    _encode_av(path, _sine(44100, 1.0), 44100, ext[1:])
    tags = APEv2()
    tags.update({"Artist": ["Alpha", "Beta"], "Genre": ["Rock", "Pop"], "Title": "Song", "Composer": "Clara"})
    tags.save(path)
    assert read_tags(path) == {"artist": "Alpha; Beta", "album": None, "title": "Song", "genre": "Rock; Pop",
                               "composer": "Clara"}


def test_a_vorbis_comment_cut_short_fails_its_file_in_ffmpegs_words(wesnoth_tracks: list[Path], tmp_path: Path) -> None:
    """A real track whose last Vorbis comment claims one byte more than it holds (it swallows the framing bit) made
    mutagen raise IndexError out of read_tags: the file failed as 'IndexError: bytearray index out of range', and a
    Ray run's catalogue task (which catches OSError only) raised it. Its tags are unread; the file fails as damaged,
    naming it."""
    import struct

    from mess.extract.prepare import decode_windows, inspect_file

    data = bytearray(wesnoth_tracks[0].read_bytes())
    at = data.index(b"\x03vorbis") + 7
    at += 4 + struct.unpack_from("<I", data, at)[0]  # past the vendor string
    count = struct.unpack_from("<I", data, at)[0]
    at += 4
    for _ in range(count - 1):
        at += 4 + struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at, struct.unpack_from("<I", data, at)[0] + 1)
    path = tmp_path / "damaged.ogg"
    path.write_bytes(bytes(data))
    record = inspect_file(path)
    assert record.tags == dict.fromkeys(record.tags)
    with pytest.raises(AudioError, match=r"damaged\.ogg: .*damaged, or not audio"):
        decode_windows(record, 16000, WindowPolicy())


def test_an_aiff_files_author_chunk_is_its_artist(tmp_path: Path) -> None:
    """AIFF's own text chunks (NAME, AUTH: the spec's title and author) were read for the title only: FFmpeg names
    AUTH 'author', and the artist stayed empty. The author is the artist where no artist tag is given."""
    import struct

    path = tmp_path / "take.aiff"
    sf.write(path, _sine(22050, 1.0), 22050, subtype="PCM_16", format="AIFF")
    data = bytearray(path.read_bytes())
    for chunk, text in ((b"NAME", b"Aiff Title"), (b"AUTH", b"Aiff Author")):
        data += chunk + struct.pack(">I", len(text)) + text + b"\0" * (len(text) % 2)
    data[4:8] = struct.pack(">I", len(data) - 8)
    path.write_bytes(bytes(data))
    tags = read_tags(path)
    assert (tags["artist"], tags["title"]) == ("Aiff Author", "Aiff Title")


def test_id3_tags_where_a_files_own_type_holds_none_are_read(tmp_path: Path) -> None:
    """A FLAC tagged with ID3v1 only (old rippers wrote it) and a WavPack file whose only tag is an ID3v2 one before
    it (decoded since FFmpeg is given the bytes after it) had no tags: mutagen's FLAC and WavPack types read Vorbis
    comments and APEv2, FFmpeg is not shown the tag. ID3 is read where the file's own type finds none."""
    from mutagen.id3 import ID3, TCON, TPE1

    flac = tmp_path / "old.flac"
    sf.write(flac, _sine(44100, 1.0), 44100)
    flac.write_bytes(flac.read_bytes() + _id3v1("Title", "Ripper Artist")[:-1] + bytes([17]))  # genre 17: Rock
    tags = read_tags(flac)
    assert (tags["artist"], tags["title"], tags["genre"]) == ("Ripper Artist", "Title", "Rock")
    wavpack = tmp_path / "tagged.wv"
    _encode_av(wavpack, _sine(44100, 1.0), 44100, "wavpack")  # FFmpeg's APEv2 tag names only its encoder
    id3 = ID3()
    id3.add(TPE1(encoding=3, text=["Alpha", "Beta"]))
    id3.add(TCON(encoding=3, text=["Ambient"]))
    id3.save(wavpack)
    tags = read_tags(wavpack)
    assert (tags["artist"], tags["genre"]) == ("Alpha; Beta", "Ambient")


def test_a_file_no_reader_opens_has_no_tags(tmp_path: Path) -> None:
    """Neither mutagen nor FFmpeg reads random bytes named .mp3, or an empty .flac: every field is None (the file
    then fails at its decoding, in FFmpeg's words), not a NameError of the tag reader."""
    garbage, empty = tmp_path / "not_audio.mp3", tmp_path / "empty.flac"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    empty.write_bytes(b"")
    for path in (garbage, empty):
        assert read_tags(path) == dict.fromkeys(("artist", "album", "title", "genre", "composer"))


def test_every_value_of_a_wma_files_attributes_is_read(tmp_path: Path) -> None:
    """WMA keeps its tags as ASF attributes, which mutagen's easy mode does not name: two Author attributes are two
    artists, as two Vorbis ARTIST comments are (FFmpeg, the fallback, keeps one)."""
    from mutagen.asf import ASF

    path = tmp_path / "song.wma"
    _encode_av(path, _sine(44100, 1.0), 44100, "wmav2", "asf")
    asf = ASF(path)
    asf["Author"], asf["WM/Genre"], asf["WM/AlbumTitle"] = ["Alpha", "Beta"], ["Ambient"], ["An Album"]
    asf.save()
    tags = read_tags(path)
    assert (tags["artist"], tags["genre"], tags["album"]) == ("Alpha; Beta", "Ambient", "An Album")


def test_content_hashes_are_blake2b_128_of_the_audio_packets_or_of_the_bytes(tmp_path: Path) -> None:
    """Every store's catalog keys its tracks by these hashes: a change of digest, domain or what is hashed would
    make every library re-extract. Pinned against hashlib over what Python's own wave module reads, and the bytes."""
    import hashlib
    import wave

    path = tmp_path / "pcm.wav"
    rng = np.random.default_rng(0)
    sf.write(path, rng.uniform(-0.5, 0.5, (4410, 2)), 22050, subtype="PCM_16")
    with wave.open(str(path)) as w:
        frames = w.readframes(w.getnframes())
    packets = hashlib.blake2b(b"mess-audio-packets-v1pcm_s16le:22050:2:" + frames, digest_size=16)
    assert content_hash(path) == packets.hexdigest()
    other = tmp_path / "notes.wav"  # no demuxer reads it: hashed by its bytes
    other.write_bytes(b"not audio at all" * 100)
    assert content_hash(other) == hashlib.blake2b(other.read_bytes(), digest_size=16).hexdigest()


def test_the_level_checks_read_every_sample_of_every_window() -> None:
    """A window's peak and a NaN count the samples at its very ends too (the 256 at each end where the resampler
    rings are left out of the constant-offset check only); the silence threshold counts the loudest sample."""
    from mess.extract.prepare import RINGING, FileRecord, _check_level

    record = FileRecord(Path("x.wav"), "", 0, 0.0, {}, {})
    rate = 16000
    music = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * rate) / rate)).astype(np.float32)
    for where in (0, RINGING - 1, music.size - 1, rate):
        for value in (2e3, -2e3, np.nan, np.inf):
            windows = np.stack([music, music])
            windows[1, where] = value
            with pytest.raises(AudioError, match="out of range"):
                _check_level(record, windows, rate)
    quiet = np.stack([music, music]) * 1e-6  # -130 dBFS but for one sample at -74 dBFS (above the -80 threshold)
    quiet[1, rate] = -2e-4
    _check_level(record, quiet, rate)
    quiet[1, rate] = 0.0
    with pytest.raises(AudioError, match="silent"):
        _check_level(record, quiet, rate)
    _check_level(record, np.stack([music, music]), rate)
