"""Essentia's model metadata: the JSON file published beside each model's weights.

The fields used (as in ``discogs-effnet-bsdynamic-1.json`` or ``msd-musicnn-1.json``)::

    {"name": ..., "version": ..., "schema": {"inputs": [{"name", "type", "shape"}],
     "outputs": [{"name", "shape", "op", "description", "output_purpose"}]},
     "inference": {"sample_rate": 16000, "algorithm": "TensorflowPredictEffnetDiscogs"}}

The tensor names are those of the TensorFlow graph; Essentia's ONNX exports may rename
them (``serving_default_melspectrogram`` -> ``melspectrogram``) or keep a ``:0`` suffix; the
backend tries the name as written, :func:`graph_name` of it, and that with ``:0``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


class EssentiaModelError(ValueError):
    """A user-supplied model that cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the metadata's schema."""

    name: str
    shape: tuple[int | str, ...] = ()
    description: str = ""
    purpose: str = ""


@dataclass(frozen=True)
class ModelMetadata:
    """What the JSON says about a model: its tensors, input rate, algorithm and licence."""

    path: Path
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sample_rate: int
    algorithm: str
    licence: str


def metadata_path(model: Path) -> Path:
    """Where the metadata of ``model`` lies: the same name with ``.json``."""
    return model.with_suffix(".json")


def read_metadata(model: Path) -> ModelMetadata:
    """Read and check the JSON beside ``model``; raise :class:`EssentiaModelError` with one line if unusable."""
    path = metadata_path(model)
    if not path.is_file():
        raise EssentiaModelError(f"no metadata for {model.name}: expected Essentia's JSON at {path} "
                                 f"(download it with the model, e.g. `mess models fetch`)")
    try:
        data = json.loads(path.read_text())
        schema = data["schema"]
        inputs = tuple(_spec(s) for s in schema["inputs"])
        outputs = tuple(_spec(s) for s in schema.get("outputs", []))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise EssentiaModelError(f"{path} is not Essentia model metadata (needs schema.inputs): {exc!r}") from exc
    if not inputs:
        raise EssentiaModelError(f"{path} lists no inputs in schema.inputs")
    inference = data.get("inference") or {}
    if not isinstance(inference, dict):  # these two were a traceback, or "invalid literal for int()" alone
        raise EssentiaModelError(f"{path} is not Essentia model metadata (its inference is not an object)")
    rate = inference.get("sample_rate", 16000)
    if isinstance(rate, bool) or not (isinstance(rate, int) or isinstance(rate, float) and rate.is_integer()):
        raise EssentiaModelError(f"{path} is not Essentia model metadata (inference.sample_rate is "
                                 f"{json.dumps(rate)}, not a whole number of Hz)")
    licence = data.get("license") or data.get("licence") or ""
    return ModelMetadata(path=path, name=str(data.get("name", model.stem)), inputs=inputs, outputs=outputs,
                         sample_rate=int(rate), algorithm=str(inference.get("algorithm", "")),
                         licence=licence if isinstance(licence, str) else json.dumps(licence))


def _spec(item: dict) -> TensorSpec:
    return TensorSpec(name=str(item["name"]), shape=tuple(item.get("shape") or ()),
                      description=str(item.get("description") or ""), purpose=str(item.get("output_purpose") or ""))


def graph_name(name: str) -> str:
    """A TensorFlow tensor name as tf2onnx names it in Essentia's exports: no ``serving_default_``, no ``:0``.

    >>> graph_name("serving_default_melspectrogram"), graph_name("model/Placeholder:0")
    ('melspectrogram', 'model/Placeholder')
    """
    return re.sub(r":0$", "", name.removeprefix("serving_default_"))


def layer_name(text: str) -> str:
    """A layer name from a tensor name or description: lower case, runs of other characters as ``_``.

    >>> layer_name("model/dense/BiasAdd"), layer_name("release similarity")
    ('model_dense_biasadd', 'release_similarity')
    """
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "output"
