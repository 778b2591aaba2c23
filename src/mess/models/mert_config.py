"""A MERT checkpoint's settings and :class:`~mess.models.base.ModelInfo` read from its JSON files alone, without
torch, transformers or its weights (a Ray driver needs the info only; its workers load the network)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mess.models.base import ModelInfo

MERT_LICENCE = "CC BY-NC 4.0 (MERT model card): non-commercial use only"
HUBERT_LAYERS, HUBERT_WIDTH = 12, 768  # HubertConfig's num_hidden_layers and hidden_size when config.json omits them
FEATURES_RATE = 16000  # Wav2Vec2FeatureExtractor's sampling_rate when preprocessor_config.json omits it
MERT_RATE = 24000  # MERT's, taken where a checkpoint has no preprocessor_config.json


def mert_info(name: str, revision: str, sample_rate: int, hidden_layers: int, width: int) -> ModelInfo:
    """The info of a MERT-shaped network: every hidden state (the embeddings' and each layer's) is a layer."""
    n_layers = hidden_layers + 1
    return ModelInfo(name=name, revision=revision, sample_rate=sample_rate,
                     layer_names=tuple(f"layer_{i}" for i in range(n_layers)), layer_dims=(width,) * n_layers,
                     licence=MERT_LICENCE)


def read_mert_info(source: str, revision: str | None, name: str, local_files_only: bool = False) -> ModelInfo:
    """The info ``MertModel.from_pretrained(source, revision=revision, name=name)`` has, from the checkpoint's
    config.json and preprocessor_config.json (a hub repo id or a local folder); ValueError as it raises for those
    files."""
    config = read_config(source, revision, local_files_only)
    check_hubert_shaped(config)
    features = _read_json(source, "preprocessor_config.json", revision, local_files_only)
    rate = MERT_RATE if features is None else int(features.get("sampling_rate", FEATURES_RATE))
    return mert_info(name, revision or _local_revision(source), rate,
                     int(config.get("num_hidden_layers", HUBERT_LAYERS)), int(config.get("hidden_size", HUBERT_WIDTH)))


def check_hubert_shaped(config: dict) -> None:
    """ValueError for a MERT config.json that transformers' HubertModel cannot run."""
    if config.get("feature_extractor_cqt") or config.get("deepnorm"):
        raise ValueError("MERT checkpoints with a CQT front end or DeepNorm are not HuBERT-compatible")


def read_config(source: str, revision: str | None, local_files_only: bool) -> dict:
    """The checkpoint's config.json as a dict; ValueError naming the file when it is not a JSON object."""
    config = _read_json(source, "config.json", revision, local_files_only, required=True)
    assert config is not None  # required: an OSError where it is missing
    return config


def _read_json(source: str, name: str, revision: str | None, local_files_only: bool,
               required: bool = False) -> dict | None:
    """The JSON object in the checkpoint's file ``name``; None where an optional one is not there."""
    local = Path(source)
    if local.is_dir():
        path = local / name
        if not required and not path.is_file():
            return None
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(source, name, revision=revision, local_files_only=local_files_only))
        except OSError:  # as from_pretrained, which then takes MERT's settings
            if required:
                raise
            return None
    try:
        config = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object of settings")
    return config


def _local_revision(source: str) -> str:
    """Identify a local checkpoint by a hash of the names and contents of the files that make the model (weights
    retrained or saved again in the same folder have the sizes they had, so sizes alone called them the vectors
    already stored); others (a README, Finder's .DS_Store, remote code mess never runs) leave it as it is."""
    folder = Path(source)
    digest = hashlib.blake2b(digest_size=8)
    for f in sorted(folder.iterdir()):
        if f.is_file() and _model_file(f.name):
            with f.open("rb") as data:
                digest.update(os.fsencode(f.name) + b"\0" + hashlib.file_digest(data, "sha256").digest())
    return f"local-{digest.hexdigest()}"


def _model_file(name: str) -> bool:
    """Whether a checkpoint folder's file named ``name`` is read to make the model: its configs and weights."""
    weights = name.endswith((".safetensors", ".bin", ".index.json")) and not name.startswith(".")
    return weights or name in ("config.json", "preprocessor_config.json")
