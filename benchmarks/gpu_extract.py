"""Inference throughput of a MERT-95M-shaped model through mess's MertModel wrapper, vs the FLOP limit.

Random weights in MERT-v1-95M's exact shape (HubertConfig: 768 hidden, 12 layers, 12 heads,
FFN 3072, 7x512 conv front end, group norm, 128/16 positional conv) are saved with
``save_pretrained`` and loaded by ``MertModel.from_pretrained``, so the same loading and
``embed`` code as a real run is measured (on CUDA, MertModel computes HuBERT's convolutions
as matrix products: ``mess.models.hubert_gemm``). For each precision (fp32; bf16/fp16 via
``mess.scale.gpu.with_precision``, which casts MERT's weights) and batch size, on 30 s windows at 24 kHz:

* windows/s through ``model.embed`` (numpy in, per-layer vectors out: host->device copy,
  normalisation on the device, forward, pooling) and through the bare network on device input
  (plus the share of the conv front end in it);
* tracks/s for a 3.5-min track (the windows the default policy takes);
* achieved TFLOP/s (FLOPs per window counted by torch's FlopCounterMode) and its ratio
  to a dense matmul of the same precision measured in the same run;
* peak device memory; the largest deviation of reduced-precision vectors from fp32
  (1 - cosine, worst layer); and what zero-padding a 10 s window to 30 s does to its
  vectors (why batches are grouped by exact window length instead of padded);
* with ``--pipeline N``, the real extraction end to end (``mess.extract.pipeline.extract``: N
  3.5-min audio files written first (Ogg Vorbis by default), inspected, decoded and resampled by
  ``--workers`` decoding processes, embedded at the last precision and batch size asked for,
  committed to a feature store): windows/s, TFLOP/s and its share of the measured dense matmul
  rate, against ``MertModel.embed`` alone at the same batch; the decoding rate of one core and
  the cores the GPU's rate needs; the wall time spent in ``embed`` and in commits;
* with ``--variants``, the bare network at the largest batch run other ways (autocast or bf16
  weights, torch's convolutions or the matrix-product ones, each change alone;
  ``--compile`` adds ``torch.compile``) with its 1 - cos against fp32, and a CUDA kernel profile.

    python benchmarks/gpu_extract.py --device cuda
    python benchmarks/gpu_extract.py --device cuda --precisions bf16 --batch-sizes 64 128 --variants \
        --pipeline 256 --workers 14 --format flac
    python benchmarks/gpu_extract.py --device cpu --batch-sizes 1 --repeats 1 --precisions fp32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.extract.prepare import decode_windows, inspect_file
from mess.models.base import EmbeddingModel
from mess.models.hubert_gemm import GemmFeatureEncoder, GemmPositionalConv
from mess.models.mert import MertModel
from mess.scale.gpu import with_precision
from mess.store import FeatureStore, Run, TrackVectors

SAMPLE_RATE = 24000
TRACK_SECONDS = 210.0  # a typical 3.5-min track
WINDOWS_PER_TRACK = len(WindowPolicy().starts(int(TRACK_SECONDS * SAMPLE_RATE), SAMPLE_RATE)[0])  # default policy
REFERENCE_TFLOP = 0.81  # the estimate per 30 s window


def mert_95m_config() -> HubertConfig:
    """MERT-v1-95M's network shape (HuBERT base with MERT's front end), for random weights."""
    return HubertConfig(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        conv_dim=(512,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=False,
        feat_extract_norm="group",
        feat_proj_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        do_stable_layer_norm=False,
    )


def build(folder: Path, device: str) -> MertModel:
    """Save random MERT-95M-shaped weights and load them through MertModel.from_pretrained."""
    torch.manual_seed(0)
    HubertModel(mert_95m_config()).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True).save_pretrained(folder)
    return MertModel.from_pretrained(str(folder), name="mert-95m-shaped", device=device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds_per_call(fn: Callable[[], object], device: str, repeats: int, warmup: int = 2) -> float:
    """Median wall seconds of ``fn`` after warm-up, synchronising the device around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_tflops(device: str, dtype: torch.dtype, n: int) -> float:
    """Measured dense matmul rate (TFLOP/s) at this precision: the ceiling to compare against."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    secs = seconds_per_call(lambda: a @ b, device, repeats=10)
    return 2 * n**3 / secs / 1e12


def network_input(model: MertModel, windows: np.ndarray) -> torch.Tensor:
    """The normalised device tensor MertModel.embed feeds its network."""
    values = model.processor(
        list(windows), sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=False
    )["input_values"]
    return values.to(model.device)


def flops_per_window(model: MertModel, windows: np.ndarray) -> float:
    """FLOPs of one window's forward pass, counted by torch (matmuls, convolutions, attention).

    Attention runs on the math backend while counting: the counter has no formula for
    the CPU flash kernel, which would drop the attention FLOPs on CPU.
    """
    counter = FlopCounterMode(display=False)
    # no_grad, not inference_mode: the weight-norm parametrisation fails under the counter in inference mode
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model.network(network_input(model, windows[:1]), output_hidden_states=True)
    return float(counter.get_total_flops())


def worst_cosine_gap(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """max over layers and rows of 1 - cosine(a, b)."""
    gaps = [
        1 - np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        for x, y in zip(a, b, strict=False)
    ]
    return float(np.max(gaps))


def measure(base: MertModel, args: argparse.Namespace, name: str, windows: np.ndarray) -> None:
    """Time every precision x batch size, check accuracy and padding, print the table."""
    cuda = args.device.startswith("cuda")
    flops = flops_per_window(base, windows)
    print(
        f"device: {name}; torch {torch.__version__}; window {args.seconds:g} s at {SAMPLE_RATE} Hz; "
        f"{flops / 1e12:.3f} TFLOP per window counted (issue's estimate {REFERENCE_TFLOP})"
    )

    reference = base.embed(windows[:4])
    results = []
    for precision in args.precisions:
        model = with_precision(base, precision)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        peak = matmul_tflops(args.device, dtype, 8192 if cuda else 2048)
        gap = worst_cosine_gap(model.embed(windows[:4]), reference)

        network = getattr(model, "network", base.network)  # MERT's own copy in bf16/fp16, or the fp32 one

        def autocast() -> torch.autocast:  # what with_precision's AutocastModel does; MERT casts its weights instead
            enabled = precision != "fp32" and network.dtype == torch.float32
            return torch.autocast(torch.device(args.device).type, dtype=dtype, enabled=enabled)

        for batch in args.batch_sizes:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            x = windows[:batch]
            values = network_input(base, x).to(network.dtype)

            def bare() -> None:
                with torch.inference_mode(), autocast():
                    network(values, output_hidden_states=True)

            def front_end() -> None:
                with torch.inference_mode(), autocast():
                    network.feature_extractor(values)

            embed_s = seconds_per_call(lambda: model.embed(x), args.device, args.repeats)
            net_s = seconds_per_call(bare, args.device, args.repeats)
            conv_s = seconds_per_call(front_end, args.device, args.repeats)
            row = {
                "precision": precision,
                "batch": batch,
                "embed_windows_per_s": batch / embed_s,
                "network_windows_per_s": batch / net_s,
                "tracks_per_s": batch / embed_s / WINDOWS_PER_TRACK,
                "embed_tflops": batch * flops / embed_s / 1e12,
                "network_tflops": batch * flops / net_s / 1e12,
                "conv_front_end_share": conv_s / net_s,
                "matmul_peak_tflops": peak,
                "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                "vs_fp32_max_1_minus_cos": gap,
            }
            results.append(row)
            print(json.dumps(row), flush=True)

    short = windows[:1, : windows.shape[1] // 3]
    padded = np.pad(short, ((0, 0), (0, windows.shape[1] - short.shape[1])))
    padding_gap = worst_cosine_gap(base.embed(padded), base.embed(short))

    print(f"\n{name}: MERT-95M-shaped, {args.seconds:g} s windows, {flops / 1e12:.3f} TFLOP/window")
    print(
        "win/s: MertModel.embed (numpy in, vectors out, normalised on the device);"
        " net: network forward only; conv %: share of the forward in the conv front end"
    )
    print(
        f"{'prec':5s}{'batch':>6s}{'win/s':>8s}{'net':>8s}{'tracks/s':>9s}{'TFLOP/s':>8s}"
        f"{'net TF/s':>9s}{'% matmul':>9s}{'conv %':>7s}{'mem GiB':>8s}{'1-cos':>9s}"
    )
    for r in results:
        mem = f"{r['peak_mem_gib']:8.1f}" if r["peak_mem_gib"] is not None else f"{'-':>8s}"
        print(
            f"{r['precision']:5s}{r['batch']:6d}{r['embed_windows_per_s']:8.2f}"
            f"{r['network_windows_per_s']:8.2f}{r['tracks_per_s']:9.2f}{r['embed_tflops']:8.3g}"
            f"{r['network_tflops']:9.3g}{100 * r['network_tflops'] / r['matmul_peak_tflops']:8.1f}%"
            f"{100 * r['conv_front_end_share']:6.0f}%{mem}{r['vs_fp32_max_1_minus_cos']:9.1e}"
        )
    for precision in args.precisions:
        peak = next(r["matmul_peak_tflops"] for r in results if r["precision"] == precision)
        print(
            f"measured dense matmul ceiling {precision}: {peak:.3g} TFLOP/s "
            f"-> FLOP limit {peak * 1e12 / flops:.1f} windows/s"
        )
    print(
        f"zero-padding a {args.seconds / 3:g} s window to {args.seconds:g} s changes its vectors: "
        f"worst layer 1-cos = {padding_gap:.3f} (fp32)"
    )
    print(f"peak host RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": name,
                    "torch": torch.__version__,
                    "flops_per_window": flops,
                    "padding_gap": padding_gap,
                    "rows": results,
                },
                indent=1,
            )
        )


def pooled(network: torch.nn.Module, values: torch.Tensor, dtype: torch.dtype | None) -> list[torch.Tensor]:
    """Per-layer time means of ``network`` on ``values``: under bf16 autocast when ``dtype`` is None, else with the
    input cast to ``dtype`` (a network whose weights are in it)."""
    device_type = values.device.type
    with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype is None):
        out = network(values if dtype is None else values.to(dtype), output_hidden_states=True)
        return [h.float().mean(dim=1) for h in out.hidden_states]


def variants(base: MertModel, args: argparse.Namespace, windows: np.ndarray, flops: float, folder: Path) -> None:
    """The bare network at the largest batch, run in ways that give the same vectors: what each costs."""
    import copy

    batch = args.batch_sizes[-1]
    values = network_input(base, windows[:batch])
    peak = matmul_tflops(args.device, torch.bfloat16, 8192 if args.device.startswith("cuda") else 2048)
    original = HubertModel.from_pretrained(folder).eval().to(args.device)  # torch's own convolutions
    with torch.inference_mode():
        exact = [h.mean(dim=1) for h in original(values, output_hidden_states=True).hidden_states]
    attention = base.network.config._attn_implementation
    print(f"\nvariants of the network forward, batch {batch} (attention: {attention}); 1-cos against fp32 with "
          "torch's convolutions")

    def bf16(network: torch.nn.Module, front: bool = False, pos: bool = False) -> torch.nn.Module:
        network = copy.deepcopy(network).to(torch.bfloat16)
        assert isinstance(network, HubertModel)  # the original and MertModel's network
        if front:
            network.set_submodule("feature_extractor", GemmFeatureEncoder(network.feature_extractor))
        if pos:
            network.set_submodule("encoder.pos_conv_embed", GemmPositionalConv(network.encoder.pos_conv_embed))
        return network

    def compiled(network: torch.nn.Module) -> torch.nn.Module:
        """``torch.compile`` of a module is an OptimizedModule (typed as any callable)."""
        out = torch.compile(network)
        assert isinstance(out, torch.nn.Module)
        return out

    plans: list[tuple[str, Callable[[], torch.nn.Module], torch.dtype | None]] = [
        ("autocast, torch's convs (before)", lambda: original, None),
        ("bf16 weights, torch's convs", lambda: bf16(original), torch.bfloat16),
        ("bf16 weights, gemm encoder only", lambda: bf16(original, front=True), torch.bfloat16),
        ("bf16 weights, gemm pos conv only", lambda: bf16(original, pos=True), torch.bfloat16),
        ("autocast, gemm convs", lambda: base.network, None),
        ("bf16 weights, gemm convs (now)", lambda: bf16(base.network), torch.bfloat16),
    ]
    if args.compile:
        plans.append(("bf16, gemm convs, torch.compile", lambda: compiled(bf16(base.network)), torch.bfloat16))
    for label, make, dtype in plans:
        try:
            network = make()
            start = time.perf_counter()
            got = pooled(network, values, dtype)
            sync(args.device)
            first = time.perf_counter() - start
            gap = max(float((1 - torch.nn.functional.cosine_similarity(a.float(), b, dim=1)).max())
                      for a, b in zip(got, exact, strict=True))
            secs = seconds_per_call(lambda: pooled(network, values, dtype), args.device, args.repeats)
        except Exception as exc:  # noqa: BLE001 -- report the variant that failed, measure the rest
            print(f"  {label}: failed ({type(exc).__name__}: {str(exc)[:300]})", flush=True)
            continue
        print(
            f"  {label:34s} {batch / secs:8.1f} windows/s  {batch * flops / secs / 1e12:6.1f} TFLOP/s = "
            f"{100 * batch * flops / secs / 1e12 / peak:5.1f}% of bf16 matmul ({peak:.0f})  first call {first:5.1f} s  "
            f"1-cos {gap:.1e}",
            flush=True,
        )
    if args.device.startswith("cuda"):
        profile(bf16(base.network), values)


def profile(network: torch.nn.Module, values: torch.Tensor) -> None:
    """The CUDA kernels that take a bf16-weight forward's time, by share."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    pooled(network, values, torch.bfloat16)
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        pooled(network, values, torch.bfloat16)
        sync("cuda")
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    print(f"bf16 weights, gemm convs, batch {values.shape[0]}: {total / 1e3:.1f} ms of kernels; the largest:")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:15]:
        print(f"  {100 * e.self_device_time_total / total:5.1f}%  {e.count:5d}x  {e.key[:110]}")


def write_track(path: Path, seed: int, seconds: float = TRACK_SECONDS) -> None:
    """A stereo 44.1 kHz file of ``seconds``: chords changing every 2 s over noise, different per seed
    (the content does not matter for speed; the codec's decoding cost does). Vorbis is written in 1 s blocks."""
    rng = np.random.default_rng(seed)
    rate = 44100
    with sf.SoundFile(path, "w", samplerate=rate, channels=2) as f:
        for second in range(int(seconds)):
            t = np.arange(rate) / rate + second
            pitches = 110 * 2 ** (rng.integers(0, 36, size=3) / 12)
            tone = sum(np.sin(2 * np.pi * p * t) for p in pitches) / 6
            f.write(np.stack([tone, np.roll(tone, 50)], axis=1) + 0.02 * rng.standard_normal((rate, 2)))


class TimedModel(EmbeddingModel):
    """A model that adds up the seconds its ``embed`` takes (the numpy-in, vectors-out call)."""

    def __init__(self, inner: EmbeddingModel) -> None:
        self.inner, self.info, self.seconds = inner, inner.info, 0.0

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        start = time.perf_counter()
        try:
            return self.inner.embed(windows)
        finally:
            self.seconds += time.perf_counter() - start


class TimedStore(FeatureStore):
    """A feature store that adds up the seconds its vector commits take (on the writer thread)."""

    seconds = 0.0
    commits = 0

    def write_vectors(self, run: Run, items: Sequence[TrackVectors]) -> None:
        start = time.perf_counter()
        try:
            super().write_vectors(run, items)
        finally:
            self.seconds += time.perf_counter() - start
            self.commits += 1


def decode_rate(paths: list[Path], policy: WindowPolicy) -> float:
    """Audio seconds analysed per second of one core: inspection (hash, tags) and decoding of the windows."""
    start = time.perf_counter()
    seconds = 0.0
    for path in paths:
        seconds += decode_windows(inspect_file(path), SAMPLE_RATE, policy).audio.size / SAMPLE_RATE
    return seconds / (time.perf_counter() - start)


def pipeline(base: MertModel, args: argparse.Namespace, folder: Path) -> None:
    """The real extraction of ``args.pipeline`` written files, against ``embed`` alone at the same batch."""
    precision, batch = args.precisions[-1], args.batch_sizes[-1]
    model = with_precision(base, precision)
    paths = [folder / f"track{i:04d}.{args.format}" for i in range(args.pipeline)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(write_track, paths, range(len(paths)), [args.track_seconds] * len(paths)))
    print(f"\nwrote {len(paths)} {args.track_seconds:g} s {args.format} files in {time.perf_counter() - start:.0f} s")
    policy = WindowPolicy()
    per_core = decode_rate(paths[:8], policy)
    windows = (0.1 * np.random.default_rng(1).standard_normal((batch, int(policy.window_seconds * SAMPLE_RATE))))
    windows = windows.astype(np.float32)
    flops = flops_per_window(base, windows)
    embed_rate = batch / seconds_per_call(lambda: model.embed(windows), args.device, args.repeats)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    peak = matmul_tflops(args.device, dtype, 8192 if args.device.startswith("cuda") else 2048)
    cores = embed_rate * policy.window_seconds / per_core
    print(
        f"decoding ({args.format}, 44.1 kHz stereo -> {SAMPLE_RATE} Hz mono, the windows alone): "
        f"{per_core:.0f} audio-s/s per core; embed's {embed_rate:.1f} windows/s need {cores:.1f} cores"
    )
    timed, store = TimedModel(model), TimedStore(folder / "store")
    summary = extract(store, paths, timed, policy, batch_size=batch, workers=args.workers)
    done = summary.audio_seconds / policy.window_seconds  # full windows: every file is longer than one
    rate = done / summary.wall_seconds
    print(
        f"pipeline ({precision}, batch {batch}, {args.workers} decoding processes): {summary.done} files, "
        f"{len(summary.failed)} failed, {done:.0f} windows in {summary.wall_seconds:.1f} s = {rate:.2f} windows/s, "
        f"{rate * policy.window_seconds / policy.analysed_seconds(TRACK_SECONDS):.2f} 3.5-min tracks/s; "
        f"{rate * flops / 1e12:.3g} TFLOP/s = "
        f"{100 * rate * flops / 1e12 / peak:.1f}% of the measured {precision} matmul rate ({peak:.3g} TFLOP/s); "
        f"embed alone at this batch {embed_rate:.2f} windows/s: the pipeline keeps {100 * rate / embed_rate:.0f}% of it"
    )
    print(
        f"  of its {summary.wall_seconds:.1f} s: embed {timed.seconds:.1f} s "
        f"({100 * timed.seconds / summary.wall_seconds:.0f}%), the rest waiting on decoding or bookkeeping; "
        f"{store.commits} commits took {store.seconds:.1f} s on the writer thread"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--variants", action="store_true",
                        help="also time the bf16 forward run other ways (cudnn.benchmark, bf16 weights) and profile it")
    parser.add_argument("--compile", action="store_true", help="with --variants, the torch.compile variants too")
    parser.add_argument("--skip-table", action="store_true", help="skip the precision x batch table")
    parser.add_argument("--pipeline", type=int, default=0, help="also extract this many written 3.5-min files")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2),
                        help="decoding processes for --pipeline")
    parser.add_argument("--format", default="ogg", choices=["ogg", "flac"], help="the files --pipeline writes")
    parser.add_argument("--track-seconds", type=float, default=TRACK_SECONDS, help="their length")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device; "
                     "run it on a GPU machine, or with --device cpu")
    name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    rng = np.random.default_rng(0)
    windows = (0.1 * rng.standard_normal((max(args.batch_sizes), int(args.seconds * SAMPLE_RATE)))).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        base = build(Path(tmp) / "model", args.device)
        if not args.skip_table:
            measure(base, args, name, windows)
        if args.pipeline:
            pipeline(base, args, Path(tmp))
        if args.variants:
            variants(base, args, windows, flops_per_window(base, windows), Path(tmp) / "model")


if __name__ == "__main__":
    main()
