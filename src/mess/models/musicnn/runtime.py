"""musicnn-family networks on ONNX Runtime: the same patch vectors, faster on a CPU than PyTorch.

ONNX Runtime's convolutions (MLAS) run musicnn's single-input-channel front-end and VGG's 3x3 convs
faster than oneDNN does through PyTorch on the same cores: 1.3x (musicnn) and 1.1x (VGG) on a quiet
2-core machine, 1.7-3x when other processes share it (same-process scratch comparisons; the repo's
``benchmarks/extract.py --onnx`` times the Essentia-named export of the same weights at 1.56x). The
network is exported once per weights (TorchScript exporter, opset 17, dynamic batch) and the graph is
kept in ``~/.cache/mess/onnx`` (``MESS_ONNX_CACHE``), named by a hash of the weights, the networks' source,
the torch version and the graph version, written atomically so concurrent processes never read half a
file. PyTorch is imported only to export: with the graph cached, a process embeds without it (about
180 MB less). Outputs equal PyTorch's up to float32 summation order (relative difference about 2e-6;
test). Where ONNX Runtime or the exporter is missing, or the export fails, :func:`patch_runner` returns
None and PyTorch runs.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mess.models.musicnn.shapes import N_FRAMES, N_MELS

if TYPE_CHECKING:
    from mess.models.musicnn.network import MusicnnNetwork
    from mess.models.musicnn.vgg import VggNetwork

    Network = MusicnnNetwork | VggNetwork

GRAPH_VERSION = "patch-vectors-3"  # bump when the cache key's recipe changes (3: underflowing weights zeroed)
# weights nearer zero than this are set to 0 in the exported graph: musicnn's msd checkpoints switch channels off
# with batch-norm scales of ~1e-36, and the folded weights' products with activations land among float32's
# denormals, which x86 cores compute slowly (benchmarks/extract.py on an Intel Xeon: vgg-msd's efficiency 0.42 ->
# 0.51; outputs unchanged)
UNDERFLOW = 1e-30
NETWORK_SOURCES = ("network.py", "vgg.py")  # the exported computation: their text is part of the key


def cache_dir() -> Path:
    """Where exported graphs are kept."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mess" / "onnx"
    return Path(os.environ.get("MESS_ONNX_CACHE", default))


def weights_key(kind: str, tensors: Mapping[str, np.ndarray]) -> str:
    """A hash of named weight arrays, the network ``kind``, the source of the networks' modules (an edit to
    the computation names a new graph, bumped or not), the torch version (its exporter writes the graph)
    and :data:`GRAPH_VERSION`: the cached graph's name."""
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "none"
    digest = hashlib.sha256(f"{GRAPH_VERSION} {torch_version} {kind}".encode())
    for source in NETWORK_SOURCES:
        try:
            digest.update((Path(__file__).parent / source).read_bytes())
        except OSError:  # an install without sources (bytecode only): the package's version stands in
            digest.update(version("mess").encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensors[name]).tobytes())
    return digest.hexdigest()[:32]


def network_key(network: Network) -> str:
    """:func:`weights_key` of a PyTorch network's parameters and buffers."""
    state = {name: value.detach().cpu().numpy() for name, value in network.state_dict().items()}
    return weights_key(type(network).__name__, state)


def _export(network: Network, n_outputs: int, path: Path) -> None:
    """Write the ONNX graph of ``network.patch_vectors`` (input ``mel`` [batch, 187, 96], outputs ``v0``..)."""
    import torch

    class PatchVectors(torch.nn.Module):  # patch_vectors as a module with tuple output, for the exporter
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(self.network.patch_vectors(mel))

    names = [f"v{i}" for i in range(n_outputs)]
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and constant-folding notes
        warnings.simplefilter("ignore")
        torch.onnx.export(PatchVectors().eval(), (torch.zeros(2, N_FRAMES, N_MELS),), str(path), dynamo=False,
                          input_names=["mel"], output_names=names, opset_version=17,
                          dynamic_axes={name: {0: "batch"} for name in ["mel", *names]})
    _zero_underflowing(path)


def _zero_underflowing(path: Path) -> None:
    """Every float weight of the graph at ``path`` nearer zero than :data:`UNDERFLOW` set to 0, in place (their
    products with activations are below float32's resolution of any output, and slow as denormals)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for init in model.graph.initializer:
        weights = numpy_helper.to_array(init)
        tiny = (np.abs(weights) < UNDERFLOW) & (weights != 0) if weights.dtype.kind == "f" else None
        if tiny is not None and tiny.any():
            init.CopyFrom(numpy_helper.from_array(np.where(tiny, 0, weights).astype(weights.dtype), init.name))
    onnx.save(model, str(path))


def _graph(build: Callable[[], Network], n_outputs: int, path: Path) -> bytes:
    """The exported graph, from its cache ``path`` when a complete copy is there; else the network ``build``
    makes is exported and cached."""
    return cached_file(path, lambda out: _export(build(), n_outputs, out))


def cached_file(path: Path, make: Callable[[Path], None]) -> bytes:
    """The bytes of the cache file ``path``; where it is missing, ``make`` writes it to a scratch path first,
    renamed into place (readers see no file or the whole file, never a part). A read-only cache: made anew."""
    try:
        return path.read_bytes()
    except OSError:
        pass
    cacheable = True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(dir=path.parent)  # same file system: the rename below is atomic
    except OSError:
        cacheable, scratch = False, tempfile.TemporaryDirectory()
    with scratch as tmp:
        written = Path(tmp) / path.name
        make(written)
        data = written.read_bytes()
        if cacheable:
            os.replace(written, path)
    return data


def ort_threads() -> int:
    """PyTorch's intra-op thread count where PyTorch is loaded (one setting governs both), else 0:
    ONNX Runtime's own default, one thread per physical core."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 0


class OrtPatchVectors:
    """Runs a network's ``patch_vectors`` on ONNX Runtime: log-mel patches [b, 187, 96] -> per-layer [b, dim]."""

    def __init__(self, graph: bytes, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # leave idle cores to decoding
        options.log_severity_level = 3
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, mel: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {"mel": np.ascontiguousarray(mel, dtype=np.float32)}))


def patch_runner(key: str, build: Callable[[], Network], n_outputs: int) -> OrtPatchVectors | None:
    """An ONNX Runtime runner for the weights named ``key`` (see :func:`weights_key`), or None where it cannot
    be built (PyTorch runs). ``build`` makes the PyTorch network; it is called only when no graph is cached."""
    try:
        path = cache_dir() / f"{key}.onnx"
        graph = _graph(build, n_outputs, path)
        try:
            return OrtPatchVectors(graph, ort_threads())
        except Exception:  # a damaged cached graph: export afresh once
            path.unlink(missing_ok=True)
            return OrtPatchVectors(_graph(build, n_outputs, path), ort_threads())
    except Exception as exc:  # any exporter or runtime failure leaves the PyTorch path
        warnings.warn(f"musicnn runs on PyTorch: ONNX Runtime path unavailable ({type(exc).__name__}: {exc})",
                      RuntimeWarning, stacklevel=2)
        return None
