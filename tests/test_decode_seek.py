"""Decoding only the analysed windows: same samples as a whole-file decode, memory bound by the windows."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from test_audio import _dominant_hz, _encode_av, _sine

from mess.audio import decode
from mess.audio.decode import downmix, load_audio
from mess.audio.windows import WindowPolicy
from mess.extract.child import Child
from mess.extract.decode_worker import ask
from mess.extract.pipeline import DECODE_WORKER
from mess.extract.prepare import decode_windows, inspect_file

POLICY = WindowPolicy(window_seconds=10.0, max_windows=5)


def _music(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A note sequence (new pitch every 0.25 s) over soft noise: every window differs from the others."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    pitch = 220 * 2 ** (rng.integers(0, 24, size=int(seconds * 4) + 1)[(t * 4).astype(int)] / 12)
    return (0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / sr) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize(("in_rate", "sr"), [(44100, 16000), (22050, 16000), (16000, 16000)])
def test_a_cut_chunk_is_the_whole_resampled_signal_at_its_start(in_rate: int, sr: int) -> None:
    """A chunk decoded around a segment, resampled alone, gives the samples of the whole signal resampled at once
    (soxr's one-shot resampling, sliced at round(start * sr)); past the end of a file that ended, at most 10 ms of
    zeros; a chunk that starts after the segment, or lacks more of its end, is refused."""
    import soxr

    x = _music(in_rate, 20.0)
    whole = x if in_rate == sr else soxr.resample(x, in_rate, sr, quality="HQ")
    seconds = 3.0
    length = round(seconds * sr)
    for start in (0.0, 0.05, 4.3217, 11.0, 16.9999):
        first = max(0, int((start - 0.1) * in_rate))  # the 0.1 s margin before, as the decoders read
        chunk = x[first : int((start + seconds + 0.1) * in_rate) + 2]
        got = decode._cut(chunk, first, in_rate, False, start, length, sr)
        at = round(start * sr)
        np.testing.assert_allclose(got, whole[at : at + length], atol=1e-5, err_msg=f"{start}")
    start = 20.0 - seconds + 0.005  # 5 ms of the segment past the file's end: zeros, as a whole decode has none
    first = int((start - 0.1) * in_rate)
    got = decode._cut(x[first:], first, in_rate, True, start, length, sr)
    at = round(start * sr)
    kept = whole.size - at
    assert 0 < length - kept <= 0.01 * sr
    np.testing.assert_allclose(got[:kept], whole[at:], atol=1e-4)
    assert not got[kept:].any()
    with pytest.raises(decode.AudioError, match="past the end"):  # the file did not end: the chunk is short
        decode._cut(x[first:], first, in_rate, False, start, length, sr)
    with pytest.raises(decode.AudioError, match="past the end"):  # 20 ms missing at the file's end
        decode._cut(x[first:], first, in_rate, True, start + 0.02, length, sr)
    late = int(4.0 * in_rate)  # a chunk beginning 0.1 s after the segment's start
    with pytest.raises(decode.AudioError, match="past the end"):
        decode._cut(x[late : late + 5 * in_rate], late, in_rate, False, 3.9, length, sr)


@pytest.mark.parametrize("ext", ["wav", "mp3"])
def test_load_segments_reads_each_start_in_any_order_as_the_whole_decode(tmp_path: Path, ext: str) -> None:
    """Segments read by libsndfile's seeks, called directly (a failed seek is no fallback to a whole decode here),
    in any order: the whole decode's samples at each start, a stereo WAV downmixed; at a WAV's end, 4 ms of
    zeros past its last sample."""
    sr, seconds = 44100, 30.0
    path = tmp_path / f"song.{ext}"
    audio = _music(sr, seconds)
    if ext == "mp3":
        _encode_mp3(path, audio, sr, vbr=False)
    else:
        sf.write(path, np.stack([audio, _music(sr, seconds, seed=1)], axis=1), sr)
    whole = load_audio(path, 16000)
    starts = [21.5, 0.0, 9.25, 3.0] + ([seconds - 5.0 + 0.004] if ext == "wav" else [])
    got = decode.load_segments(path, 16000, starts, 5.0)
    assert got.shape == (len(starts), 5 * 16000)
    for start, segment in zip(starts, got, strict=True):
        at = round(start * 16000)
        kept = min(segment.size, whole.size - at)
        np.testing.assert_allclose(segment[:kept], whole[at : at + kept], atol=1e-5, err_msg=f"{start}")
        assert not segment[kept:].any() and segment.size - kept <= 64
    garbage = tmp_path / "not_audio.m4a"  # neither decoder opens it: the reason is FFmpeg's, no empty result
    garbage.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(decode.AudioError, match="not_audio.m4a: cannot seek"):
        decode.load_segments(garbage, 16000, starts, 5.0)


@pytest.mark.parametrize(("ext", "sr"), [("wav", 44100), ("flac", 22050), ("m4a", 44100), ("ogg", 48000)])
def test_seeked_windows_equal_whole_file_windows(tmp_path: Path, ext: str, sr: int) -> None:
    path = tmp_path / f"song.{ext}"
    audio = _music(sr, 47.3)
    if ext == "m4a":  # decoded by PyAV (seeking by packet timestamps)
        _encode_av(path, audio[:, None], sr, "aac")
    else:
        _write_blocks(path, audio, sr)
    _assert_seeked_equal_whole(path, POLICY, atol_starts=0.03 if ext == "m4a" else 0.0)


@pytest.mark.parametrize(("ext", "codec", "container"), [("mka", "flac", "matroska"), ("mka", "libopus", "matroska"),
                                                     ("wma", "wmav2", "asf"), ("wv", "wavpack", None),
                                                     ("tta", "tta", None), ("oga", "flac", "ogg")])
def test_windows_of_ffmpeg_only_formats_equal_whole_file_windows(tmp_path: Path, ext: str, codec: str,
                                                                 container: str | None) -> None:
    """Matroska and ASF stamp packets in milliseconds: a window placed by them was up to 22 samples (at 44.1 kHz)
    off, another 440 Hz than the whole decode's. Such a file is decoded whole instead; WavPack and TTA seek.
    FLAC in Ogg (.oga) seeks, though FFmpeg stamps the first page after a seek late: windows were up to 30 ms
    off (every sample another), anchored on those stamps."""
    sr = 48000 if codec == "libopus" else 44100
    path = tmp_path / f"song.{ext}"
    _encode_av(path, _music(sr, 47.3)[:, None], sr, codec, container)
    _assert_seeked_equal_whole(path, POLICY, atol_starts=0.0)


def test_seeking_in_a_real_vorbis_track(wesnoth_tracks: list[Path]) -> None:
    longest = max(wesnoth_tracks, key=lambda p: p.stat().st_size)
    _assert_seeked_equal_whole(longest, WindowPolicy(), atol_starts=0.0)


def test_ffmpeg_decodes_real_vorbis_tracks_as_libsndfile_does(wesnoth_tracks: list[Path]) -> None:
    """Ogg files decode through FFmpeg, then libsndfile if FFmpeg fails: both must give the same samples. Some
    of Wesnoth's Vorbis streams start with 128 priming samples stamped before time 0 (sad.ogg among these 8):
    FFmpeg's decode drops them, as libsndfile does."""
    for path in sorted(wesnoth_tracks, key=lambda p: p.stat().st_size)[:8]:
        reference, _ = sf.read(path, dtype="float32", always_2d=True)
        decoded = np.concatenate([downmix(block) for block, _ in decode._pyav_blocks(path)])
        assert decoded.size == sf.info(path).frames >= len(reference), path.name
        np.testing.assert_allclose(decoded[: len(reference)], downmix(reference), atol=1e-6, err_msg=path.name)


def test_an_ogg_file_damaged_midway_decodes_past_the_damage(wesnoth_tracks: list[Path], tmp_path: Path) -> None:
    """FFmpeg gives up at garbage in the middle of an Ogg stream; libsndfile reads past it, so the whole-file
    decode falls back to it instead of losing the file."""
    source = max(wesnoth_tracks, key=lambda p: p.stat().st_size)
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200_000] = np.random.default_rng(0).bytes(200_000)
    damaged = tmp_path / "damaged.ogg"
    damaged.write_bytes(bytes(data))
    stopped = 0  # samples FFmpeg decoded before it gave up
    with pytest.raises(decode.AudioError, match="cannot decode"):
        for block, _ in decode._pyav_blocks(damaged):
            stopped += len(block)
    seconds = load_audio(damaged, 22050).size / 22050
    reference, rate = sf.read(damaged, dtype="float32")
    assert stopped / rate + 60 < seconds < sf.info(damaged).duration  # past the damage, which is skipped
    assert abs(seconds - len(reference) / rate) < 1.0  # libsndfile itself skips a little more or less by read size


@pytest.mark.parametrize(("subtype", "channels", "sr"), [("VORBIS", 6, 44100), ("OPUS", 1, 48000), ("VORBIS", 1, 8000)])
def test_ogg_variants_decode_through_ffmpeg_as_libsndfile_does(tmp_path: Path, subtype: str, channels: int,
                                                               sr: int) -> None:
    """Every .ogg goes to FFmpeg first: 5.1 Vorbis, Opus in Ogg (its pre-skip dropped) and 8 kHz mono must give
    libsndfile's samples (to float rounding), and their seeked windows the whole decode's."""
    path = tmp_path / "variant.ogg"
    audio = np.tile(_music(sr, 47.3)[:, None], (1, channels))
    with sf.SoundFile(path, "w", samplerate=sr, channels=channels, format="OGG", subtype=subtype) as f:
        for i in range(0, len(audio), sr):
            f.write(audio[i : i + sr])
    reference, _ = sf.read(path, dtype="float32", always_2d=True)
    decoded = np.concatenate([downmix(block) for block, _ in decode._pyav_blocks(path)])
    assert decoded.size == len(reference)
    np.testing.assert_allclose(decoded, downmix(reference), atol=1e-6)
    via_ffmpeg = decode._resample_stream(decode._pyav_blocks(path), 16000, None)
    with sf.SoundFile(path) as f:
        via_libsndfile = decode._resample_stream(decode._soundfile_blocks(f), 16000, None)
    assert not np.array_equal(via_ffmpeg, via_libsndfile)  # the two decoders differ in float rounding ...
    np.testing.assert_array_equal(load_audio(path, 16000), via_ffmpeg)  # ... and load_audio took FFmpeg's
    _assert_seeked_equal_whole(path, POLICY, atol_starts=0.0)


@pytest.mark.parametrize(("sr", "frames"), [(44100, 44100), (22050, 3000)])
def test_a_short_vorbis_file_decodes_to_its_granule_length(tmp_path: Path, sr: int, frames: int) -> None:
    """FFmpeg's Ogg demuxer misplaces the end of some short Vorbis files (its timestamps run one first packet
    late): a 1 s 44.1 kHz tone lost its last 128 samples, 3000 samples at 22.05 kHz gained 456 of the decoder's
    tail. load_audio gives libvorbis's decode (libsndfile's), its length the last granule position's."""
    path = tmp_path / "short.ogg"
    sf.write(path, _sine(sr, frames / sr), sr, format="OGG", subtype="VORBIS")
    reference, _ = sf.read(path, dtype="float32")
    assert len(reference) == sf.info(path).frames == frames
    decoded = load_audio(path, sr)
    assert decoded.size == frames
    np.testing.assert_allclose(decoded, reference, atol=1e-6)
    assert load_audio(path, 16000).size == pytest.approx(frames * 16000 / sr, abs=1)
    assert load_audio(path, sr, max_seconds=0.05).size == int(0.05 * sr)


def test_a_vorbis_file_damaged_midway_ends_as_its_audio_ends(tmp_path: Path) -> None:
    """A damaged page mid-file is skipped by FFmpeg without a word, so its decode ends a page short of the last
    granule position: completed from libsndfile there, it would end with the page's length of the file's last
    samples twice. Only a decode whose end lines up with libsndfile's is completed."""
    sr = 44100
    plain, damaged = tmp_path / "plain.ogg", tmp_path / "damaged.ogg"
    with sf.SoundFile(plain, "w", samplerate=sr, channels=1, format="OGG", subtype="VORBIS") as f:
        for i in range(0, 20 * sr, sr):
            f.write(_music(sr, 20.0)[i : i + sr])
    data = bytearray(plain.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 50] = bytes(50)
    damaged.write_bytes(bytes(data))
    assert sf.info(damaged).frames == 20 * sr > len(sf.read(damaged)[0])  # libsndfile skips the page too
    decoded, whole = load_audio(damaged, sr), sf.read(plain, dtype="float32")[0]
    assert decoded.size < 20 * sr
    np.testing.assert_allclose(decoded[-sr:], whole[-sr:], atol=1e-5)  # the last second is the file's


def _write_blocks(path: Path, audio: np.ndarray, sr: int) -> None:
    """Write in 1 s blocks (libsndfile 1.2's Vorbis encoder crashes on one large write)."""
    with sf.SoundFile(path, "w", samplerate=sr, channels=1) as f:
        for i in range(0, audio.size, sr):
            f.write(audio[i : i + sr])


def _assert_seeked_equal_whole(path: Path, policy: WindowPolicy, atol_starts: float) -> None:
    windows = decode_windows(inspect_file(path), 16000, policy)
    whole = load_audio(path, 16000)
    starts, cut = policy.cut(whole, 16000)
    assert windows.audio.shape == cut.shape and cut.shape[0] > 1
    # the header's duration places the windows; AAC's header omits the encoder's 1024 priming samples
    np.testing.assert_allclose(windows.starts, starts, atol=atol_starts)
    expected = np.stack([whole[s : s + cut.shape[1]] for s in np.round(windows.starts * 16000).astype(int)])
    np.testing.assert_allclose(windows.audio, expected, atol=1e-5)


def test_a_channel_count_change_midstream_falls_back_to_the_whole_decode(tmp_path: Path) -> None:
    """Two ADTS AAC streams joined, mono then stereo (a concatenated download, say): FFmpeg's frames change channel
    count part-way. A window across the change fails with a reason (it used to be NumPy's shape error, which
    failed the file), and the file is then decoded whole, a block per layout, every sample kept."""
    sr = 44100
    mono, stereo, joined = tmp_path / "mono.aac", tmp_path / "stereo.aac", tmp_path / "joined.aac"
    _encode_av(mono, _music(sr, 20.0)[:, None], sr, "aac")
    _encode_av(stereo, np.repeat(_music(sr, 20.0, seed=1)[:, None], 2, axis=1), sr, "aac")
    joined.write_bytes(mono.read_bytes() + stereo.read_bytes())
    with pytest.raises(decode.AudioError, match="channel count changes"):
        decode.load_segments(joined, 16000, [15.0], 10.0)
    blocks = list(decode._pyav_blocks(joined))
    layouts = [block.shape[1] for block, _ in blocks]
    assert set(layouts) == {1, 2} and layouts == sorted(layouts)
    alone = sum(len(block) for p in (mono, stereo) for block, _ in decode._pyav_blocks(p))
    assert abs(sum(len(block) for block, _ in blocks) - alone) <= 1024  # the second stream's priming, at most
    windows = decode_windows(inspect_file(joined), 16000, POLICY)
    assert windows.audio.shape[0] > 1 and np.all(np.abs(windows.audio).max(axis=1) > 0.1)


def test_a_sample_rate_change_midstream_keeps_each_parts_pitch(tmp_path: Path) -> None:
    """A 44.1 kHz and a 48 kHz ADTS AAC stream joined: the second part used to go through the first part's
    resampler, 440 Hz coming out at 404 Hz and 20 s as 21.8. Each rate now gets its own resampler, at any
    target rate (one of them equal to a part's own)."""
    first, second, joined = tmp_path / "a.aac", tmp_path / "b.aac", tmp_path / "joined.aac"
    _encode_av(first, _sine(44100, 20.0), 44100, "aac")
    _encode_av(second, _sine(48000, 20.0), 48000, "aac")
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    assert {rate for _, rate in decode._pyav_blocks(joined)} == {44100, 48000}
    with pytest.raises(decode.AudioError, match="the audio format changes mid-stream"):  # a window across the
        decode.load_segments(joined, 16000, [15.0], 10.0)  # change: the file is then decoded whole
    for sr in (16000, 44100, 48000):
        audio = load_audio(joined, sr)
        assert audio.size / sr == pytest.approx(40.0, abs=0.1)
        for start in (2, 25):  # inside each part
            assert _dominant_hz(audio[start * sr : (start + 10) * sr], sr) == pytest.approx(440.0, abs=1.0)


def test_files_of_one_window_decode_exactly_as_before(tmp_path: Path) -> None:
    path = tmp_path / "short.ogg"
    _write_blocks(path, _music(44100, 9.0), 44100)
    windows = decode_windows(inspect_file(path), 16000, POLICY)
    whole = load_audio(path, 16000)
    assert windows.audio.shape == (1, whole.size)
    np.testing.assert_array_equal(windows.audio[0], whole)


@pytest.mark.parametrize(("seconds", "limit", "said"),
                         [(9.0, 6.0, "6 s"), (9.0, 7.5, "7.5 s"), (100.0, 90.0, "1.5 min")])
@pytest.mark.parametrize("window", [2.0, 30.0])  # by seeking to each window / decoded whole
def test_a_file_past_the_decoding_limit_is_warned_about_in_the_limits_own_unit(
        tmp_path: Path, seconds: float, limit: float, said: str, window: float) -> None:
    """A server's upload limit of seconds read 'longer than 0.0 h' (its 20 minutes '0.3 h')."""
    path = tmp_path / "long.flac"
    sf.write(path, _music(8000, seconds), 8000)
    windows = decode_windows(inspect_file(path), 16000, WindowPolicy(window, 4, max_decode_seconds=limit))
    assert windows.warnings == [f"{path}: longer than {said}, only the start is used"]
    assert max(windows.starts) + windows.audio.shape[1] / 16000 <= limit + 1e-6


def test_a_two_hour_file_costs_only_its_windows(tmp_path: Path) -> None:
    """Whole-file decoding of 2 h at 16 kHz needs 460 MB for the samples alone; seeking needs the windows."""
    path = tmp_path / "two_hours.flac"
    minute = _music(8000, 60.0)  # its length is the point, not how its minutes differ
    with sf.SoundFile(path, "w", samplerate=8000, channels=1, subtype="PCM_16") as f:
        for _ in range(120):
            f.write(minute)
    script = textwrap.dedent(f"""
        import json, time
        from pathlib import Path
        from mess.audio.windows import WindowPolicy
        from mess.extract.prepare import decode_windows, inspect_file
        hwm = lambda: int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
        before = hwm()  # this process's own peak (ru_maxrss would carry the forking parent's)
        start = time.perf_counter()
        w = decode_windows(inspect_file(Path({str(path)!r})), 16000, WindowPolicy(30.0, 16))
        print(json.dumps({{"shape": w.audio.shape, "starts": [float(s) for s in w.starts],
                          "rss_mb": hwm(), "rss_before_mb": before, "seconds": time.perf_counter() - start}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [16, 30 * 16000]
    assert result["starts"][0] == 0.0 and abs(result["starts"][-1] - (7200 - 30)) < 0.01
    assert result["rss_mb"] - result["rss_before_mb"] < 150 and result["rss_mb"] < 400, result


def test_a_float_wav_of_huge_samples_fails_cleanly_for_musicnn(tmp_path: Path) -> None:
    pytest.importorskip("musicnn.configuration")
    from mess.extract.embed import embed_windows
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model
    from mess.store import FeatureStore

    music = tmp_path / "music"
    music.mkdir()
    huge = 3e19 * _music(16000, 4.0)
    sf.write(music / "huge.wav", huge, 16000, subtype="FLOAT")
    sf.write(music / "fine.wav", _music(16000, 4.0, seed=1), 16000, subtype="FLOAT")
    model = load_model("musicnn-msd")
    summary = extract(FeatureStore(tmp_path / "store"), sorted(music.iterdir()), model, POLICY, batch_size=4)
    assert summary.done == 1 and len(summary.failed) == 1
    path, reason = summary.failed[0]
    assert path.endswith("huge.wav") and "huge.wav" in reason and "out of range" in reason
    with pytest.raises(ValueError, match="not finite"):  # the model's own guard, behind the decoder's
        embed_windows(model, [huge[None, : 3 * 16000]], batch_size=4)


def _clicks(sr: int, seconds: float) -> np.ndarray:
    """Soft tones broken by clicks at irregular times: the Vorbis encoder switches to short blocks at each."""
    rng = np.random.default_rng(3)
    audio = _music(sr, seconds, seed=3) * 0.3
    for at in np.cumsum(rng.uniform(0.05, 0.4, size=int(seconds * 6))):
        if at < seconds - 0.01:
            i = int(at * sr)
            audio[i : i + 64] += rng.uniform(-0.9, 0.9, size=64).astype(np.float32)
    return np.clip(audio, -1, 1)


def test_ffmpeg_seeks_in_vorbis_to_the_whole_decodes_samples(tmp_path: Path) -> None:
    """FFmpeg stamps a Vorbis frame at a long-to-short block switch 448 samples late; no seek may trust it
    (the first frame after a seek used to be the anchor: 4 of these 61 windows came out 10 ms early)."""
    path = tmp_path / "clicks.ogg"
    _write_blocks(path, _clicks(44100, 30.0), 44100)
    with sf.SoundFile(path) as f:  # libsndfile's whole decode: a reference that does not go through FFmpeg
        whole = decode._resample_stream(decode._soundfile_blocks(f), 22050, None)
    starts = np.round(np.linspace(0.0, 27.0, 61), 3)  # 0.45 s apart: many land just after a block switch
    windows = decode.load_segments(path, 22050, starts, 2.0)  # FFmpeg: Ogg goes there first
    expected = np.stack([whole[s : s + windows.shape[1]] for s in np.round(starts * 22050).astype(int)])
    np.testing.assert_allclose(windows, expected, atol=1e-5)


def _encode_mp3(path: Path, audio: np.ndarray, sr: int, vbr: bool, kbps: int = 128) -> None:
    """LAME through FFmpeg, in 1152-sample frames: CBR of ``kbps`` kb/s, or VBR of quality 2 (``-q:a 2``)."""
    options = {"flags": "+qscale", "global_quality": str(2 * 118)} if vbr else {"b": f"{kbps}k"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=sr, layout="mono", options=options)
        samples = (audio[None] * 32767).astype(np.int16)
        for i in range(0, audio.size, 1152):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i : i + 1152]), format="s16p",
                                               layout="mono")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _without_xing_frame(data: bytes) -> bytes:
    """An MP3's bytes without its first frame, the Xing (VBR) or Info (CBR) header LAME writes (as older encoders
    made them)."""
    start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10])) if data[:3] == b"ID3" else 0
    header = data[start : start + 4]
    kbps = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320][header[2] >> 4]
    size = 144 * kbps * 1000 // [44100, 48000, 32000][(header[2] >> 2) & 3] + ((header[2] >> 1) & 1)
    assert header[0] == 0xFF and max(data.find(tag, start, start + size) for tag in (b"Xing", b"Info")) > 0
    return data[:start] + data[start + size :]


@pytest.mark.parametrize("kind", ["vbr without xing", "joined"])
def test_an_mp3_is_read_to_its_end_whatever_its_header_says(tmp_path: Path, kind: str) -> None:
    """libsndfile stops an MP3 at the length of its Xing header, or of a guess from the first frames' bit rate
    where it has none. A VBR file without the header (a quiet intro) lost its last 13 s, and of two MP3s joined
    end to end only the first was read, without a word. Such files go to FFmpeg, which passes over the second
    file's ID3 tag mid-stream (its decoder refused it as a packet): windows over all the audio."""
    sr = 44100
    path = tmp_path / "song.mp3"
    if kind == "joined":
        _encode_mp3(tmp_path / "a.mp3", _music(sr, 20.0), sr, vbr=False)
        _encode_mp3(tmp_path / "b.mp3", _music(sr, 27.3, seed=1), sr, vbr=False)
        path.write_bytes((tmp_path / "a.mp3").read_bytes() + (tmp_path / "b.mp3").read_bytes())
    else:
        audio = _music(sr, 47.3)
        audio[: 5 * sr] *= 0.001
        _encode_mp3(tmp_path / "xing.mp3", audio, sr, vbr=True)
        path.write_bytes(_without_xing_frame((tmp_path / "xing.mp3").read_bytes()))
    assert sf.info(path).duration < 40.0  # libsndfile's own length: the fault
    record = inspect_file(path)
    assert record.info["duration"] == pytest.approx(47.3, abs=0.2)  # each part: encoder delay and padding
    assert load_audio(path, 16000).size / 16000 == pytest.approx(47.3, abs=0.2)
    windows = decode_windows(record, 16000, POLICY)
    assert windows.starts[-1] == pytest.approx(37.3, abs=0.2)
    _assert_seeked_equal_whole(path, POLICY, atol_starts=0.0)


def test_a_cbr_mp3_without_an_info_header_is_read_by_its_windows(tmp_path: Path) -> None:
    """libsndfile guesses the length of a CBR MP3 without LAME's Info header from its bit rate, 0.11 s of 47.3 too
    long: the last window ran past the audio, and the file was decoded whole (a whole decode's memory on a long
    file). Its packets' length, the whole decode's, places the windows; libsndfile's seeks by the constant bit rate
    land on the whole decode's samples."""
    sr = 44100
    _encode_mp3(tmp_path / "info.mp3", _music(sr, 47.3), sr, vbr=False)
    path = tmp_path / "song.mp3"
    path.write_bytes(_without_xing_frame((tmp_path / "info.mp3").read_bytes()))
    assert sf.info(path).duration > 47.4  # libsndfile's guess: the fault
    duration = inspect_file(path).info["duration"]
    assert duration == pytest.approx(load_audio(path, 16000).size / 16000, abs=1e-3) and isinstance(duration, float)
    assert decode.load_segments(path, 16000, [duration - 10.0], 10.0).shape == (1, 160000)  # the last window
    _assert_seeked_equal_whole(path, POLICY, atol_starts=0.0)


def test_windows_of_a_low_rate_mp3_are_its_audio_from_their_first_sample(tmp_path: Path) -> None:
    """libsndfile (mpg123) decodes up to 0.2 s wrongly after a seek in an 8 kHz mono MP3 of 8 kb/s (LAME's
    default) once it has read elsewhere: every window after the second began with up to 0.34 of noise, past
    the 0.1 s margin cut away. MP3 windows are read from half a second before, as FFmpeg's are."""
    path = tmp_path / "speech.mp3"
    _encode_mp3(path, _music(8000, 50.0), 8000, vbr=False, kbps=8)
    _assert_seeked_equal_whole(path, POLICY, atol_starts=0.0)


def test_windows_spread_over_all_of_an_adts_aac_file(tmp_path: Path) -> None:
    """FFmpeg guesses the length of ADTS AAC (.aac) from its first frames' bit rate: 37 s for 47 s of VBR AAC with
    a loud intro, and the windows covered its first 37 s only, without a word. Its packets are counted instead."""
    sr = 44100
    audio = _music(sr, 47.3)
    audio[10 * sr :] *= 0.001  # quiet after a loud intro
    path = tmp_path / "song.aac"
    with av.open(str(path), "w", format="adts") as container:
        stream = container.add_stream("aac", rate=sr, layout="mono",
                                      options={"flags": "+qscale", "global_quality": str(2 * 118)})
        frame = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    record = inspect_file(path)
    assert record.info["duration"] == pytest.approx(47.3, abs=0.1)
    windows = decode_windows(record, 16000, POLICY)
    assert windows.starts[-1] == pytest.approx(37.3, abs=0.1)


def test_a_chained_ogg_file_of_two_rates_is_decoded_to_its_end(tmp_path: Path) -> None:
    """Two Ogg Vorbis streams one after another, 44.1 kHz stereo then 22.05 kHz mono (a radio capture, `cat`):
    FFmpeg gives up at the second ('not yet implemented in FFmpeg, patches welcome') and libsndfile reads the
    first only, so 20 s of 47 were analysed, without a word. Each stream is decoded by FFmpeg on its own."""
    first, second, joined = tmp_path / "a.ogg", tmp_path / "b.ogg", tmp_path / "joined.ogg"
    with sf.SoundFile(first, "w", samplerate=44100, channels=2) as f:
        music = np.repeat(_music(44100, 20.0)[:, None], 2, axis=1)
        for i in range(0, len(music), 44100):
            f.write(music[i : i + 44100])
    _write_blocks(second, _sine(22050, 27.3, freq=660.0)[:, 0], 22050)
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    audio = load_audio(joined, 16000)
    assert audio.size / 16000 == pytest.approx(47.3, abs=0.05)
    assert _dominant_hz(audio[30 * 16000 : 40 * 16000], 16000) == pytest.approx(660.0, abs=1.0)
    windows = decode_windows(inspect_file(joined), 16000, POLICY)
    assert windows.duration == pytest.approx(47.3, abs=0.05) and windows.starts[-1] == pytest.approx(37.3, abs=0.05)


def test_a_7_1_vorbis_file_is_decoded_not_crashed_on(tmp_path: Path) -> None:
    """PyAV counts a frame's planes up to a null pointer, which FFmpeg does not put after 8 planar channels: its
    arrays of a 7.1 Vorbis file's frames read a ninth plane from whatever followed, and the decoding process died
    (SIGSEGV; the file failed). Its seeked windows and its whole decode (one window longer than the file) are the
    mean of its 8 channels as libsndfile decodes them, resampled at once."""
    import soxr

    sr = 44100
    audio = np.stack([_music(sr, 47.3, seed=c) for c in range(8)], axis=1) / 4
    path = tmp_path / "surround.ogg"
    with sf.SoundFile(path, "w", samplerate=sr, channels=8) as f:
        for i in range(0, len(audio), sr):  # libsndfile 1.2's Vorbis encoder crashes on one large write
            f.write(audio[i : i + sr])
    reference, _ = sf.read(path, dtype="float32", always_2d=True)
    whole = soxr.resample(reference.mean(axis=1, dtype=np.float32), sr, 16000, quality="HQ")
    child = Child(DECODE_WORKER)
    try:
        record = ask(child, path, ("inspect", path, None), 60.0)
        for policy in (POLICY, WindowPolicy(window_seconds=60.0)):
            windows = ask(child, path, ("decode", record, 16000, policy, 0.0), 60.0)
            assert windows.audio.shape[0] == (5 if policy is POLICY else 1)
            for start, window in zip(windows.starts, windows.audio, strict=True):
                at = round(start * 16000)
                np.testing.assert_allclose(window, whole[at : at + window.size], atol=1e-5)
    finally:
        child.stop()


@pytest.mark.parametrize(("ext", "channels"), [("ogg", 2), ("ogg", 3), ("wv", 2)])
def test_ffmpegs_windows_of_several_channels_are_their_mean(tmp_path: Path, ext: str, channels: int) -> None:
    """FFmpeg's seeked windows (one at the start, one ending 5 ms before the file's end) of a stereo or 3-channel
    file are the mean of its channels, resampled: as libsndfile decodes the Vorbis file, and as the 16-bit samples
    the lossless WavPack file was written from (integer planes, scaled by 2^15)."""
    import soxr

    sr, seconds = 44100, 47.3
    audio = np.stack([_music(sr, seconds, seed=c) for c in range(channels)], axis=1) / 2
    path = tmp_path / f"song.{ext}"
    if ext == "wv":
        _encode_av(path, audio, sr, "wavpack", sample_format="s16p")
        reference = (audio * 32767).astype(np.int16).astype(np.float32) / 32768
    else:
        with sf.SoundFile(path, "w", samplerate=sr, channels=channels) as f:
            for i in range(0, len(audio), sr):
                f.write(audio[i : i + sr])
        reference, _ = sf.read(path, dtype="float32", always_2d=True)
    whole = soxr.resample(reference.mean(axis=1, dtype=np.float32), sr, 16000, quality="HQ")
    starts = [0.0, 3.3, 17.25, seconds - 10.005]
    windows = decode.load_segments(path, 16000, starts, 10.0)
    for start, window in zip(starts, windows, strict=True):
        at = round(start * 16000)
        np.testing.assert_allclose(window, whole[at : at + window.size], atol=1e-5, err_msg=f"{start}")
