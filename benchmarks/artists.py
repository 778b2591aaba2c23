"""Artist-similarity benchmark: speed of our set-to-set and separation code vs naive versions, and the
quality effect of mean-centring on an anisotropic layer, on synthetic artists with known structure.

Collection: ``--artists`` artists in scenes of 5, ``--tracks`` tracks each, ``--dim``-d vectors
= shared offset (anisotropy) + scene centre + artist centre + track noise. Reference lists name
each artist's scene-mates. Reports, all measured in this run:

* Chamfer artist matrix: blocked ``reduceat`` version vs a per-pair Python loop (exact same
  numbers), on ``--naive-artists`` artists; then the full collection; then one query row.
* Separation (within vs between-artist cosine, Cohen's d): Gram-moment version vs all track pairs.
* Quality: raw vs centred artist-similarity span and nDCG@10 / MRR against the reference lists,
  plus the random baseline; and the learned hybrid vs audio alone on held-out artists.
* Peak memory (ru_maxrss).

Every timing, ours and the naive baselines alike, is the best of ``--repeat`` runs (3)
of the same call on the same data, so both sides are warm.

    python benchmarks/artists.py
    python benchmarks/artists.py --artists 5000 --tracks 5 --dim 768
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from mess.artists.discrimination import pair_stats, separation
from mess.artists.hybrid import components, fit_hybrid
from mess.artists.profiles import Space, build_artists
from mess.artists.setdist import chamfer_matrix, chamfer_row
from mess.artists.similarity import ArtistVectors, artist_vectors, similarity_matrix
from mess.artists.validate import evaluate, random_baseline
from mess.store import Track


def collection(n_artists: int, tracks: int, dim: int, seed: int = 0):
    """(ArtistSet, Space, scene of each artist) with a large shared offset (anisotropic layer)."""
    rng = np.random.default_rng(seed)
    scenes = np.arange(n_artists) // 5
    scene_centres = rng.normal(size=(scenes.max() + 1, dim))
    artist_centres = scene_centres[scenes] + 0.8 * rng.normal(size=(n_artists, dim))
    offset = 6.0 * rng.normal(size=dim)
    rows = np.repeat(artist_centres, tracks, axis=0) + 1.2 * rng.normal(size=(n_artists * tracks, dim)) + offset
    genres = [f"scene{s if rng.random() < 0.5 else rng.integers(scenes.max() + 1)}" for s in scenes]
    track_list = [
        Track(
            id=i + 1,
            path=f"/m/{i}.flac",
            content_hash=str(i),
            duration=30.0,
            artist=f"artist {i // tracks:05d}",
            album=None,
            title=None,
            genre=genres[i // tracks],
            composer=None,
        )
        for i in range(n_artists * tracks)
    ]
    artists = build_artists(track_list, max_tracks=tracks)
    return artists, Space("synthetic", np.arange(1, n_artists * tracks + 1), rows.astype(np.float32)), scenes


def naive_chamfer(vectors: ArtistVectors) -> np.ndarray:
    """Per-pair loop: the textbook definition."""
    bounds = np.append(vectors.offsets, len(vectors.vectors))
    sets = [vectors.vectors[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=False)]
    out = np.zeros((len(sets), len(sets)), dtype=np.float32)
    for i, a in enumerate(sets):
        for j, b in enumerate(sets):
            cos = a @ b.T
            out[i, j] = (cos.max(axis=1).mean() + cos.max(axis=0).mean()) / 2
    return out


def naive_separation(vectors: ArtistVectors) -> float:
    """Cohen's d from every track pair."""
    labels = np.repeat(np.arange(len(vectors.offsets)), np.diff(np.append(vectors.offsets, len(vectors.vectors))))
    cos = vectors.vectors.astype(np.float64) @ vectors.vectors.T.astype(np.float64)
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    diff = labels[:, None] != labels[None, :]
    return float((cos[same].mean() - cos[diff].mean()) / cos[diff].std())


def timed(fn, *args, repeat: int):
    """Best wall time of ``repeat`` calls, and the last call's result."""
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artists", type=int, default=2000)
    parser.add_argument("--tracks", type=int, default=5)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--naive-artists", type=int, default=300)
    parser.add_argument("--hybrid-artists", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing, best kept (both sides)")
    args = parser.parse_args()
    print(f"artists={args.artists} tracks/artist={args.tracks} dim={args.dim}; every time is the best of "
          f"{args.repeat} runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    artists, space, scenes = collection(args.naive_artists, args.tracks, args.dim)
    vectors = artist_vectors(artists, space, center=True)
    t_naive, slow = timed(naive_chamfer, vectors, repeat=args.repeat)
    t_ours, fast = timed(chamfer_matrix, vectors.vectors, vectors.offsets, repeat=args.repeat)
    print(
        f"chamfer matrix, {args.naive_artists} artists: ours {t_ours * 1e3:.1f} ms, per-pair loop "
        f"{t_naive * 1e3:.0f} ms -> {t_naive / t_ours:.0f}x faster, max |diff| {np.abs(fast - slow).max():.1e}"
    )
    t_naive, d_slow = timed(naive_separation, vectors, repeat=args.repeat)
    t_ours, d_fast = timed(separation, vectors, repeat=args.repeat)
    print(
        f"separation, {len(vectors.vectors)} tracks: Gram moments {t_ours * 1e3:.1f} ms, all pairs "
        f"{t_naive * 1e3:.0f} ms -> {t_naive / t_ours:.1f}x, |diff| {abs(d_fast.effect - d_slow):.1e}"
    )

    artists, space, scenes = collection(args.artists, args.tracks, args.dim)
    vectors = artist_vectors(artists, space, center=True)
    t_full, full = timed(chamfer_matrix, vectors.vectors, vectors.offsets, repeat=args.repeat)
    t_row, row = timed(chamfer_row, vectors.vectors, vectors.offsets, 0, repeat=args.repeat)
    t_mean, _ = timed(similarity_matrix, vectors, "mean", repeat=args.repeat)
    print(
        f"{args.artists} artists: chamfer matrix {t_full:.2f} s, one chamfer row {t_row * 1e3:.1f} ms "
        f"({t_full / t_row:.0f}x less than the matrix, max |diff| {np.abs(full[0] - row).max():.1e}), "
        f"mean matrix {t_mean * 1e3:.0f} ms"
    )
    t_sep, _ = timed(separation, vectors, repeat=args.repeat)
    print(f"separation on {len(vectors.vectors)} tracks: {t_sep * 1e3:.0f} ms")

    matched = {q: [int(j) for j in np.flatnonzero(scenes == scenes[q]) if j != q] for q in range(args.artists)}
    names = artists.names
    print("quality vs scene-mate reference lists (k=10):")
    for center in (False, True):
        vec = artist_vectors(artists, space, center=center)
        for method in ("mean", "chamfer"):
            sim = similarity_matrix(vec, method)
            stats = pair_stats(sim, names)
            m = evaluate(sim, matched, 10)
            print(
                f"  {'centred' if center else 'raw    '} {method:7s}: pair range {stats.min:.2f}..{stats.max:.2f} "
                f"(span {stats.span:.2f}), nDCG@10 {m.ndcg:.3f}, MRR {m.mrr:.3f}"
            )
    base = random_baseline(args.artists, matched, 10, repeats=3)
    print(f"  random             : nDCG@10 {base.ndcg:.3f}, MRR {base.mrr:.3f}")

    artists, space, scenes = collection(args.hybrid_artists, args.tracks, args.dim, seed=1)
    matched = {q: [int(j) for j in np.flatnonzero(scenes == scenes[q]) if j != q] for q in range(args.hybrid_artists)}
    audio = similarity_matrix(artist_vectors(artists, space, center=True), "mean")
    t_fit, fit = timed(lambda: fit_hybrid(components(audio, artists), matched, k=10, test_fraction=0.3),
                       repeat=args.repeat)
    print(
        f"hybrid on {args.hybrid_artists} artists (genre tags right half the time), learned in {t_fit:.1f} s: "
        f"weights {fit.weights}; held-out nDCG@10 hybrid {fit.test['hybrid'].ndcg:.3f} vs audio "
        f"{fit.test['audio'].ndcg:.3f}, genre {fit.test['genre'].ndcg:.3f}, equal weights {fit.test['equal'].ndcg:.3f}"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
