"""The same-recording check's search for a sounding place in a long file holds a level per half second, not the
file's samples: a child process's peak memory (ru_maxrss) while it moves a span off a silent stretch of a 20-minute
file made from a real soundtrack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mess.audio import recording
from mess.audio.decode import load_audio, probe

SOUNDTRACK = Path(os.environ.get("MESS_SOUNDTRACKS", "/work/data/soundtracks")) / "wesnoth" / "battle.ogg"
RATE = 16_000  # Hz of the long file
MINUTES = 20
GAP = 10.0  # seconds of silence from 1 s before each span

_CHILD = """
import json, resource, sys
from collections.abc import Iterator
from pathlib import Path
from mess.audio import recording
path, duration = Path(sys.argv[1]), float(sys.argv[2])
starts, span = recording.span_starts(duration)
recording._decoded(path, recording._stamp(path), starts[0], span)  # what place() reads before the search
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
moved = [recording.place(path, duration, s) for s in starts]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"moved": moved, "grew": (after - before) * 1024}))
"""


@pytest.fixture(scope="module")
def long_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-minute FLAC (16 kHz mono) of Wesnoth's battle.ogg end to end, silent for :data:`GAP` seconds from 1 s
    before each span the check compares."""
    if not SOUNDTRACK.is_file():
        pytest.skip(f"{SOUNDTRACK} is not there")
    track = load_audio(SOUNDTRACK, RATE)
    audio = np.tile(track, -(-MINUTES * 60 * RATE // len(track)))[:MINUTES * 60 * RATE]
    for start in recording.span_starts(MINUTES * 60.0)[0]:
        audio[round((start - 1) * RATE):round((start - 1 + GAP) * RATE)] = 0
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, audio, RATE, subtype="PCM_16")
    return path


def test_a_long_file_is_searched_for_sound_without_holding_its_samples(long_file: Path) -> None:
    """Each span of a 20-minute file silent where its spans fall is moved to the nearest half-second start from which
    the file sounds throughout (numpy on the whole decoded file here), and the search grows the process's peak memory
    by less than a quarter of the file's samples at the check's rate (38 MB as float32). Before, the whole file was
    decoded and its levels taken in float64 copies: the peak grew by several times that."""
    duration = probe(long_file).duration
    x = load_audio(long_file, recording.RATE).astype(np.float64)
    half = recording.RATE // 2
    sounding = 10 * np.log10(np.mean(x[:len(x) // half * half].reshape(-1, half) ** 2, axis=1) + 1e-20) \
        >= recording.SILENT_DB
    starts = recording.span_starts(duration)[0]
    span, first, last = recording._span_range(duration)
    blocks = int(np.ceil(span / 0.5))
    grid = np.array([i * 0.5 for i in range(len(sounding) - blocks + 1) if sounding[i:i + blocks].all()])
    grid = grid[(grid >= first) & (grid <= last)]
    expected = [float(grid[np.argmin(np.abs(grid - s))]) for s in starts]
    assert all(m != s for m, s in zip(expected, starts, strict=True))  # the premise: every span is moved
    child = subprocess.run([sys.executable, "-c", _CHILD, str(long_file), str(duration)], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.returncode == 0, child.stderr[-2000:]
    answer = json.loads(child.stdout)
    assert answer["moved"] == expected
    assert answer["grew"] < len(x) * 4 / 4, answer


def test_levels_taken_chunk_by_chunk_are_the_whole_decodes_even_past_damage(tmp_path: Path) -> None:
    """A real Vorbis track with 200 kB of garbage in its middle: FFmpeg gives up there and libsndfile decodes it
    again from the start. ``reduce_audio`` hands the consumer the second decoder's chunks from the start, so the
    chunks join into ``load_audio``'s samples and the half-second levels taken chunk by chunk are the whole decode's,
    to the bit."""
    from mess.audio.decode import reduce_audio

    if not SOUNDTRACK.is_file():
        pytest.skip(f"{SOUNDTRACK} is not there")
    data = bytearray(SOUNDTRACK.read_bytes())
    data[len(data) // 2:len(data) // 2 + 200_000] = np.random.default_rng(0).bytes(200_000)
    damaged = tmp_path / "damaged.ogg"
    damaged.write_bytes(bytes(data))
    calls: list[int] = []

    def joined(chunks: Iterator[np.ndarray]) -> np.ndarray:
        calls.append(0)
        return np.concatenate(list(chunks))

    whole = load_audio(damaged, recording.RATE)
    assert np.array_equal(reduce_audio(damaged, recording.RATE, joined), whole)
    assert len(calls) == 2  # the premise: FFmpeg gave up part-way and libsndfile started again
    assert np.array_equal(reduce_audio(damaged, recording.RATE, recording._chunk_levels), recording._levels(whole))
