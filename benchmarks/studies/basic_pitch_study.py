"""Study (issue 17): basic-pitch descriptors beside the default, by game and by composer (notes/quality_basic_pitch.md).

Reads the store ``benchmarks/quality.py`` extracted (models ``musicnn`` and ``dsp``) and the posteriorgrams cached by
``basic_pitch_posteriors.py``; builds three descriptors per track (register Gaussian, note activity, key-invariant
pitch classes) and scores the default alone, the default with each descriptor as one more z-scored block of weight
w (in layers), w chosen by leave-one-game-out, and each descriptor alone, with ``quality.py``'s metrics, bootstrap
and LOGO. The design was fixed before any result (the notes' pre-registration).

    python benchmarks/studies/basic_pitch_study.py --data DIR --store STORE --cache /tmp/wt2/bp
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quality as Q  # noqa: E402

from mess.datasets.soundtracks import fetch_soundtracks  # noqa: E402
from mess.search.vectors import Preprocessor, block_roles  # noqa: E402
from mess.store import FeatureStore  # noqa: E402

FPS = 22050 / 256  # basic-pitch's frames per second
MIDI_A0 = 21
FRAME_THRESHOLD, ONSET_THRESHOLD = 0.3, 0.5  # basic-pitch's defaults
WEIGHTS = (1.0, 2.0, 4.0, 8.0, 12.0)  # the descriptor's weight in layers (0: the default)
DESCRIPTORS = ("register", "activity", "pcp")


def register(contour: np.ndarray) -> np.ndarray:
    """Gaussian (mean, log-variance) of the contour posteriorgram [T, 264] folded to 22 bands of 4 semitones."""
    bands = contour.reshape(len(contour), 22, 12).sum(axis=2)
    return np.concatenate([bands.mean(axis=0), np.log(bands.var(axis=0) + 1e-4)])


def activity(notes: list[np.ndarray], onsets: list[np.ndarray]) -> np.ndarray:
    """Polyphony, onset rate, note density and pitch range of a track's windows (note and onset [T, 88] each)."""
    note = np.concatenate(notes)
    active = note > FRAME_THRESHOLD
    poly = active.sum(axis=1)
    count = 0
    for o in onsets:
        padded = np.pad(o, ((1, 1), (0, 0)))
        count += int(((o > ONSET_THRESHOLD) & (o >= padded[:-2]) & (o >= padded[2:])).sum())
    seconds = len(note) / FPS
    sounding = max(float((poly > 0).sum()) / FPS, 1 / FPS)
    pitches = np.nonzero(active)[1] + MIDI_A0
    if len(pitches):
        p5, p50, p95 = np.percentile(pitches, (5, 50, 95))
        spread = float(pitches.std())
    else:
        p5 = p50 = p95 = spread = 0.0
    return np.array([poly.mean(), poly.std(), (poly >= 1).mean(), (poly >= 3).mean(), np.log1p(count / seconds),
                     np.log1p(count / sounding), p5, p50, p95, p95 - p5, spread, note.max(axis=1).mean()])


def pcp(notes: list[np.ndarray]) -> np.ndarray:
    """Key-invariant pitch classes: |DFT| 1-6 of the mean chroma, the frames' mean |DFT| 1-6, the sorted chroma."""
    note = np.concatenate(notes)
    chroma = np.zeros((len(note), 12))
    for key in range(88):
        chroma[:, (key + MIDI_A0) % 12] += note[:, key]
    mean = chroma.mean(axis=0)
    mean = mean / max(float(mean.sum()), 1e-9)
    total = chroma.sum(axis=1)
    keep = total >= 0.1
    frames = (np.abs(np.fft.rfft(chroma[keep] / total[keep, None], axis=1))[:, 1:7].mean(axis=0) if keep.any()
              else np.zeros(6))
    return np.concatenate([np.abs(np.fft.rfft(mean))[1:7], frames, np.sort(mean)[::-1]])


def descriptors(cache: Path, path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A track's three descriptors from its cached posteriorgrams, and its window starts."""
    with np.load(cache / f"{path.parent.name}__{path.stem}.npz") as z:
        note, onset, contour = (z[k].astype(np.float32) / 255 for k in ("note", "onset", "contour"))
        starts = z["starts"]
    return {"register": register(np.concatenate(list(contour))), "activity": activity(list(note), list(onset)),
            "pcp": pcp(list(note))}, starts


def joined(default: Q.Backend, extra: list[np.ndarray], weight: float) -> np.ndarray:
    """The default's all-layer unit vectors with ``extra`` blocks appended (unpowered, z-scored, L2), the blocks
    sharing ``weight`` layers equally."""
    layers = list(default.layers)
    unpowered, weights = block_roles(layers, "all", default.revision)
    blocks = [default.tracks[layer] for layer in layers] + extra
    raw = np.concatenate(blocks, axis=1)
    prep = Preprocessor.fit(raw, [b.shape[1] for b in blocks], "power", (*unpowered, *[True] * len(extra)),
                            (*weights, *[weight / len(extra)] * len(extra)))
    return prep.apply(raw)


def alone(extra: list[np.ndarray]) -> np.ndarray:
    """A descriptor's blocks alone: z-scored, L2 per block, equal weights."""
    raw = np.concatenate(extra, axis=1)
    return Preprocessor.fit(raw, [b.shape[1] for b in extra], "zscore").apply(raw)


def composite(sims: dict[str, Q.Sim], picks: list[str], labels: np.ndarray) -> Q.Sim:
    """Each query's row from the candidate its game's LOGO fold chose."""
    chosen = dict(p.split(":", 1) for p in picks)
    out = np.empty_like(next(iter(sims.values())))
    for i, game in enumerate(labels):
        out[i] = sims[chosen[game]][i]
    return out


def per_game(q: Q.PerQuery, base: Q.PerQuery, labels: np.ndarray) -> str:
    """Per game, the row's mAP minus the base's."""
    return ", ".join(f"{g} {q.ap[labels[q.rows] == g].mean() - base.ap[labels[base.rows] == g].mean():+.3f}"
                     for g in np.unique(labels))


def games_resampled(q: Q.PerQuery, base: Q.PerQuery, labels: np.ndarray) -> tuple[float, float]:
    """95% interval of the mAP ratio when whole games are resampled (as quality.timbre_study)."""
    games = np.unique(labels)
    sums = np.array([[q.ap[labels[q.rows] == g].sum(), base.ap[labels[base.rows] == g].sum()] for g in games])
    picks = np.random.default_rng(0).integers(0, len(games), (Q.BOOT, len(games)))
    ratios = sums[picks, 0].sum(axis=1) / sums[picks, 1].sum(axis=1)
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS),
                        help="The descriptor's weights in layers beside w = 0 (the pre-registered grid by default).")
    args = parser.parse_args()
    tracks = fetch_soundtracks(args.data)
    by_path = {str(t.path.resolve()): t for t in tracks}
    fs = FeatureStore(args.store, readonly=True)
    try:
        runs = {m: fs.run(m) for m in Q.MODELS}
        have = [{t.id for t in fs.tracks(r) if t.path in by_path} for r in runs.values()]
        ids = np.array(sorted(set.intersection(*have)), dtype=np.int64)
        paths = {t.id: t.path for t in fs.tracks()}
        backends = {m: Q.load_backend(fs, r, ids) for m, r in runs.items()}
    finally:
        fs.close()
    meta = [by_path[paths[int(i)]] for i in ids]
    labels = np.array([t.game for t in meta])
    composers = np.array([t.artist or "" for t in meta])
    tagged = np.flatnonzero(composers != "")
    default = backends["musicnn"]
    started = time.perf_counter()
    feats: dict[str, list[np.ndarray]] = {d: [] for d in DESCRIPTORS}
    mismatched = 0
    for row, t in enumerate(meta):
        values, starts = descriptors(args.cache, t.path)
        mismatched += not np.allclose(np.sort(starts), np.sort(default.starts[default.owner == row]), atol=1e-3)
        for d in DESCRIPTORS:
            feats[d].append(values[d])
    print(f"{len(ids)} tracks; descriptors from the cache in {time.perf_counter() - started:.1f} s; window starts "
          f"differing from the store's: {mismatched}")
    blocks = {d: [np.array(feats[d], np.float32)] for d in DESCRIPTORS}
    blocks["all3"] = [blocks[d][0] for d in DESCRIPTORS]

    bs = list(backends.values())
    base_sim = Q.augmented_sim(bs, Q.all_layers(bs, 0))
    check = Q.ranked(joined(default, blocks["pcp"], 0.0), "augmented")
    print(f"w = 0 against the default's scores: max |diff| {np.abs(check - base_sim).max():.2e}")
    base = Q.per_query(base_sim, labels)
    base_c = Q.per_query(base_sim, composers, tagged, tagged)

    def line(name: str, sim: Q.Sim) -> Q.PerQuery:
        q, c = Q.per_query(sim, labels), Q.per_query(sim, composers, tagged, tagged)
        lo, hi = Q.boot_ci(q.ap)
        r, rlo, rhi = Q.ratio_ci(q.ap, base.ap)
        cr, clo, chi = Q.ratio_ci(c.ap, base_c.ap)
        print(f"| {name} | {q.ap.mean():.3f} [{lo:.3f}, {hi:.3f}] | x{r:.3f} [{rlo:.3f}, {rhi:.3f}] | "
              f"{c.ap.mean():.3f} | x{cr:.3f} [{clo:.3f}, {chi:.3f}] | {per_game(q, base, labels)} |", flush=True)
        return q

    print("\n| vectors | mAP by game [95%] | vs default [95%] | composer mAP | vs default [95%] | per game vs default |"
          "\n|---|---|---|---|---|---|")
    line("the default", base_sim)
    candidates: dict[str, Q.Sim] = {"default": base_sim}
    for d, extra in blocks.items():
        sims = {"w0": base_sim}
        for w in args.weights:
            sims[f"w{w:g}"] = Q.ranked(joined(default, extra, w), "augmented")
            candidates[f"{d} w{w:g}"] = sims[f"w{w:g}"]
            line(f"D+{d} w{w:g}", sims[f"w{w:g}"])
        q, picks = Q.logo(sims, labels)
        chosen = composite(sims, picks, labels)
        assert np.allclose(Q.per_query(chosen, labels).ap, q.ap)
        line(f"**D+{d}, w by LOGO** ({' '.join(picks)})", chosen)
        lo, hi = games_resampled(q, base, labels)
        print(f"|   whole games resampled: [{lo:.3f}, {hi:.3f}] | | | | | |")
    q, picks = Q.logo(candidates, labels)
    line(f"**all {len(candidates)} candidates by LOGO** ({' '.join(picks)})", composite(candidates, picks, labels))
    lo, hi = games_resampled(q, base, labels)
    print(f"|   whole games resampled: [{lo:.3f}, {hi:.3f}] | | | | | |")

    print("\nalone (game label; composer label on the tagged tracks):\n| vectors | mAP by game [95%] | composer mAP |"
          "\n|---|---|---|")
    ch = Q.chance(labels)
    print(f"| chance | {ch.ap.mean():.3f} [{Q.boot_ci(ch.ap)[0]:.3f}, {Q.boot_ci(ch.ap)[1]:.3f}] | "
          f"{Q.chance(composers[tagged]).ap.mean():.3f} |")
    dsp = list(backends).index("dsp")
    rows = {"dsp, all layers": Q.mean_sim(bs, Q.all_layers(bs, dsp)),
            "dsp, all layers, zscore": Q.mean_sim(bs, Q.all_layers(bs, dsp), "zscore")}
    for d, extra in blocks.items():
        x = alone(extra)
        rows[f"{d} alone, zscore"] = x @ x.T
        rows[f"{d} alone, zscore, augmented"] = Q.ranked(x, "augmented")
    dsp_q = Q.per_query(rows["dsp, all layers"], labels)
    for name, sim in rows.items():
        q = Q.per_query(sim, labels)
        c = Q.per_query(sim, composers, tagged, tagged)
        lo, hi = Q.boot_ci(q.ap)
        r, rlo, rhi = Q.ratio_ci(q.ap, dsp_q.ap)
        print(f"| {name} | {q.ap.mean():.3f} [{lo:.3f}, {hi:.3f}], x{r:.3f} [{rlo:.3f}, {rhi:.3f}] vs dsp | "
              f"{c.ap.mean():.3f} |")
    print("\nPearson correlation of the off-diagonal cosines (z-scored blocks, plain), a descriptor alone against:")
    views = {"the default's network layers": Q.mean_sim(bs, Q.network_layers(bs, 0), "zscore"),
             "the timbre layer": Q.mean_sim(bs, [(0, "timbre")], "zscore"), "dsp, all layers": rows["dsp, all layers"]}
    off = ~np.eye(len(ids), dtype=bool)
    for d, extra in blocks.items():
        x = alone(extra)
        print(f"  {d}: " + ", ".join(f"{v} {np.corrcoef((x @ x.T)[off], sim[off])[0, 1]:.3f}"
                                     for v, sim in views.items()))


if __name__ == "__main__":
    main()
