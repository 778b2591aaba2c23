"""A user-supplied Essentia-style ONNX model run with ONNX Runtime as an :class:`EmbeddingModel`.

Every output of the graph is a layer: patch-level outputs [batch, dim] are averaged over
a window's patches, frame-level outputs [batch, time, dim] over time first. Outputs the
metadata describes are named after their description (``embeddings``, ``activations``),
the others after their tensor name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mess.models.base import EmbeddingModel, ModelInfo
from mess.models.essentia.fetch import external_places, file_revision
from mess.models.essentia.frontends import SAMPLE_RATE, patches
from mess.models.essentia.metadata import EssentiaModelError, ModelMetadata, graph_name, layer_name, read_metadata
from mess.models.essentia.presets import Preset, detect_preset, get_preset

if TYPE_CHECKING:
    import onnxruntime as ort

DYNAMIC_BATCH = 32  # patches per run when the graph's batch axis is free


class OnnxModel(EmbeddingModel):
    """An Essentia model in ONNX form, fed by its preset's front end."""

    def __init__(self, path: Path, preset: str | None = None, device: str = "cpu", threads: int = 0) -> None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise EssentiaModelError(f"no such model file: {path}")
        self.metadata = read_metadata(path)
        self.preset = get_preset(preset) if preset else detect_preset(path.stem, self.metadata)
        if self.metadata.sample_rate != SAMPLE_RATE:
            raise EssentiaModelError(f"{self.metadata.path.name} says {self.metadata.sample_rate} Hz; "
                                     f"preset {self.preset.name} feeds {SAMPLE_RATE} Hz")
        # absolute, links and '..' kept as the system reads them: a link's name and the JSON beside it are what the
        # model was read by (the file a link points to may have neither: queries, loading it, found no metadata)
        self.path = path.absolute()
        self.device = device
        self.threads = threads
        self.session = _open_session(path, device, threads)
        self.input_name, self.batch = _check_input(self.session, self.metadata, self.preset, path.name)
        self.output_names = [o.name for o in self.session.get_outputs()]
        try:  # two patches: an output not of one row per patch (a batch mean, a constant) shows here, not per file
            probe = self._run(np.zeros((2, self.preset.patch_frames, self.preset.bands), np.float32))
        except EssentiaModelError as exc:
            raise EssentiaModelError(f"{path.name}: {exc}") from None
        except Exception as exc:  # onnxruntime's own exception types: a graph that cannot take the preset's patches
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EssentiaModelError(f"{path.name} fails on preset {self.preset.name}'s patches of "
                                     f"{self.preset.patch_frames} frames x {self.preset.bands} bands: "
                                     f"{reason[:200]}") from exc
        dims = [o.shape[-1] for o in probe]
        self.info = ModelInfo(
            name=path.stem, revision=_revision(path, self.preset, self.metadata), sample_rate=SAMPLE_RATE,
            layer_names=_layer_names(self.output_names, self.metadata), layer_dims=tuple(int(d) for d in dims),
            licence=self.metadata.licence or self.preset.licence)

    def source(self) -> dict[str, str]:
        """The file's absolute path, the preset used and the revision: what loads this run's model again."""
        return {"kind": "onnx", "path": str(self.path), "preset": self.preset.name, "revision": self.info.revision}

    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime execution providers the session runs on, in priority order."""
        return self.session.get_providers()

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        """See :meth:`EmbeddingModel.embed`; windows shorter than one patch are repeat-padded."""
        from mess.models.musicnn.model import repeat_pad

        windows = repeat_pad(np.asarray(windows, dtype=np.float32), self.preset.min_samples)
        batch = patches(self.preset.front_end(windows), self.preset.patch_frames, self.preset.patch_hop)
        outputs = self._run(batch.reshape(-1, *batch.shape[2:]))
        return [o.reshape(batch.shape[0], batch.shape[1], -1).mean(axis=1) for o in outputs]

    def _run(self, flat: np.ndarray) -> list[np.ndarray]:
        """Run [patches, frames, bands] in graph-sized batches; per output [patches, dim] float32."""
        step = self.batch or DYNAMIC_BATCH
        parts: list[list[np.ndarray]] = [[] for _ in self.output_names]
        for start in range(0, len(flat), step):
            chunk = flat[start : start + step]
            real = len(chunk)
            if self.batch and real < self.batch:  # a fixed-batch graph: zero-pad, keep only the real rows
                chunk = np.concatenate([chunk, np.zeros((self.batch - real, *chunk.shape[1:]), np.float32)])
            outs = self.session.run(self.output_names, {self.input_name: chunk})
            for part, name, out in zip(parts, self.output_names, outs, strict=False):
                part.append(_per_patch(name, np.asarray(out, dtype=np.float32), len(chunk))[:real])
        return [np.concatenate(part) for part in parts]


def _per_patch(name: str, out: np.ndarray, patches: int) -> np.ndarray:
    """[patches, dim] as is; [patches, time, dim] averaged over time; EssentiaModelError for an output ``name`` of
    other rows (a batch mean, a constant: every file failed to reshape it)."""
    if out.ndim in (2, 3) and len(out) != patches:
        raise EssentiaModelError(f"output {name!r} has {len(out)} rows for a batch of {patches} patches; every "
                                 "output must have one row per patch")
    if out.ndim in (2, 3) and 0 in out.shape[1:]:  # a layer of no values: the store took it for damage
        raise EssentiaModelError(f"output {name!r} has no values (shape {list(out.shape)}): it cannot be a layer")
    if out.ndim == 2:
        return out
    if out.ndim == 3:
        return out.mean(axis=1)
    raise EssentiaModelError(f"output {name!r} of rank {out.ndim} cannot be a layer (expected [batch, dim] or "
                             "[batch, time, dim])")


def session_providers(device: str) -> list[str | tuple[str, dict[str, int]]]:
    """ONNX Runtime's execution providers for ``device``: the CPU's, behind CUDA's on GPU N (its ``device_id``) for
    cuda:N (cuda is cuda:0), as torch models take it; EssentiaModelError for another device."""
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None and device != "cpu":
        raise EssentiaModelError(f"unknown device {device!r} for ONNX Runtime; use cpu or cuda")
    cuda = [] if match is None else [("CUDAExecutionProvider", {"device_id": int(match.group(1) or 0)})]
    return [*cuda, "CPUExecutionProvider"]


def _open_session(path: Path, device: str, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session on ``device``; unreadable graphs raise :class:`EssentiaModelError`."""
    import onnxruntime as ort

    providers = session_providers(device)
    if device != "cpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise EssentiaModelError(f"--device {device} asked for, but this onnxruntime has no CUDAExecutionProvider "
                                 "(install onnxruntime-gpu)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 4  # fatal only: its errors come back as exceptions, said in one line
    try:
        return ort.InferenceSession(_graph_source(path), sess_options=options, providers=providers)
    except EssentiaModelError:
        raise
    except Exception as exc:  # onnxruntime raises its own pybind exception types for unreadable graphs
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EssentiaModelError(f"{path.name} is not a readable ONNX graph: {reason[:200]}") from exc


def _graph_source(path: Path) -> str | bytes:
    """What ONNX Runtime opens for ``path``: the path, or the file's bytes where the path is not UTF-8 text (a folder
    named in Latin-1), which is the only form of a path ONNX Runtime takes."""
    text = str(path)
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        if external_places(path):  # from bytes, ONNX Runtime looks for them in the working folder
            raise EssentiaModelError(f"{path.name} keeps weights in other files, which ONNX Runtime cannot open from a "
                                     f"folder not named in UTF-8 ({path.parent}); move them to one that is") from None
        return path.read_bytes()


def _revision(path: Path, preset: Preset, metadata: ModelMetadata) -> str:
    """The file's revision, naming ``preset`` too where it feeds the network otherwise than the preset the file's name
    and metadata imply: each way of feeding one file makes other vectors, so it gets a run of its own."""
    try:
        implied = detect_preset(path.stem, metadata)
    except EssentiaModelError:
        implied = None
    revision = file_revision(path)
    return revision if implied is not None and implied.feed == preset.feed else f"{revision}+{preset.name}"


def _check_input(session: ort.InferenceSession, metadata: ModelMetadata, preset: Preset, file: str) -> tuple[str, int]:
    """The graph input named by the metadata and its fixed batch size (0 when dynamic), after shape checks."""
    graph_inputs = {i.name: i for i in session.get_inputs()}
    wanted = metadata.inputs[0].name
    name = next((n for n in (wanted, graph_name(wanted), f"{graph_name(wanted)}:0") if n in graph_inputs), None)
    if name is None:
        raise EssentiaModelError(f"{file}: the metadata's input {wanted!r} is not an input of the graph "
                                 f"(it has {', '.join(map(repr, graph_inputs))}); is {metadata.path.name} its JSON?")
    if graph_inputs[name].type != "tensor(float)":  # ONNX Runtime's refusal at the first run was a traceback
        raise EssentiaModelError(f"{file}: input {name!r} takes {graph_inputs[name].type}; preset {preset.name} "
                                 "feeds tensor(float)")
    others = [n for n in graph_inputs if n != name]
    if others:
        raise EssentiaModelError(f"{file}: the graph needs inputs besides {name!r} ({', '.join(map(repr, others))}); "
                                 "mess feeds only the metadata's input")
    shape = graph_inputs[name].shape
    if not shape:  # no shape declared (ONNX Runtime's [] for a rank not known): the probe run tries the patches
        return name, 0
    expected = [preset.patch_frames, preset.bands]
    if len(shape) != 3 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected, strict=False)):
        raise EssentiaModelError(f"{file}: input {name!r} has shape {shape}; preset {preset.name} feeds "
                                 f"[batch, {preset.patch_frames} frames, {preset.bands} bands]")
    return name, shape[0] if isinstance(shape[0], int) else 0


def _layer_names(outputs: list[str], metadata: ModelMetadata) -> tuple[str, ...]:
    """Layer names for the graph outputs: the metadata's description where it lists the output, else the name."""
    described = {}
    for spec in metadata.outputs:
        label = spec.description or spec.purpose or spec.name
        for alias in (spec.name, graph_name(spec.name), f"{graph_name(spec.name)}:0"):
            described[alias] = label
    names: list[str] = []
    for out in outputs:
        name = unique = layer_name(described.get(out, out))
        number = len(names)
        while unique in names:  # a name taken: with its position, or (taken too) the next free number
            unique, number = f"{name}_{number}", number + 1
        names.append(unique)
    return tuple(names)
