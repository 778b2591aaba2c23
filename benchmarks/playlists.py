"""Radio playlists of growing length: the library's `radio` against the straightforward loop it replaced.

The straightforward loop (kept below as ``naive_radio``: the library's code until commit ca6f21c, with today's
DuplicateGuard) re-checked every track of the candidate pool (50 x n tracks) for near-duplicates before each pick, so
a radio of n tracks cost O(50 n^2) duplicate checks, each a product with every kept vector. The library checks only
the tracks a pick reaches. Both must give the same playlist (checked); the ratio is their times in the same run, on
the same store. Both rank by cosine (``ranking="plain"``); the last line times the default ranking (augmented).

The store is synthetic, in musicnn-msd's real shape (9 layers, 2,509 dims; benchmarks/serve_load.py builds it):
its vectors only set how many candidates are near-duplicates or share an artist, which is what the loop costs.

    python benchmarks/playlists.py                      # 5,000 tracks, radios of 30, 100 and 200 tracks
    python benchmarks/playlists.py --tracks 20000 --lengths 30 300
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from serve_load import model_info, synthetic_store  # benchmarks/serve_load.py, next to this script

from mess.audio.names import credit_key
from mess.playlists.playlist import DuplicateGuard, artist_key
from mess.playlists.radio import DEFAULT_WINDOW, POOL_PER_TRACK, radio
from mess.query import resolve_query
from mess.search.query import TrackQuery, query_unit
from mess.search.vectors import VectorSpec, load_vectors, track_by_id
from mess.store import FeatureStore, Run


def naive_radio(store: FeatureStore, run: Run, seed: TrackQuery, n: int, window: int = DEFAULT_WINDOW) -> list[int]:
    """Track ids of the radio as the loop before commit ca6f21c made it (one seed, blend 'nearest')."""
    tracks = store.tracks(run)
    vs = load_vectors(store, run, VectorSpec.from_options(), tracks)
    unit, by_id = vs.unit(), track_by_id(tracks)
    seed_unit = query_unit(store, vs, seed)
    closeness = unit @ seed_unit
    guard = DuplicateGuard(unit.shape[1])
    guard.add(seed_unit, seed.track, seed.content_hash)
    order = np.argsort(-closeness, kind="stable")
    pool = [int(r) for r in order[:max(POOL_PER_TRACK * n, 1000)]]
    history = [credit_key(seed.artist) if seed.track is None else artist_key(seed.track)]
    picked: list[int] = []
    while len(picked) < n:
        pool = [r for r in pool if not guard.duplicate(unit[r], by_id[int(vs.ids[r])])]
        artists = [artist_key(by_id[int(vs.ids[r])]) for r in pool]
        row = None
        for w in range(window, 0, -1):
            recent = {a for a in history[-w:] if a}
            row = next((r for r, a in zip(pool, artists, strict=True) if a not in recent), None)
            if row is not None:
                break
        if row is None:
            break
        pool.remove(row)
        track = by_id[int(vs.ids[row])]
        guard.add(unit[row], track)
        history.append(artist_key(track))
        picked.append(row)
    return [int(vs.ids[r]) for r in picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=5000)
    parser.add_argument("--lengths", type=int, nargs="+", default=[30, 100, 200])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        synthetic_store(root, args.tracks, model_info("musicnn-msd"))
        store = FeatureStore(root)
        run = store.run()
        seed = resolve_query(store, "1", run)
        radio(store, run, [seed], 1, ranking="plain")  # vectors read and memoised once, for both sides
        print(f"{args.tracks} tracks, {sum(run.layer_dims)} dims; radio from track 1")
        print(f"{'n':>5} {'ours s':>9} {'naive s':>9} {'ratio':>8}  same playlist")
        for n in args.lengths:
            start = time.perf_counter()
            ours = [t.id for t in radio(store, run, [seed], n, ranking="plain").tracks]  # by cosine, as theirs
            mine = time.perf_counter() - start
            start = time.perf_counter()
            theirs = naive_radio(store, run, seed, n)
            naive = time.perf_counter() - start
            print(f"{n:>5} {mine:>9.3f} {naive:>9.3f} {naive / mine:>7.0f}x  {ours == theirs}")
            if ours != theirs:
                raise SystemExit("the playlists differ")
        times = []
        for _ in range(2):  # the default ranking: the first call builds the augmentation, later ones reuse it
            start = time.perf_counter()
            radio(store, run, [seed], args.lengths[0])
            times.append(time.perf_counter() - start)
        print(f"default (augmented) ranking, n {args.lengths[0]}: first radio {times[0]:.3f} s (builds the "
              f"augmentation in memory), then {times[1]:.3f} s")
        store.close()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


if __name__ == "__main__":
    main()
