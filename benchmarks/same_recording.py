"""Calibration of :func:`mess.audio.recording.same_recording` on real music (the development soundtracks).

Positives: copies of real tracks (two per game, at most 160 s) made with PyAV: MP3 at 96/128/192 kb/s, AAC at
64/128 kb/s, Opus at 64 kb/s, resampled FLACs (22.05 and 48 kHz), 30 ms of silence added, 20 ms trimmed, 3 dB
quieter. Negatives: every pair of distinct tracks of one game (scored whatever their durations, to see where
the correlation alone would put them), and the known near-twins (two mixes of one warmux piece). Prints each
group's correlation and loudness-drift distribution and the verdicts with the duration check.

    python benchmarks/same_recording.py --out /tmp/same_recording      # copies are kept there between runs
    python benchmarks/same_recording.py --radio-store STORE             # the audio check's cost in radios

``--radio-store``: 20-track radios seeded by 20 of the store's tracks (evenly spaced in path order), with the audio
check and with it stubbed out (the playlists compared), after one radio to warm the caches.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from collections import defaultdict
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from mess.audio import recording
from mess.audio.decode import probe
from mess.datasets.copies import read_channels, write_copy
from mess.playlists import playlist, radio
from mess.search.query import collection_query
from mess.store import FeatureStore

SOUNDTRACKS = Path("/work/data/soundtracks")
VARIANTS: dict[str, tuple[str, str, dict[str, Any]]] = {  # name: (suffix, codec, keyword arguments of write_copy)
    "mp3-96": (".mp3", "libmp3lame", {"bit_rate": 96_000}),
    "mp3-128": (".mp3", "libmp3lame", {"bit_rate": 128_000}),
    "mp3-192": (".mp3", "libmp3lame", {"bit_rate": 192_000}),
    "aac-64": (".m4a", "aac", {"bit_rate": 64_000}),
    "aac-128": (".m4a", "aac", {"bit_rate": 128_000}),
    "opus-64": (".opus", "libopus", {"bit_rate": 64_000, "out_rate": 48_000}),
    "flac-22k": (".flac", "flac", {"out_rate": 22_050}),
    "flac-48k": (".flac", "flac", {"out_rate": 48_000}),
    "lead-30ms": (".flac", "flac", {"lead": 0.03}),
    "trim-20ms": (".flac", "flac", {"lead": -0.02}),
    "gain-3dB": (".flac", "flac", {"gain_db": -3.0}),
}
TWINS = [("warmux/Olivier_Militon.-.Apnee.ogg", "warmux/Olivier_Militon.-.Apnee2.ogg"),
         ("wesnoth/frantic.ogg", "wesnoth/frantic-old.ogg")]


def raw_match(a: Path, b: Path) -> tuple[float, float]:
    """(correlation, loudness drift) of ``a`` and ``b`` as :func:`same_recording` computes them, without its
    duration check (spans placed on the shorter file) and over all three spans (it stops at the first under
    SAME_SCORE)."""
    duration = min(probe(a).duration, probe(b).duration)
    starts, span = recording.span_starts(duration)
    placed = [recording.place(a, duration, s) for s in starts]
    score, _, drift = recording.compare(recording.spans(a, b, placed, span))
    return score, drift


def radio_cost(root: Path, seeds: int = 20, n: int = 20) -> None:
    """Print the time of radios with and without the audio check, and the comparisons they made."""
    real = playlist.compared
    calls: list[float] = []  # the seconds of each comparison made (a pair that was decoded)

    def counted(a: str | recording.FirstSpans, a_duration: float | None, b: str,
                   b_duration: float | None) -> recording.RecordingMatch | None:
        t = time.perf_counter()
        match = real(a, a_duration, b, b_duration)
        if match is not None:
            calls.append(time.perf_counter() - t)
        return match

    def never(a: str | recording.FirstSpans, a_duration: float | None, b: str,
                 b_duration: float | None) -> recording.RecordingMatch | None:
        return None  # not compared

    with closing(FeatureStore(root)) as store:
        run = store.runs()[0]
        every = sorted(t.path for t in store.tracks(run))
        paths = every[::max(1, len(every) // seeds)][:seeds]
        radio.radio(store, run, [collection_query(store, paths[0])], n)
        times: dict[str, list[float]] = {"with": [], "without": []}
        lists: dict[str, list[list[str]]] = {"with": [], "without": []}
        for name, check in (("without", never), ("with", counted)):
            playlist.compared = check
            for p in paths:
                for cached in (recording._decoded, recording._sounding, recording._probed):
                    cached.cache_clear()  # each radio command starts cold
                t = time.perf_counter()
                made = radio.radio(store, run, [collection_query(store, p)], n)
                times[name].append(time.perf_counter() - t)
                lists[name].append([t.path for t in made.tracks])
        playlist.compared = real
    changed = sum(a != b for a, b in zip(lists["with"], lists["without"], strict=True))
    print(f"{len(paths)} radios of {n} on {root}: {1000 * np.mean(times['without']):.0f} ms without the audio check, "
          f"{1000 * np.mean(times['with']):.0f} ms with it (max {1000 * max(times['with']):.0f} ms); "
          f"{len(calls)} comparisons, {1000 * np.mean(calls) if calls else 0:.0f} ms each; {changed} radios changed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/same_recording"))
    parser.add_argument("--radio-store", type=Path, help="a store of the soundtracks (with copies) to time radios on")
    parser.add_argument("--soundtracks", type=Path, default=SOUNDTRACKS, help="folder with manifest.csv")
    args = parser.parse_args()
    if args.radio_store:
        if not (args.radio_store / "catalog.sqlite").is_file():
            parser.error(f"--radio-store {args.radio_store}: no feature store there (mess extract ... -s STORE)")
        radio_cost(args.radio_store)
        return
    if not (args.soundtracks / "manifest.csv").is_file():
        parser.error(f"--soundtracks {args.soundtracks}: no manifest.csv (mess demo soundtracks fetches them)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader((args.soundtracks / "manifest.csv").open()))
    by_game: dict[str, list[Path]] = defaultdict(list)
    for r in rows:
        by_game[r["game"]].append(args.soundtracks / r["path"])  # absolute paths stay as they are
    sources = [p for game in by_game.values() for p in [q for q in game if probe(q).duration <= 160][:2]]
    groups: dict[str, list[tuple[float, float, bool]]] = defaultdict(list)
    seconds: list[float] = []
    for src in sources:
        audio, rate = read_channels(src)
        for name, (suffix, codec, kw) in VARIANTS.items():
            copy = args.out / f"{src.parent.name}-{src.stem}.{name}{suffix}"
            if not copy.exists():
                write_copy(audio, rate, copy, codec, **kw)
            t = time.perf_counter()
            m = recording.same_recording(src, copy)
            seconds.append(time.perf_counter() - t)
            groups[name].append((m.score, m.level_drift, m.same))
    for twin_a, twin_b in TWINS:
        pa, pb = args.soundtracks / twin_a, args.soundtracks / twin_b
        if not (pa.is_file() and pb.is_file()):
            continue
        score, drift = raw_match(pa, pb)
        m = recording.same_recording(pa, pb)
        print(f"twin {twin_a} / {twin_b}: correlation {score:.4f}, drift {drift:.2f} dB; verdict {m.same} ({m.reason})")
    for game, paths in by_game.items():
        for a, b in itertools.combinations(paths, 2):
            score, drift = raw_match(a, b)
            same = abs(probe(a).duration - probe(b).duration) <= recording.DURATION_TOLERANCE and (
                score >= recording.SAME_SCORE and drift <= recording.SAME_LEVEL_DB)
            groups[f"pairs of {game}"].append((score, drift, same))
    print(f"{'group':<22}{'n':>5}{'corr min':>10}{'corr med':>10}{'corr max':>10}{'drift med':>11}"
          f"{'drift max':>11}{'same':>6}")
    for name, values in groups.items():
        scores, drifts, verdicts = (np.array(v) for v in zip(*values, strict=True))
        print(f"{name:<22}{len(scores):>5}{scores.min():>10.4f}{np.median(scores):>10.4f}{scores.max():>10.4f}"
              f"{np.median(drifts):>11.2f}{drifts.max():>11.2f}{int(verdicts.sum()):>6}")
    print(f"same_recording of a track and its copy: median {1000 * np.median(seconds):.0f} ms, "
          f"max {1000 * max(seconds):.0f} ms")


if __name__ == "__main__":
    main()
