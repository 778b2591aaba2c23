"""musicnn and its VGG baseline (MSD or MTT) as an :class:`EmbeddingModel`, on ONNX Runtime or PyTorch."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mess.audio.spectrum import stft
from mess.models import filters
from mess.models.base import EmbeddingModel, ModelInfo
from mess.models.musicnn.checkpoint import read_checkpoint
from mess.models.musicnn.runtime import network_key, patch_runner, weights_key
from mess.models.musicnn.shapes import FRAME_LAYERS, N_FRAMES, N_MELS, PATCH_LAYERS, VGG_LAYERS

if TYPE_CHECKING:
    from mess.models.musicnn.network import MusicnnNetwork
    from mess.models.musicnn.vgg import VggNetwork

SAMPLE_RATE = 16000
FFT_SIZE = 512
HOP = 256
MIN_SAMPLES = (N_FRAMES - 1) * HOP  # shortest input giving one 187-frame (~3 s) patch
PATCHES_PER_CHUNK = 2  # PyTorch: fastest measured (1.2x chunks of 4); the timbral conv output is 9 MB a patch
ORT_PATCHES_PER_CHUNK = 2  # ONNX Runtime: as fast as 8 within noise; 8 raised a 2-hour file's peak RSS to 779 MB
RUNTIMES = ("onnxruntime", "torch")
INSTALL_HINT = "pip install --no-deps musicnn==0.1.0"
ARCHITECTURES = {  # arch -> (layer names, layer dims)
    "musicnn": (FRAME_LAYERS + PATCH_LAYERS, (408, 153, 64, 64, 64, 753, 753, 200, 50)),
    "vgg": (VGG_LAYERS, (128, 128, 128, 128, 256, 50)),
}


def musicnn_info(dataset: str, arch: str = "musicnn") -> ModelInfo:
    """The info of musicnn's ``arch`` trained on ``dataset`` (MSD or MTT), without reading its weights."""
    layer_names, layer_dims = ARCHITECTURES[arch]
    return ModelInfo(name=f"musicnn-{dataset.lower()}" if arch == "musicnn" else f"musicnn-{arch}-{dataset.lower()}",
                     revision="musicnn-0.1.0", sample_rate=SAMPLE_RATE, layer_names=layer_names,
                     layer_dims=layer_dims, licence="ISC")


def musicnn_package_dir() -> Path:
    """Folder of the installed ``musicnn`` package (holds the TF1 checkpoints and labels)."""
    try:
        return Path(str(importlib.resources.files("musicnn")))
    except ModuleNotFoundError as err:
        raise ImportError(f"the musicnn weights come from the musicnn package: {INSTALL_HINT}") from err


def checkpoint_prefix(dataset: str, arch: str = "musicnn") -> Path:
    """Prefix of the ``{dataset}_{arch}`` checkpoint; its files are named ``.index`` etc."""
    folder = musicnn_package_dir() / f"{dataset}_{arch}"
    if not (folder / ".index").is_file():
        raise FileNotFoundError(f"no {arch} checkpoint in {folder}; reinstall with: {INSTALL_HINT}")
    return folder


def mel_basis() -> np.ndarray:
    """musicnn's 96 Slaney mel bands for 16 kHz and n_fft 512 (librosa's filters, kept on disk once computed)."""
    return filters.mel_basis(SAMPLE_RATE, FFT_SIZE, N_MELS)


def _power_spectrogram(windows: np.ndarray) -> np.ndarray:
    """``abs(librosa.stft(windows, n_fft=512, hop_length=256)) ** 2`` as [batch, 257, frames] float32.

    The same arithmetic as librosa (float64 FFT stored as complex64), so the same values; it
    spares the first call's ~5 s and ~200 MB of numba compilation.
    """
    return (np.abs(stft(windows, FFT_SIZE, HOP)) ** 2).swapaxes(-1, -2)


def log_mel(windows: np.ndarray) -> np.ndarray:
    """musicnn's input for a batch of 16 kHz windows: [batch, frames, 96] float32.

    Reproduces ``musicnn.extractor.batch_data``: librosa power mel, cast to float16, then
    ``log10(10000 * x + 1)`` in float16. Where float16 overflows (loud audio, where
    musicnn itself yields inf) the same formula is evaluated in float32 instead.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # samples far outside [-1, 1]: inf, refused by the caller
        power = _power_spectrogram(np.atleast_2d(windows))
        mel = np.einsum("...ft,mf->...mt", power, mel_basis(), optimize=True).swapaxes(-1, -2)  # as librosa
    with np.errstate(over="ignore"):
        half = np.log10(10000 * mel.astype(np.float16) + 1).astype(np.float32)
    overflow = ~np.isfinite(half)
    half[overflow] = np.log10(10000 * mel[overflow].astype(np.float32) + 1)
    return half


def repeat_pad(windows: np.ndarray, length: int) -> np.ndarray:
    """Tile each window cyclically up to ``length`` samples (musicnn trained with repeat-pad)."""
    if windows.shape[1] == 0:
        raise ValueError("musicnn cannot embed empty windows")
    if windows.shape[1] >= length:
        return windows
    reps = -(-length // windows.shape[1])
    return np.tile(windows, (1, reps))[:, :length]


def patches(mel: np.ndarray) -> np.ndarray:
    """Non-overlapping 187-frame patches of [batch, frames, 96] -> [batch, n_patches, 187, 96].

    Trailing frames that do not fill a patch are dropped, as in musicnn's extractor.
    """
    n = mel.shape[1] // N_FRAMES
    return mel[:, : n * N_FRAMES].reshape(mel.shape[0], n, N_FRAMES, N_MELS)


def input_patches(windows: np.ndarray) -> np.ndarray:
    """musicnn's input for 16 kHz windows [batch, samples]: repeat-padded log-mel patches [batch, n, 187, 96]."""
    return patches(log_mel(repeat_pad(np.asarray(windows, dtype=np.float32), MIN_SAMPLES)))


def _network_class(arch: str) -> type[MusicnnNetwork] | type[VggNetwork]:
    """The PyTorch class of an architecture (imported on demand: PyTorch is loaded only when one is built)."""
    if arch == "vgg":
        from mess.models.musicnn.vgg import VggNetwork

        return VggNetwork
    from mess.models.musicnn.network import MusicnnNetwork

    return MusicnnNetwork


class MusicnnModel(EmbeddingModel):
    """musicnn or its VGG baseline, trained on MSD or MagnaTagATune; one vector per layer.

    Every layer is first reduced to one vector per 3 s patch (musicnn's frame-level
    timbral, temporal and cnn1-3 averaged over time; VGG's pool1-4 maps over time and
    frequency; pool5 is the flat 256-d input of VGG's output layer), then averaged over
    patches. Windows shorter than one patch (:data:`MIN_SAMPLES`, about 3 s) are repeat-padded to it.
    """

    def __init__(self, dataset: str = "MSD", device: str = "cpu", arch: str = "musicnn",
                 runtime: str = "onnxruntime") -> None:
        """``runtime``: "onnxruntime" runs the network on ONNX Runtime on a CPU where it can (PyTorch otherwise,
        and on other devices; see :mod:`mess.models.musicnn.runtime`); "torch" always runs PyTorch."""
        dataset = dataset.upper()
        if runtime not in RUNTIMES:
            raise ValueError(f"musicnn runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if dataset not in ("MSD", "MTT"):
            raise ValueError(f"musicnn dataset must be 'MSD' or 'MTT', got {dataset!r}")
        if arch not in ARCHITECTURES:
            raise ValueError(f"musicnn architecture must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
        self.dataset = dataset
        self.arch = arch
        self.device = device
        self.runtime = runtime
        self._tensors = read_checkpoint(f"{checkpoint_prefix(dataset, arch)}/")
        self._network: MusicnnNetwork | VggNetwork | None = None
        self.runner = patch_runner(weights_key(arch, self._tensors), lambda: self.network,
                                   len(ARCHITECTURES[arch][0])) if self._on_onnx else None
        if self.runner is None:  # PyTorch runs: build the network now, so a bad device fails here, not per file
            self._network = self._build_network()
        self.info = musicnn_info(dataset, arch)

    def _build_network(self) -> MusicnnNetwork | VggNetwork:
        import torch

        with torch.inference_mode(False):  # ordinary parameters, even when first used inside inference mode
            network = _network_class(self.arch)()
            network.load_tf_weights(self._tensors)
            return network.to(self.device, memory_format=network.memory_format)  # type: ignore[call-overload]

    @property
    def _on_onnx(self) -> bool:
        return self._onnx_on(self.device)

    def _onnx_on(self, device: str) -> bool:
        """Whether this runtime setting tries ONNX Runtime on ``device`` (a CPU only)."""
        return self.runtime == "onnxruntime" and device.split(":")[0] == "cpu"

    def runs_on_torch(self, device: str | None = None) -> bool:
        """Whether :meth:`embed` runs on PyTorch (where ``torch.autocast`` applies), not ONNX Runtime: this model
        (``runner`` is None: a GPU, ``runtime="torch"``, or no ONNX Runtime path), or with ``device``, a copy of it
        loaded there (ONNX Runtime on a CPU; a Ray driver's CPU copy stands for workers on a GPU)."""
        if device is None or device == self.device:
            return self.runner is None
        return not self._onnx_on(device)

    @property
    def network(self) -> MusicnnNetwork | VggNetwork:
        """The PyTorch network, built from the checkpoint on first use (ONNX Runtime needs it only to export
        the graph once); assigning one (a random-init control, say) also rebuilds the ONNX Runtime runner."""
        if self._network is None:
            self._network = self._build_network()
        return self._network

    @network.setter
    def network(self, network: MusicnnNetwork | VggNetwork) -> None:
        self._network = network
        self.runner = patch_runner(network_key(network), lambda: network,
                                   len(ARCHITECTURES[self.arch][0])) if self._on_onnx else None

    @property
    def tag_names(self) -> tuple[str, ...]:
        """The 50 tag labels, in taggram order."""
        from musicnn import configuration

        return tuple(configuration.MTT_LABELS if self.dataset == "MTT" else configuration.MSD_LABELS)

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        """See :meth:`EmbeddingModel.embed`."""
        return self.embed_patches(input_patches(windows))

    def embed_patches(self, batch: np.ndarray) -> list[np.ndarray]:
        """Per-layer vectors [batch, dim] of windows given as log-mel patches [batch, n_patches, 187, 96]."""
        if self.runner is not None:
            flat = batch.reshape(-1, N_FRAMES, N_MELS)
            step = ORT_PATCHES_PER_CHUNK
            chunks = [self.runner(flat[i : i + step]) for i in range(0, len(flat), step)]
            layers = [np.concatenate([chunk[k] for chunk in chunks]) for k in range(len(self.info.layer_names))]
            return [layer.reshape(batch.shape[0], batch.shape[1], -1).mean(axis=1) for layer in layers]
        return self._torch_vectors(batch)

    def _torch_vectors(self, batch: np.ndarray) -> list[np.ndarray]:
        """:meth:`embed_patches` on PyTorch."""
        import torch

        flat = torch.from_numpy(batch.reshape(-1, N_FRAMES, N_MELS))
        parts: list[list[torch.Tensor]] = [[] for _ in self.info.layer_names]
        with torch.inference_mode():
            for chunk in flat.split(PATCHES_PER_CHUNK):
                for part, value in zip(parts, self.network.patch_vectors(chunk.to(self.device)), strict=False):
                    part.append(value.float().cpu())
            return [torch.cat(part).view(batch.shape[0], batch.shape[1], -1).mean(dim=1).numpy() for part in parts]

    def tags(self, window: np.ndarray, top_k: int | None = None) -> list[tuple[str, float]]:
        """Tags of one mono 16 kHz window with their mean sigmoid score, best first."""
        taggram = self.embed(np.asarray(window, dtype=np.float32)[None])[-1][0]
        order = np.argsort(-taggram, kind="stable")[:top_k]
        return [(self.tag_names[i], float(taggram[i])) for i in order]
