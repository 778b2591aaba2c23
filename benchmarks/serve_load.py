"""Load test of `mess serve`: concurrent similar-track queries over loopback for a bounded time.

Starts the server (uvicorn, 127.0.0.1, a free port) in a subprocess over a store,
then measures for ``--seconds`` each, in the same run:

1. the search library called in-process (no HTTP), with one BLAS thread as the server
   answers requests: the floor an HTTP request cannot beat;
2. HTTP with one request in flight (a single sequential client);
3. HTTP with ``--concurrency`` requests in flight (httpx.AsyncClient).

Each request is ``GET /api/tracks/{random id}/similar?k=10`` with per-aspect "why",
alternating all layers / one layer and exclude-same-artist on and off. Reports req/s,
p50/p99 latency, errors (a transport error, a status other than 200 or an empty result
list; the script exits 1 on any),
the concurrent/sequential throughput ratio, the HTTP overhead over the library, and
the server's peak RSS. Without ``--store`` it builds a synthetic store (vectors clustered
by 50 artists) in a real model's shape, read from that model's ``ModelInfo``: ``--shape
musicnn-msd`` (its 9 layers of 50-753 dims; the wheel's weights are loaded for the info)
or ``mert-v1-95m`` (a MertModel on a HubertConfig of MERT-v1-95M's shape, random
weights, as in benchmarks/gpu_extract.py: 13 hidden states x 768).

    python benchmarks/serve_load.py                           # 5,000 synthetic musicnn-msd-shaped tracks
    python benchmarks/serve_load.py --shape mert-v1-95m
    python benchmarks/serve_load.py --tracks 50000 --concurrency 32
    python benchmarks/serve_load.py --store ~/.mess --model musicnn-msd
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from threadpoolctl import threadpool_limits

from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.models.registry import load_model
from mess.query import resolve_query
from mess.search.query import similar_tracks
from mess.store import FeatureStore, TrackVectors

ARTISTS = 50
SHAPES = ("musicnn-msd", "mert-v1-95m")


def model_info(shape: str) -> ModelInfo:
    """The ModelInfo (layer names and dims) of a real model, renamed "synthetic-<shape>"."""
    if shape == "mert-v1-95m":
        from gpu_extract import SAMPLE_RATE, mert_95m_config  # benchmarks/gpu_extract.py, next to this script
        from transformers import HubertModel, Wav2Vec2FeatureExtractor

        from mess.models.mert import MertModel

        info = MertModel(HubertModel(mert_95m_config()), Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE),
                         shape, "random").info
    else:
        info = load_model(shape).info
    return ModelInfo(f"synthetic-{shape}", "r1", info.sample_rate, info.layer_names, info.layer_dims)


def synthetic_store(root: Path, n: int, info: ModelInfo, seed: int = 0) -> None:
    """A store of n tracks by 50 artists whose vectors cluster by artist (more in later layers)."""
    rng = np.random.default_rng(seed)
    store = FeatureStore(root)
    run = store.ensure_run(run_key(info, WindowPolicy()))
    centres = [rng.standard_normal((ARTISTS, dim)).astype(np.float32) for dim in info.layer_dims]
    weights = np.linspace(0.3, 1.5, len(info.layer_dims))
    batch = []
    for i in range(n):
        artist = i % ARTISTS
        h = f"{i:032x}"
        store.upsert_track(Path(f"/synthetic/{artist}/{i}.flac"), h, 1, 0.0, {"duration": 30.0},
                           {"artist": f"Artist {artist}", "album": f"Album {artist}-{i % 3}", "title": f"Track {i}",
                            "genre": f"genre {artist % 7}", "composer": None})
        layers = [(w * c[artist] + rng.standard_normal(len(c[artist]))).astype(np.float32)
                  for c, w in zip(centres, weights, strict=True)]
        batch.append(TrackVectors(h, layers, [v[None] for v in layers], [0.0]))
        if len(batch) == 1000:
            store.write_vectors(run, batch)
            batch = []
    store.write_vectors(run, batch)
    store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, model: str | None, port: int) -> subprocess.Popen:
    code = ("import sys, uvicorn; from pathlib import Path; from mess.serve.app import create_app; "
            "uvicorn.run(create_app(Path(sys.argv[1]), sys.argv[2] or None), host='127.0.0.1', "
            "port=int(sys.argv[3]), log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code, str(store), model or "", str(port)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start within 60 s")


def request_params(rng: random.Random, ids: list[int], layer: str, model: str) -> tuple[int, dict]:
    n = rng.randrange(4)
    params = {"k": 10, "model": model, "exclude_same_artist": str(n % 2 == 1).lower()}
    if n >= 2:
        params["layer"] = layer
    return rng.choice(ids), params


def library_rate(store_path: Path, model: str, ids: list[int], layer: str, seconds: float) -> dict:
    """The same queries through the search library in this process, on one BLAS thread like the server."""
    store = FeatureStore(store_path, readonly=True)
    run = store.run(model)
    rng = random.Random(1)
    times = []
    with threadpool_limits(limits=1, user_api="blas"):
        for warm in (None, layer):  # the server is warmed up with the same two queries before it is timed
            similar_tracks(store, run, resolve_query(store, ids[0], run), 10, layer=warm)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            tid, params = request_params(rng, ids, layer, model)
            t = time.perf_counter()
            similar_tracks(store, run, resolve_query(store, tid, run), 10, layer=params.get("layer"),
                           exclude_same_artist=params["exclude_same_artist"] == "true")
            times.append(time.perf_counter() - t)
    store.close()
    return summary(times, 0, seconds)


async def http_load(base: str, model: str, ids: list[int], layer: str, seconds: float, concurrency: int) -> dict:
    """``concurrency`` clients each sending requests back to back until time is up."""
    times: list[float] = []
    errors: list[str] = []
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < end:
            tid, params = request_params(rng, ids, layer, model)
            t = time.perf_counter()
            try:
                response = await client.get(f"{base}/api/tracks/{tid}/similar", params=params)
                if response.status_code != 200 or not response.json()["results"]:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            times.append(time.perf_counter() - t)

    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(client_loop(client, seed) for seed in range(concurrency)))
    out = summary(times, len(errors), time.perf_counter() - started)
    if errors:
        out["first_error"] = errors[0]
    return out


def summary(times: list[float], errors: int, wall: float) -> dict:
    ms = np.array(times) * 1e3
    return {"requests": len(times), "errors": errors, "per_s": round(len(times) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="Existing store (default: build a synthetic one).")
    parser.add_argument("--model", help="Model of --store to query (default: the server's default).")
    parser.add_argument("--tracks", type=int, default=5000, help="Synthetic collection size.")
    parser.add_argument("--shape", choices=SHAPES, default="musicnn-msd", help="Model whose layers the synthetic "
                        "store copies.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each phase.")
    parser.add_argument("--concurrency", type=int, default=16, help="Requests in flight in the concurrent phase.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mess-serve-load-") as tmp:
        store_path = args.store
        if store_path is None:
            store_path = Path(tmp) / "store"
            info = model_info(args.shape)
            t = time.perf_counter()
            synthetic_store(store_path, args.tracks, info)
            print(f"synthetic store: {args.tracks} tracks, {args.shape}'s {len(info.layer_dims)} layers, dims "
                  f"{', '.join(map(str, info.layer_dims))} ({time.perf_counter() - t:.1f} s)")
        port = free_port()
        server = start_server(store_path, args.model, port)
        base = f"http://127.0.0.1:{port}"
        peak = [0]
        done = threading.Event()

        def sample_rss() -> None:
            proc = psutil.Process(server.pid)
            while not done.wait(0.2):
                peak[0] = max(peak[0], proc.memory_info().rss)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        try:
            health = httpx.get(f"{base}/api/health").json()
            model = args.model or health["default_model"]
            runs = httpx.get(f"{base}/api/runs").json()["runs"]
            layer = next(r for r in runs if r["model"] == model)["layers"][-1]
            listed = httpx.get(f"{base}/api/tracks", params={"model": model, "limit": 1000}).json()["items"]
            ids = [t["id"] for t in listed]
            for params in ({"k": 10, "model": model}, {"k": 10, "model": model, "layer": layer}):
                httpx.get(f"{base}/api/tracks/{ids[0]}/similar", params=params, timeout=120).raise_for_status()
            print(f"{health['tracks']} tracks, model {model}, queries on all layers / layer {layer}, k=10, "
                  f"{args.seconds:g} s per phase, {psutil.cpu_count()} CPUs, load average "
                  f"{psutil.getloadavg()[0]:.1f}")
            library = library_rate(store_path, model, ids, layer, args.seconds)
            sequential = asyncio.run(http_load(base, model, ids, layer, args.seconds, 1))
            concurrent = asyncio.run(http_load(base, model, ids, layer, args.seconds, args.concurrency))
        finally:
            done.set()
            sampler.join()
            server.terminate()
            server.wait(30)
    results = {"tracks": health["tracks"], "model": model, "concurrency": args.concurrency,
               "library": library, "http_sequential": sequential, "http_concurrent": concurrent,
               "concurrent_over_sequential": round(concurrent["per_s"] / sequential["per_s"], 2),
               "http_overhead_p50": round(sequential["p50_ms"] / library["p50_ms"], 2),
               "server_peak_rss_mib": round(peak[0] / 2**20, 1),
               "client_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(f"{'phase':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in (("library (no HTTP)", library), ("HTTP, 1 in flight", sequential),
                    (f"HTTP, {args.concurrency} in flight", concurrent)):
        print(f"{name:<22}{r['per_s']:>9}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['errors']:>8}")
    print(f"concurrent / sequential throughput: {results['concurrent_over_sequential']}x; "
          f"HTTP p50 / library p50: {results['http_overhead_p50']}x")
    print(f"load average at the end: {psutil.getloadavg()[0]:.1f}")
    print(f"peak RSS: server {results['server_peak_rss_mib']} MiB, "
          f"benchmark client {results['client_peak_rss_mib']} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    errors = sequential["errors"] + concurrent["errors"]
    if errors:
        raise SystemExit(f"{errors} errors, first: {concurrent.get('first_error') or sequential.get('first_error')}")


if __name__ == "__main__":
    main()
