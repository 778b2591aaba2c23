"""musicnn-family networks on ONNX Runtime: the same patch vectors, faster on a CPU than PyTorch.

ONNX Runtime's convolutions (MLAS) run musicnn's single-input-channel front-end and VGG's 3x3 convs
faster than oneDNN does through PyTorch on the same cores: 1.3x (musicnn) and 1.1x (VGG) on a quiet
2-core machine, 1.7-3x when other processes share it (same-process scratch comparisons; the repo's
``benchmarks/extract.py --onnx`` times the Essentia-named export of the same weights at 1.56x). The
network is exported once per weights (TorchScript exporter, opset 17, dynamic batch) and the graph is
kept in ``~/.cache/mess/onnx`` (``MESS_ONNX_CACHE``), named by a hash of the weights and the graph
version, written atomically so concurrent processes never read half a file. Outputs equal PyTorch's
up to float32 summation order (relative difference about 2e-6; test). Where ONNX Runtime or the
exporter is missing, or the export fails, :func:`patch_runner` returns None and PyTorch runs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mess.models.musicnn.network import N_FRAMES, N_MELS, MusicnnNetwork
from mess.models.musicnn.vgg import VggNetwork

Network = MusicnnNetwork | VggNetwork

GRAPH_VERSION = "patch-vectors-1"  # bump when the exported computation changes


def cache_dir() -> Path:
    """Where exported graphs are kept."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mess" / "onnx"
    return Path(os.environ.get("MESS_ONNX_CACHE", default))


class _PatchVectors(nn.Module):
    """``network.patch_vectors`` as a module with tuple output, for the exporter."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.network.patch_vectors(mel))


def _weights_key(network: Network) -> str:
    """A hash of every parameter and buffer, the torch version and :data:`GRAPH_VERSION`."""
    digest = hashlib.sha256(f"{GRAPH_VERSION} {torch.__version__} {type(network).__name__}".encode())
    for name, value in network.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _export(network: Network, n_outputs: int, path: Path) -> None:
    """Write the ONNX graph of ``network.patch_vectors`` (input ``mel`` [batch, 187, 96], outputs ``v0``..)."""
    names = [f"v{i}" for i in range(n_outputs)]
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and constant-folding notes
        warnings.simplefilter("ignore")
        torch.onnx.export(_PatchVectors(network).eval(), (torch.zeros(2, N_FRAMES, N_MELS),), str(path), dynamo=False,
                          input_names=["mel"], output_names=names, opset_version=17,
                          dynamic_axes={name: {0: "batch"} for name in ["mel", *names]})


def _graph(network: Network, n_outputs: int, path: Path) -> bytes:
    """The exported graph, from its cache ``path`` when a complete copy is there; else exported and cached."""
    try:
        return path.read_bytes()
    except OSError:
        pass
    cacheable = True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(dir=path.parent)  # same file system: the rename below is atomic
    except OSError:
        cacheable, scratch = False, tempfile.TemporaryDirectory()  # a read-only cache: export again next time
    with scratch as tmp:
        written = Path(tmp) / "graph.onnx"
        _export(network, n_outputs, written)
        graph = written.read_bytes()
        if cacheable:
            os.replace(written, path)  # readers see no file or the whole graph, never a part
    return graph


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


def patch_runner(network: Network, n_outputs: int) -> OrtPatchVectors | None:
    """An ONNX Runtime runner for ``network``'s patch vectors, or None where it cannot be built (PyTorch runs)."""
    try:
        path = cache_dir() / f"{_weights_key(network)}.onnx"
        graph = _graph(network, n_outputs, path)
        try:
            return OrtPatchVectors(graph, torch.get_num_threads())
        except Exception:  # a damaged cached graph: export afresh once
            path.unlink(missing_ok=True)
            return OrtPatchVectors(_graph(network, n_outputs, path), torch.get_num_threads())
    except Exception as exc:  # any exporter or runtime failure leaves the PyTorch path
        warnings.warn(f"musicnn runs on PyTorch: ONNX Runtime path unavailable ({type(exc).__name__}: {exc})",
                      RuntimeWarning, stacklevel=2)
        return None
