"""Decode any supported audio file to mono float32 at a target rate, streaming."""

from __future__ import annotations

import codecs
import io
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
import soundfile as sf
import soxr
from av.audio.frame import format_dtypes
from av.audio.plane import AudioPlane

from mess.constants import audio_suffix  # with AUDIO_EXTENSIONS, what is decoded

_BLOCK_FRAMES = 1 << 16
_MARGIN_SECONDS = 0.1  # decoded around each segment so the resampler's edges fall outside it
_END_TOLERANCE = 0.01  # seconds a segment ending at the file's end may lack (rounding of the header's duration)
_PREROLL_SECONDS = 0.5  # decoded before a compressed segment: seeks land on packets, decoders need warm-up
_UNKNOWN_FRAMES = (1 << 63) - 1  # libsndfile's count of a file whose header gives none (SF_COUNT_MAX)
_MPEG = frozenset({"MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"})  # libsndfile's MP3s, in .mp3 files or WAV
_GUESSED_LENGTH = frozenset({"mp3", "aac"})  # FFmpeg's length of an MP3 without a Xing header, or of ADTS AAC, is a
# guess from the first frames' bit rate (37 s for 47 s of VBR AAC with a loud intro): their packets are counted instead
_MP3_SLACK = 4096  # samples an MP3's packets may outlast libsndfile's gapless count: encoder delay and padding
_FFMPEG_FIRST = frozenset({".ogg", ".oga"})  # Vorbis: FFmpeg's decoder costs 3/4 of libvorbis's CPU (libsndfile's)
# FFmpeg's WavPack and Musepack demuxers fail on an ID3v1 tag after the audio, its FLAC demuxer hands it on inside
# the last packet (so rewriting the tag changed the file's content hash)
_ID3V1_UNREAD = frozenset({".wv", ".mpc", ".flac"})
# its Monkey's Audio, WavPack and Musepack demuxers do not open a file that starts with an ID3v2 tag (their own
# decoders skip it)
_ID3V2_UNREAD = frozenset({".ape", ".wv", ".mpc"})


_T = TypeVar("_T")


class AudioError(Exception):
    """A file that cannot be turned into usable audio; the message says why."""


@dataclass(frozen=True)
class AudioInfo:
    """Container-level facts about a file, read without decoding it."""

    duration: float
    sample_rate: int
    channels: int


def _windows_1252(error: UnicodeError) -> tuple[str, int]:
    """Tag bytes that are not UTF-8 read as Windows-1252 (Latin-1 for its 5 unused bytes): the code page RIFF INFO
    lists and ID3v1 tags are mostly written in. PyAV's strict default ended the file's opening."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    raw = error.object[error.start:error.end]
    return "".join(bytes([b]).decode("cp1252", "ignore") or chr(b) for b in raw), error.end


LEGACY_TAGS = "mess-windows-1252"  # the codec error handler of tags that are not UTF-8
codecs.register_error(LEGACY_TAGS, _windows_1252)


@contextmanager
def native_output_quiet() -> Iterator[None]:
    """Send what C libraries print to stderr inside the block to /dev/null: libmpg123 writes 'Note: Illegal
    Audio-MPEG-Header ...' for each damaged frame of an MP3, and 'Warning: Xing stream size off ...' for MP3s joined
    end to end. For a process that decodes in one thread (a command, a worker): Python's own writes go there too."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to quiet
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextmanager
def open_container(path: Path) -> Iterator[av.container.InputContainer]:
    """PyAV's container for ``path``; a name that is not valid UTF-8 is opened through a Python file, and tags that
    are not UTF-8 are read as Windows-1252. A file with a tag where FFmpeg's demuxer takes it for audio (an ID3v2 tag
    at the start of :data:`_ID3V2_UNREAD`'s, an ID3v1 tag at the end of :data:`_ID3V1_UNREAD`'s) is given to FFmpeg
    without its tags. A file FFmpeg cannot open that holds tags and nothing else is an AudioError saying so."""
    name, suffix = str(path), audio_suffix(path.name)
    start, end, id3v1 = tag_bounds(path) if suffix in _ID3V1_UNREAD | _ID3V2_UNREAD else (0, 0, False)
    span = start and suffix in _ID3V2_UNREAD or id3v1 and suffix in _ID3V1_UNREAD
    with ExitStack() as stack:
        source: str | io.RawIOBase | io.BufferedReader = name
        if span or name.encode("utf-8", "surrogatepass").decode("utf-8", "ignore") != name:
            raw = stack.enter_context(path.open("rb"))  # a FLAC's ID3v2 tag is FFmpeg's to read (tags mutagen
            source = _Span(raw, start if suffix in _ID3V2_UNREAD else 0, end) if span else raw  # does not read there)
        try:
            container = stack.enter_context(av.open(source, "r", metadata_errors=LEGACY_TAGS))
        except av.FFmpegError:
            if _only_tags(path):
                raise AudioError(f"{path}: no audio in it, only tags") from None
            raise
        yield container


def _only_tags(path: Path) -> bool:
    """Whether ``path`` holds tags (ID3v2, APEv2, ID3v1: :func:`tag_bounds`) and nothing else, not even audio."""
    try:
        start, end, _ = tag_bounds(path)
        return start == end and path.stat().st_size > 0
    except OSError:
        return False


def tag_bounds(path: Path) -> tuple[int, int, bool]:
    """(where the bytes of ``path`` begin after an ID3v2 tag at its start, where they end before an APEv2 and an
    ID3v1 tag at its end, whether it has the ID3v1 tag)."""
    with path.open("rb") as f:
        start = 0
        if (head := f.read(10))[:3] == b"ID3" and len(head) == 10:
            start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10])) + (
                10 if head[5] & 0x10 else 0)  # ID3v2.4's footer
        end = f.seek(0, os.SEEK_END)
        id3v1 = end - 128 >= start and f.seek(end - 128) >= 0 and f.read(3) == b"TAG"
        end -= 128 if id3v1 else 0
        if end - 32 >= start and f.seek(end - 32) >= 0 and (footer := f.read(32))[:8] == b"APETAGEX":
            size, flags = int.from_bytes(footer[12:16], "little"), int.from_bytes(footer[20:24], "little")
            end -= size + (32 if flags & (1 << 31) else 0)
    return start, max(start, end), id3v1


class _Span(io.RawIOBase):
    """A file read as if it held only its bytes from ``start`` up to ``end``."""

    def __init__(self, raw: io.BufferedReader, start: int, end: int) -> None:
        self._raw, self._start, self._end = raw, start, end
        raw.seek(start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(max(0, min(len(buffer), self._end - self._raw.tell())))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: self._start, os.SEEK_CUR: self._raw.tell(), os.SEEK_END: self._end}[whence]
        return self._raw.seek(max(self._start, base + offset)) - self._start

    def tell(self) -> int:
        return self._raw.tell() - self._start


def probe(path: str | Path) -> AudioInfo:
    """Read duration, native rate and channel count from the file header."""
    path = Path(path)
    try:
        info = sf.info(os.fsencode(path))
        if info.frames == _UNKNOWN_FRAMES or info.format == "OGG" and len(_ogg_links(path)) > 1:
            return AudioInfo(0.0, info.samplerate, info.channels)  # no length (a FLAC written to a pipe), or the
            # first stream's of a chained Ogg file: decoded whole
        if _reads_whole(path, info.frames, info.samplerate, info.subtype):
            seconds = info.frames / info.samplerate
            if info.subtype in _MPEG and (packets := _mpeg_packet_seconds(path)):  # libsndfile's guess of a CBR
                seconds = min(seconds, packets)  # MP3's length without a Xing/Info header overshoots its audio
            return AudioInfo(seconds, info.samplerate, info.channels)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    try:
        with open_container(path) as container:
            stream = _audio_stream(container, path)
            if container.format.name in _GUESSED_LENGTH:
                duration = _packet_seconds(container, stream)
            else:
                duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else (
                    container.duration / av.time_base if container.duration else 0.0)
            return AudioInfo(duration, stream.codec_context.sample_rate, stream.codec_context.channels)
    except av.FFmpegError as exc:
        raise AudioError(f"{path}: not a readable audio file ({_ffmpeg_reason(exc)})") from exc


def load_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``.

    Channels are averaged (mono, stereo and 5.1 alike); resampling is soxr's
    streaming high-quality mode, so memory is bounded by the output length.
    Decoding stops after ``max_seconds`` of output when given. An Ogg file that FFmpeg
    gives up on part-way (damaged pages) is decoded again by libsndfile, which reads past them;
    a chained Ogg file whose streams differ in rate or channels (FFmpeg: 'not yet implemented'),
    by FFmpeg one stream at a time (libsndfile reads only the first).
    """
    path = Path(path)
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    out = _decode_whole(path, lambda blocks: _resample_stream(blocks, sample_rate, limit))
    if out.size == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if not np.all(np.isfinite(out)):
        raise AudioError(f"{path}: decoded samples contain NaN or infinity")
    return out


def reduce_audio(path: str | Path, sample_rate: int, consume: Callable[[Iterator[np.ndarray]], _T]) -> _T:
    """``consume`` of the mono float32 chunks at ``sample_rate`` that make up :func:`load_audio` of ``path``, without
    holding them: memory is what ``consume`` keeps (a level per second, say), not the file's length. When the first
    decoder gives up part-way, ``consume`` is called again on the other's chunks from the start (as
    :func:`load_audio` decodes again). AudioError, as :func:`load_audio`'s, for a file with no samples or with NaN."""
    path = Path(path)
    seen = [0, True]  # samples and whether all were finite, of the last decoder's chunks

    def watched(blocks: Iterable[tuple[np.ndarray, int]]) -> _T:
        seen[:] = [0, True]

        def chunks() -> Iterator[np.ndarray]:
            for chunk in _resampled(blocks, sample_rate):
                seen[0] += chunk.size
                seen[1] = seen[1] and bool(np.isfinite(chunk).all())
                yield chunk

        return consume(chunks())

    result = _decode_whole(path, watched)
    if not seen[0]:
        raise AudioError(f"{path}: contains no audio samples")
    if not seen[1]:
        raise AudioError(f"{path}: decoded samples contain NaN or infinity")
    return result


def _decode_whole(path: Path, consume: Callable[[Iterator[tuple[np.ndarray, int]]], _T]) -> _T:
    """``consume`` of the whole file's decoded blocks (see :func:`load_audio` for the decoders tried), a libsndfile
    failure as AudioError."""
    ffmpeg_first = audio_suffix(path.name) in _FFMPEG_FIRST
    try:
        return _consumed(path, consume, _decoded_blocks(path, ffmpeg_first))
    except AudioError:
        if len(links := _ogg_links(path)) > 1:
            return _consumed(path, consume, chain.from_iterable(_pyav_blocks(path, link) for link in links))
        if not ffmpeg_first or (f := _open_soundfile(path)) is None:
            raise
        return _consumed(path, consume, _soundfile_blocks(f))


def _consumed(path: Path, consume: Callable[[Iterator[tuple[np.ndarray, int]]], _T],
              blocks: Iterator[tuple[np.ndarray, int]]) -> _T:
    """``consume(blocks)``, a libsndfile failure as AudioError."""
    try:
        return consume(blocks)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: decoding failed part-way ({exc})") from exc


def downmix(block: np.ndarray) -> np.ndarray:
    """Mono float32 of [frames, channels]: ``block.mean(axis=1, dtype=float32)`` to the bit, 10-20x faster.

    numpy sums fewer than 8 values in order, so adding whole channels in order gives its sums; its
    per-row reduction over a 2-wide axis cost as much CPU as decoding a FLAC file.
    """
    channels = block.shape[1]
    if channels >= 8:  # numpy sums 8 or more values pairwise
        return np.ascontiguousarray(block.mean(axis=1, dtype=np.float32))
    mono = block[:, 0].astype(np.float32)
    for c in range(1, channels):
        np.add(mono, block[:, c], out=mono, dtype=np.float32)  # each value cast first, as numpy's float32 mean
    return mono / np.float32(channels) if channels > 1 else mono


def load_segments(path: str | Path, sample_rate: int, starts: Sequence[float] | np.ndarray,
                  seconds: float) -> np.ndarray:
    """Decode only ``seconds`` of mono audio at each start (in seconds), seeking in the file.

    Returns [len(starts), round(seconds * sample_rate)] float32 at ``sample_rate``. Each
    segment is decoded with a small margin and resampled alone, so its samples match
    :func:`load_audio` of the whole file up to the resampler's round-off; time and memory
    depend on the audio analysed, not on the file's length. Raises :class:`AudioError`
    when a segment cannot be read in full (for example, a header that overstates the
    duration); callers then decode the whole file instead.

    Examples:
        >>> windows = load_segments(Path("song.flac"), 16000, [0.0, 60.0], 30.0)  # doctest: +SKIP
    """
    path = Path(path)
    length = int(round(seconds * sample_rate))
    ffmpeg_error: AudioError | None = None
    if audio_suffix(path.name) in _FFMPEG_FIRST:
        try:
            return _pyav_segments(path, sample_rate, starts, seconds)
        except AudioError as exc:
            ffmpeg_error = exc  # libsndfile's turn
    try:
        if (f := _open_soundfile(path)) is not None:
            with f:
                return np.stack([_cut(*_soundfile_segment(f, start, seconds), start, length, sample_rate)
                                 for start in starts])
    except (sf.LibsndfileError, RuntimeError):
        pass
    if ffmpeg_error is not None:  # FFmpeg has had its turn: its reason stands
        raise ffmpeg_error
    return _pyav_segments(path, sample_rate, starts, seconds)


def _pyav_segments(path: Path, sample_rate: int, starts: Sequence[float] | np.ndarray, seconds: float) -> np.ndarray:
    """:func:`load_segments` through FFmpeg."""
    length = int(round(seconds * sample_rate))
    try:
        with open_container(path) as container:
            stream = _audio_stream(container, path)
            return np.stack([_cut(*_pyav_segment(container, stream, path, start, seconds), start, length, sample_rate)
                             for start in starts])
    except av.FFmpegError as exc:
        raise AudioError(f"{path}: cannot seek ({_ffmpeg_reason(exc)})") from exc


def _soundfile_segment(f: sf.SoundFile, start: float, seconds: float) -> tuple[np.ndarray, int, int, bool]:
    """Mono input-rate samples covering [start - margin, start + seconds + margin].

    Returns (samples, index of the first one, input rate, whether the file ended first).
    """
    rate = f.samplerate
    lead = _PREROLL_SECONDS if f.subtype in _MPEG else _MARGIN_SECONDS  # mpg123 decodes 0.2 s wrong after some seeks
    first = max(0, int((start - lead) * rate))
    f.seek(first)
    wanted = int((seconds + lead + _MARGIN_SECONDS) * rate) + 2
    block = f.read(wanted, dtype="float32", always_2d=True)
    return downmix(block), first, rate, len(block) < wanted


def _pyav_segment(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, path: Path,
                  start: float, seconds: float) -> tuple[np.ndarray, int, int, bool]:
    """Like :func:`_soundfile_segment` for compressed files: seek before the start, decode past the end.

    Positions come from the first frame whose timestamp plus length meets the next frame's timestamp
    (within one tick of the time base), counted back over the frames decoded before it. FFmpeg's Ogg
    demuxer stamps each 576-sample Vorbis frame at a long-to-short block switch 448 samples late, so
    the first frame after a seek is not a safe anchor; the decoded samples themselves are continuous.
    A frame stamped before where the anchor puts it means the anchor's stamps were late, and anchors
    again: FFmpeg stamps the FLAC frames of the first Ogg page after a seek as if the page began later.
    """
    base = stream.time_base
    if base is None:
        raise AudioError(f"{path}: the audio stream has no time base, cannot seek")
    container.seek(int(max(0.0, start - _PREROLL_SECONDS) / base), stream=stream, backward=True)
    num, den = base.numerator, base.denominator  # float(pts * base) is pts * num / den to the bit, 10x cheaper
    fifo = av.AudioFifo()  # frames joined in C, drained into ``parts`` (mono) in cache-sized blocks
    parts: list[np.ndarray] = []
    channels, rate, ended, end = 1, 0, True, 0.0
    first: int | None = None  # position of the first decoded sample, once anchored
    last_end: int | None = None  # before anchoring: where the previous frame's timestamp says it ends
    decoded = frames = 0  # samples and frames decoded so far
    for frame in _frames(container, stream):
        frames += 1
        if frame.pts is None:
            raise AudioError(f"{path}: frames carry no timestamps, cannot seek")
        if not decoded:
            rate, channels = frame.sample_rate, frame.layout.nb_channels
            if base * rate > 1:  # Matroska's and ASF's milliseconds: a position could be off by half of one
                raise AudioError(f"{path}: timestamps in steps of {base} s, coarser than a sample: cannot seek "
                                 "exactly")
            end = start + seconds + _MARGIN_SECONDS
        elif frame.layout.nb_channels != channels:  # the FIFO checks format and rate, not channels
            raise AudioError(f"{path}: the channel count changes mid-stream, cannot seek")
        position = round(frame.pts * num / den * rate)  # an int's true division is rounded once, as a Fraction's
        if first is not None and position < first + decoded - 1:
            first = None  # anchored on late stamps
        if first is None:
            if last_end is not None and abs(last_end - position) <= 1:
                first = position - decoded
            else:
                last_end = position + frame.samples
        decoded += _write(fifo, frame, path)
        if fifo.samples >= _BLOCK_FRAMES:
            parts += _drained_mono(fifo)
        if first is not None and (first + decoded) / rate >= end:
            ended = False
            break
    if first is None and frames == 1 and last_end is not None:  # one frame only: trust its timestamp
        first = last_end - decoded
    parts += _drained_mono(fifo)
    if first is None or not parts or first / rate > max(0.0, start - _MARGIN_SECONDS) + 1e-3:
        raise AudioError(f"{path}: seeking to {start:.1f} s failed")
    mono = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return (mono[-first:], 0, rate, ended) if first < 0 else (mono, first, rate, ended)  # priming before 0: dropped


def _frames(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> Iterator[av.AudioFrame]:
    """``container.decode(stream)``, passing over a packet that the decoder refuses where players do: an MP3's (MP3s
    joined end to end hold the second one's ID3 tag mid-stream, which FFmpeg's demuxer hands on as a packet), and
    the last one (a file cut short inside it: a copy or download broken off), except a FLAC's: a FLAC cut short
    fails wherever the cut falls, as libsndfile's 'lost sync' fails it (its frames carry checksums to be whole)."""
    mp3 = stream.codec_context.name in ("mp3", "mp3float")
    cut_ok = stream.codec_context.name != "flac"
    held: av.Packet | None = None
    for packet in chain(container.demux(stream), [None]):
        if held is not None:
            try:
                frames = stream.decode(held)
            except av.error.InvalidDataError:
                if not (mp3 or cut_ok and (packet is None or not packet.size)):  # the demuxer ends with an empty one
                    raise
                frames = []
            yield from frames
        held = packet


def _write(fifo: av.AudioFifo, frame: av.AudioFrame, path: Path) -> int:
    """Append ``frame`` to ``fifo``; its sample count.

    The FIFO would check timestamps for continuity, and FFmpeg's Ogg stamps are not (see
    :func:`_pyav_segment`): positions are counted from samples instead.
    """
    frame.pts = None
    try:
        fifo.write(frame)
    except ValueError as exc:  # another sample format or rate than the frames before
        raise AudioError(f"{path}: the audio format changes mid-stream") from exc
    return frame.samples


def _cut(chunk: np.ndarray, first: int, in_rate: int, ended: bool, start: float, length: int,
         sample_rate: int) -> np.ndarray:
    """Resample a decoded chunk (input sample ``first`` onwards) and cut ``length`` samples at ``start`` seconds.

    The chunk is first trimmed to begin on an input sample that falls on the output grid, so
    its samples line up with those of a whole-file decode. A segment that reaches the file's
    end may lack a few samples of rounding (at most :data:`_END_TOLERANCE`); they are zero,
    as past the end of a whole-file decode.
    """
    step = in_rate // math.gcd(in_rate, sample_rate)  # input samples per common grid point
    skip = -first % step
    audio = chunk[skip:] if in_rate == sample_rate else soxr.resample(chunk[skip:], in_rate, sample_rate, quality="HQ")
    offset = int(round(start * sample_rate)) - (first + skip) * sample_rate // in_rate
    segment = audio[offset : offset + length]
    missing = length - segment.size
    if offset < 0 or missing > (_END_TOLERANCE * sample_rate if ended else 0):
        raise AudioError(f"segment at {start:.1f} s is past the end of the decoded audio")
    return np.pad(segment, (0, missing)) if missing else segment


def _resample_stream(blocks: Iterable[tuple[np.ndarray, int]], sample_rate: int, limit: int | None) -> np.ndarray:
    """Downmix and resample a stream of (frames x channels, rate) blocks (up to ``limit`` samples)."""
    parts: list[np.ndarray] = []
    total = 0
    for part in _resampled(blocks, sample_rate):
        parts.append(part)
        total += part.size
        if limit is not None and total >= limit:
            break
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return audio[:limit] if limit is not None else audio


def _resampled(blocks: Iterable[tuple[np.ndarray, int]], sample_rate: int) -> Iterator[np.ndarray]:
    """The mono chunks at ``sample_rate`` of a stream of (frames x channels, rate) blocks, one by one.

    A rate that changes part-way (streams joined end to end) ends one resampler and starts another,
    so every part keeps its pitch and length.
    """
    stream: soxr.ResampleStream | None = None
    stream_rate = 0
    for block, in_rate in blocks:
        mono = downmix(block)
        if stream is not None and in_rate != stream_rate:
            yield stream.resample_chunk(np.zeros(0, np.float32), last=True)
            stream = None
        if in_rate != sample_rate:
            if stream is None:
                stream = soxr.ResampleStream(in_rate, sample_rate, 1, dtype="float32", quality="HQ")
                stream_rate = in_rate
            mono = stream.resample_chunk(mono)
        yield mono
    if stream is not None:
        yield stream.resample_chunk(np.zeros(0, np.float32), last=True)


def _decoded_blocks(path: Path, ffmpeg_first: bool = False) -> Iterator[tuple[np.ndarray, int]]:
    """(frames x channels float32, rate) blocks of the whole file: libsndfile, or FFmpeg where libsndfile
    cannot open the file or fails on its first block; the other way round with ``ffmpeg_first`` (Ogg files).

    FFmpeg decodes Vorbis with 3/4 of libvorbis's CPU, but PyAV holds the GIL while it decodes: that
    suits `mess extract`, which decodes in processes, not a program decoding in threads
    (notes/extraction_speed.md, fifth and sixth sessions).
    """
    if ffmpeg_first:
        try:
            first = next(blocks := _pyav_blocks(path), None)
            if first is not None:
                return _granule_length(path, chain([first], blocks))
        except AudioError:
            pass  # libsndfile's turn
    if (f := _open_soundfile(path)) is None:
        return _pyav_blocks(path)
    if f.subtype in _MPEG or f.subtype == "OPUS":  # libsndfile's reads one after another go wrong: around some ends
        f.close()  # of MP3 reads; Opus's pre-skip is dropped at the second read, not the first (its seeks are right)
        return _pyav_blocks(path)
    if f.frames == _UNKNOWN_FRAMES:  # its reads of a FLAC without a length fail part-way ('psf_fseek() failed')
        f.close()
        return _pyav_blocks(path)
    blocks = _soundfile_blocks(f)
    try:
        first = next(blocks, None)
    except (sf.LibsndfileError, RuntimeError):
        return _pyav_blocks(path)
    return chain([first] if first is not None else [], blocks)


def _granule_length(path: Path, blocks: Iterator[tuple[np.ndarray, int]]) -> Iterator[tuple[np.ndarray, int]]:
    """FFmpeg's ``blocks`` of a Vorbis file (of one stream) cut at libsndfile's length, its last granule position,
    and completed from libsndfile where they end before it, in line with libsndfile's samples there (not after a
    damaged page, which both skip). FFmpeg's Ogg demuxer runs one first packet late on some short files: it decoded
    up to 460 samples of the decoder's tail past the end, or trimmed the last 128 off."""
    f = _open_soundfile(path)
    if f is None or f.subtype != "VORBIS" or len(_ogg_links(path)) > 1:  # libsndfile reads a chain's first only
        if f is not None:
            f.close()
        yield from blocks
        return
    with f:
        left, tail = f.frames, np.zeros((0, f.channels), np.float32)
        for block, rate in blocks:
            if left > 0:
                yield block[:left], rate
            tail = np.concatenate([tail, block[-64:]])[-64:]
            left -= len(block)
        if left > 0:
            f.seek(f.frames - left - len(tail))
            if np.allclose(f.read(len(tail), dtype="float32", always_2d=True), tail, atol=1e-5):
                yield from _soundfile_blocks(f)


def _open_soundfile(path: Path) -> sf.SoundFile | None:
    """libsndfile's handle on ``path``, or None where libsndfile cannot open it or would not read all of it."""
    try:
        f = sf.SoundFile(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    if _reads_whole(path, f.frames, f.samplerate, f.subtype):
        return f
    f.close()
    return None


def _reads_whole(path: Path, frames: int, rate: int, subtype: str) -> bool:
    """Whether libsndfile's frame count, where its reads stop, covers the audio of ``path``.

    Not a count of 0: a WAV whose header was never finished (a recorder killed mid-take) has sizes of 0, and
    FFmpeg reads its data to the end. Not an MP3's count short of its packets: mpg123 takes an MP3's length from
    its Xing header, which a VBR file may lack (the length is then guessed from the first frames' bit rate), and
    which MP3s joined end to end carry for their first part only.
    """
    if frames <= 0 or subtype not in _MPEG:
        return frames > 0
    seconds = _mpeg_packet_seconds(path)
    return seconds is None or frames >= seconds * rate - _MP3_SLACK  # None: FFmpeg cannot read it either


def _mpeg_packet_seconds(path: Path) -> float | None:
    """:func:`_mp3_seconds` of ``path`` as it is now; None where FFmpeg cannot read it."""
    try:
        stat = path.stat()
        return _mp3_seconds(path, (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns))
    except (av.FFmpegError, AudioError, OSError):
        return None


@lru_cache(maxsize=64)
def _mp3_seconds(path: Path, stamp: tuple[int, int, int, int]) -> float:
    """:func:`_packet_seconds` of an MP3, kept for the file as it is (``stamp``: size, mtime, inode, ctime): a file is
    probed, then opened by libsndfile for its windows, and reading its packets costs 60 ms for 5 minutes."""
    with open_container(path) as container:
        return _packet_seconds(container, _audio_stream(container, path))


def _packet_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float:
    """Seconds of audio in ``stream``'s packets, read without decoding them (0 when they carry no durations)."""
    total = sum(packet.duration or 0 for packet in container.demux(stream) if packet.size)
    return float(total * stream.time_base) if stream.time_base is not None else 0.0


def _soundfile_blocks(f: sf.SoundFile) -> Iterator[tuple[np.ndarray, int]]:
    """Blocks as read from an open file (closed at the end), stopping at the first empty one.

    ``SoundFile.blocks`` trusts the header's frame count and yields its reused buffer even when
    a read comes back short, which repeats stale audio for a truncated MP3.
    """
    with f:
        rate = f.samplerate
        while len(block := f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)):
            yield block, rate


def _ogg_links(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of the streams of a chained Ogg file, one after another (each opened by BOS pages); one range
    for an Ogg file of one stream, none for another file. The scan stops at the first bytes that are no page."""
    starts: list[int] = []
    with path.open("rb", buffering=1 << 16) as f:  # pages of a few kB: most seeks stay in the buffer
        end, opening = 0, False
        while len(head := f.read(27)) == 27 and head[:4] == b"OggS":
            sizes = f.read(head[26])
            begins = bool(head[5] & 2)  # a BOS page: its stream's first
            if begins and not opening:
                starts.append(end)
            opening = begins
            end = f.seek(end + 27 + len(sizes) + sum(sizes))
    return list(zip(starts, [*starts[1:], end], strict=True)) if starts else []


@contextmanager
def _open_link(path: Path, link: tuple[int, int]) -> Iterator[av.container.InputContainer]:
    """PyAV's container for the bytes ``link`` of ``path`` (one stream of a chained Ogg file)."""
    with path.open("rb") as f:
        f.seek(link[0])
        data = io.BytesIO(f.read(link[1] - link[0]))
    with av.open(data, "r", format="ogg") as container:
        yield container


def channel_blocks(path: str | Path) -> Iterator[tuple[np.ndarray, int]]:
    """The file's samples with its channels kept, as FFmpeg decodes them: (frames x channels float32, rate) blocks in
    order (priming stamped before time 0 dropped, as :func:`load_audio` drops it; 8-bit PCM centred; 8 channels or
    more read plane by plane). AudioError, naming the file, when FFmpeg cannot decode it."""
    return _pyav_blocks(Path(path))


def _pyav_blocks(path: Path, link: tuple[int, int] | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """FFmpeg's frames, joined into blocks of at least :data:`_BLOCK_FRAMES` samples (or a layout change); only
    those of the bytes ``link`` when given (see :func:`_ogg_links`).

    Samples stamped before time 0 (a Vorbis stream's first 128, say) are priming, and dropped, so
    the audio starts where seeking counts from (and where libsndfile starts).
    """
    try:
        with open_container(path) if link is None else _open_link(path, link) as container:
            stream = _audio_stream(container, path)
            base = stream.time_base
            head: list[np.ndarray] = []  # the leading frames' arrays, priming dropped
            fifo = av.AudioFifo()  # the frames after them, joined in C
            size, layout, leading = 0, (False, 1, 0), True
            for frame in _frames(container, stream):
                frame_layout = (frame.format.is_planar, frame.layout.nb_channels, frame.sample_rate)
                if (size or head) and frame_layout != layout:
                    yield _stack_frames(head + _drained(fifo), *layout[:2]), layout[2]
                    head, fifo, size = [], av.AudioFifo(), 0
                layout = frame_layout
                if leading and frame.pts is not None and base is not None and frame.pts < 0 and not fifo.samples:
                    drop = min(frame.samples, round(float(-frame.pts * base) * frame.sample_rate))
                    head.append(_frame_array(frame)[:, drop * (1 if layout[0] else layout[1]):])
                    size += frame.samples - drop
                else:
                    leading = False if frame.pts is not None and frame.pts >= 0 else leading
                    size += _write(fifo, frame, path)
                if size >= _BLOCK_FRAMES:
                    yield _stack_frames(head + _drained(fifo), *layout[:2]), layout[2]
                    head, size = [], 0
            if size:
                yield _stack_frames(head + _drained(fifo), *layout[:2]), layout[2]
    except av.FFmpegError as exc:
        raise AudioError(f"{path}: cannot decode ({_ffmpeg_reason(exc)})") from exc


def _ffmpeg_reason(exc: av.FFmpegError) -> str:
    """FFmpeg's refusal in words, without its class, its errno or the file name it repeats: 'invalid data found
    when processing input: damaged, or not audio'."""
    reason = (exc.strerror or str(exc)).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    if isinstance(exc, av.error.EOFError):
        return f"{reason} before any audio: cut short?"
    if isinstance(exc, av.error.InvalidDataError):
        return f"{reason}: damaged, or not audio"
    return reason


def _drained(fifo: av.AudioFifo) -> list[np.ndarray]:
    """Everything in ``fifo`` as one frame's array (none when it is empty); the FIFO is left empty."""
    frame = fifo.read()
    return [_frame_array(frame)] if frame is not None else []


def _frame_array(frame: av.AudioFrame) -> np.ndarray:
    """``frame.to_ndarray()`` read from the frame's own planes: PyAV counts planes up to a null pointer, which FFmpeg
    does not put after 8 planar channels or more, so it read a ninth from whatever followed them and crashed (a 7.1
    Vorbis or AAC file killed its decoder, and the file failed)."""
    dtype = format_dtypes.get(frame.format.name)
    if dtype is None:  # a format PyAV has no array for: its error
        return frame.to_ndarray()
    planar, channels = frame.format.is_planar, frame.layout.nb_channels
    count = frame.samples if planar else frame.samples * channels
    planes = range(channels if planar else 1)
    return np.vstack([np.frombuffer(memoryview(AudioPlane(frame, i)), dtype, count) for i in planes])


def _drained_mono(fifo: av.AudioFifo) -> list[np.ndarray]:
    """Everything in ``fifo`` downmixed, :func:`downmix`'s samples to the bit, as one array (none when it is empty);
    the FIFO is left empty. Float planes (Vorbis, MP3, AAC, Opus) are added where the frame holds them: joining
    them first (:func:`_drained`, :func:`_stack_frames`) copied every sample twice more."""
    frame = fifo.read()
    if frame is None:
        return []
    channels = frame.layout.nb_channels
    if frame.format.name != "fltp" or channels >= 8:  # downmix sums 8 channels or more pairwise
        return [downmix(_stack_frames([_frame_array(frame)], frame.format.is_planar, channels))]
    planes = [np.frombuffer(memoryview(AudioPlane(frame, i)), np.float32, frame.samples) for i in range(channels)]
    mono = planes[0].copy()
    for plane in planes[1:]:  # in order, each value float32: downmix's sums
        np.add(mono, plane, out=mono)
    return [np.divide(mono, np.float32(channels), out=mono) if channels > 1 else mono]


def _stack_frames(arrays: list[np.ndarray], planar: bool, channels: int) -> np.ndarray:
    """[frames, channels] float32 of PyAV frame arrays: [channels, frames] (planar) or [1, frames*channels]
    (packed); a view where no conversion is needed (:func:`downmix` reads columns)."""
    arr = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)
    block = arr.T if planar else arr.reshape(-1, channels)
    if block.dtype == np.uint8:  # 8-bit PCM is unsigned, silence at 128 (TTA, WavPack, WAV's through FFmpeg)
        return (block.astype(np.float32) - np.float32(128)) / np.float32(128)
    if np.issubdtype(block.dtype, np.integer):  # by 2^15 or 2^31, as libsndfile scales them: full scale is -1
        return block.astype(np.float32) / np.float32(-np.iinfo(block.dtype).min)
    return block if block.dtype == np.float32 else block.astype(np.float32)


def _audio_stream(container: av.container.InputContainer, path: Path) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise AudioError(f"{path}: has no audio stream")
    return container.streams.audio[0]
