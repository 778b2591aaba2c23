"""Training loop (triplet loss, early stopping on validation nDCG@k) and checkpoints."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from mess.fusion import evaluate
from mess.fusion.data import FusionError, LabelSplit, LayerData, split_labels
from mess.fusion.mining import Mining, PKSampler, triplet_loss
from mess.fusion.network import LayerFusion
from mess.store import FeatureStore, Run
from mess.store.paths import create_file, is_device_or_pipe, replace_file, resolved
from mess.store.reports import slug

MAX_RATE = 1e6  # the largest learning rate taken (far above any that trains)


@dataclass(frozen=True)
class FusionConfig:
    """Everything that decides a training run; saved with the checkpoint."""

    label: str = "artist"  # the tag, or the column of ``labels_file``
    labels_file: str | None = None  # the name of the label file trained on (`--labels`), None for tags
    fusion_dim: int = 256
    hidden_dim: int = 512
    common_dim: int = 256
    gated: bool = False
    dropout: float = 0.1
    mining: Mining = "semi-hard"
    margin: float = 0.5
    labels_per_batch: int = 16
    tracks_per_label: int = 4
    lr: float = 3e-4
    weights_lr: float = 0.05
    weight_decay: float = 1e-4
    weight_epochs: int = 10
    max_epochs: int = 100
    patience: int = 10
    val_frac: float = 0.15
    test_frac: float = 0.15
    seed: int = 0
    k: int = 10

    @property
    def labels_name(self) -> str:
        """What the labels are, for people: the tag ('artist'), or the label file's name ('moods.csv')."""
        return self.label if self.labels_file is None else self.labels_file

    def __post_init__(self) -> None:
        """Refuse an unknown mining and a non-finite rate or margin (inf trained NaN weights, or broke the PCA)."""
        if self.mining not in get_args(Mining):
            raise ValueError(f"unknown mining {self.mining!r}; use {' or '.join(get_args(Mining))}")
        for name in ("margin", "lr", "weights_lr", "weight_decay", "dropout"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number, not {getattr(self, name)}")
        for name in ("lr", "weights_lr"):  # AdamW divides a rate by 1 - 0.9^t: from ~3e37 a float32 overflow in torch
            if getattr(self, name) > MAX_RATE:
                option = f"--{name.replace('_', '-')}"
                raise ValueError(f"{option} must be at most {MAX_RATE:g}, not {getattr(self, name):g}")


@dataclass(frozen=True)
class EpochLog:
    """One epoch: mean triplet loss, fraction of active triplets, validation nDCG@k (epoch 0 = untrained)."""

    epoch: int
    loss: float | None
    active: float | None
    val_ndcg: float | None
    seconds: float


class StoppedBeforeFirstEpoch(KeyboardInterrupt):
    """Training was stopped (``stop``) before its first epoch ended: there is nothing to save."""


@dataclass
class FusionResult:
    """A trained network with what it was trained on and how training went."""

    network: LayerFusion
    config: FusionConfig
    model: str
    revision: str
    layer_names: tuple[str, ...]
    layer_dims: tuple[int, ...]
    split: LabelSplit
    data_hash: str
    best_epoch: int
    history: list[EpochLog] = field(default_factory=list)
    policy: str | None = None  # the trained run's window policy JSON (None: a checkpoint from before it was saved)
    run_id: int | None = None
    interrupted_at: int | None = None  # the last epoch done when training was stopped (None: it ran to its end)
    sha256: str | None = None  # of the checkpoint file it was loaded from (:func:`load_checkpoint`), as read
    given_labels: dict[int, str] | None = None  # track id -> label of the label file trained on (None: tags)

    @property
    def stopped_early(self) -> bool:
        """Whether phase 2 ended before max_epochs because validation nDCG stopped improving."""
        ended = self.history[-1].epoch < self.config.weight_epochs + self.config.max_epochs
        return ended and bool(self.split.val) and self.interrupted_at is None

    def labels(self, data: LayerData) -> np.ndarray:
        """The label of each row of ``data`` as trained on: its tag, or its line of the label file."""
        return data.labels(self.config.label, self.given_labels)

    def layer_weights(self, x: np.ndarray) -> dict[str, float]:
        """Mean softmax weight per layer over the tracks ``x``."""
        weights = self.network.mean_weights(torch.from_numpy(x)).numpy()
        return {name: round(float(w), 6) for name, w in zip(self.layer_names, weights, strict=False)}

    def meta(self) -> dict:
        """JSON-ready description (everything in the checkpoint except the weights)."""
        return {"model": self.model, "revision": self.revision, "policy": self.policy, "run_id": self.run_id,
                "layer_names": list(self.layer_names),
                "layer_dims": list(self.layer_dims), "config": asdict(self.config), "split": self.split.to_json(),
                "data_hash": self.data_hash, "best_epoch": self.best_epoch, "interrupted_at": self.interrupted_at,
                "history": [asdict(h) for h in self.history],
                "labels": None if self.given_labels is None else {str(i): v for i, v in self.given_labels.items()}}


def build_network(config: FusionConfig, layer_dims: tuple[int, ...]) -> LayerFusion:
    """A freshly initialised network for this configuration (seeded)."""
    torch.manual_seed(config.seed)
    return LayerFusion(layer_dims, config.fusion_dim, config.hidden_dim, config.common_dim, config.gated,
                       config.dropout)


def initial_network(config: FusionConfig, layer_dims: tuple[int, ...], x: torch.Tensor) -> LayerFusion:
    """The network before training: seeded weights, standardisation and PCA projection fitted on ``x``.

    ``x`` holds every track of the collection; these statistics use no labels.
    """
    network = build_network(config, layer_dims)
    network.set_standardisation(x)
    network.fit_projection(x)
    return network


@torch.no_grad()
def embed(network: LayerFusion, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Fused unit vectors float32 [n, fusion_dim] for concatenated layer vectors ``x``."""
    network.eval()
    parts = [network(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, network.project.out_features), np.float32)


def train_fusion(data: LayerData, config: FusionConfig,
                 on_epoch: Callable[[EpochLog], None] | None = None,
                 stop: Callable[[], bool] | None = None, given: dict[int, str] | None = None) -> FusionResult:
    """Train on the training labels (tags, or ``given``: track id -> label, and ``config.labels_file`` names their
    file) in two phases; keep the best validation epoch.

    Phase 1 (``weight_epochs``) trains only the layer weights (logits and gate)
    through the fixed, geometry-preserving projection: few parameters, so what it
    learns transfers to unseen labels even on small collections. Phase 2 (up to
    ``max_epochs`` more) trains everything and needs validation labels: it stops
    after ``patience`` epochs without a gain in validation nDCG@k, and is skipped
    when the collection is too small to hold validation labels out. Each epoch
    runs ``n_train // (labels_per_batch * tracks_per_label)`` steps (at least one)
    of triplet loss with in-batch mining; epoch 0 is the untrained network. Validation counts each recording once
    (byte-identical copies, and copies of trained recordings under another label, left out), as the report does.

    ``stop`` (asked before every step, e.g. whether Ctrl-C was pressed) ends training early: the result is the best
    epoch so far, with ``interrupted_at`` the last epoch done; :class:`StoppedBeforeFirstEpoch` when no epoch was
    done.
    """
    labels = data.labels(config.label, given)
    split = split_labels(labels, config.val_frac, config.test_frac, config.seed)
    train_rows = split.rows(labels, "train")
    trained = {data.tracks[r].content_hash for r in train_rows}  # a copy of a trained recording validates nothing
    val_rows = np.array([r for r in data.recordings(split.rows(labels, "val"))
                         if data.tracks[r].content_hash not in trained], dtype=np.intp)  # each recording once
    codes = np.unique(labels[train_rows].astype(str), return_inverse=True)[1]
    sampler = PKSampler(codes, config.labels_per_batch, config.tracks_per_label, config.seed)
    steps = max(1, len(train_rows) // (config.labels_per_batch * config.tracks_per_label))

    x_all = torch.from_numpy(data.x)
    network = initial_network(config, data.run.layer_dims, x_all)
    gate = list(network.gate.parameters()) if network.gate is not None else []
    rest = [p for name, p in network.named_parameters() if name != "logits" and not name.startswith("gate.")]
    groups: list[dict[str, Any]] = [{"params": [network.logits], "lr": config.weights_lr, "weight_decay": 0.0},
                                    {"params": gate}, {"params": rest}]
    optimiser = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    x_train, y_train = torch.from_numpy(data.x[train_rows]), torch.from_numpy(codes)

    def validate() -> float | None:
        if not len(val_rows):
            return None
        unit = embed(network, data.x[val_rows])
        return evaluate.scores(unit, labels[val_rows], config.k).ndcg

    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in network.state_dict().items()}

    started = time.perf_counter()
    history = [EpochLog(0, None, None, validate(), 0.0)]
    best_val, best_epoch, best_state = history[0].val_ndcg, 0, snapshot()
    last = config.weight_epochs + (config.max_epochs if len(val_rows) else 0)
    stopping = stop or (lambda: False)
    interrupted_at = None
    for epoch in range(1, last + 1):
        for p in rest:
            p.requires_grad_(epoch > config.weight_epochs)
        network.train()
        losses, active = [], []
        for batch in sampler.batches(steps):
            if stopping():
                break
            loss, frac = triplet_loss(network(x_train[batch]), y_train[batch], config.margin, config.mining)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            active.append(frac)
        if stopping():  # the epoch under way is dropped: its steps changed weights the best state does not hold
            interrupted_at = history[-1].epoch
            break
        if epoch == config.weight_epochs:
            network.fit_projection(x_all)
        val = validate()
        log = EpochLog(epoch, float(np.mean(losses)), float(np.mean(active)), val, time.perf_counter() - started)
        history.append(log)
        if on_epoch:
            on_epoch(log)
        if val is None or best_val is None or val > best_val:
            best_val, best_epoch, best_state = val, epoch, snapshot()
        elif epoch > config.weight_epochs and epoch - max(best_epoch, config.weight_epochs) >= config.patience:
            break
    if interrupted_at == 0:
        raise StoppedBeforeFirstEpoch("stopped before the first epoch ended")
    network.load_state_dict(best_state)
    network.eval()
    return FusionResult(network, config, data.run.model, data.run.revision, data.run.layer_names,
                        data.run.layer_dims, split, data.data_hash(config.label, given), best_epoch, history,
                        data.run.policy, data.run.id, interrupted_at, given_labels=given)


def checkpoint_path(store: FeatureStore, run: Run) -> Path:
    """Where `mess fuse train` saves a run's fusion network by default: STORE/fusion/<model>-run<id>.pt (one per
    run: a network is trained on one run's vectors)."""
    return store.root / "fusion" / f"{slug(run.model)}-run{run.id}.pt"


def saved_checkpoint(store: FeatureStore, run: Run) -> Path:
    """Where `mess fuse apply` and `report` look for a run's network by default: :func:`checkpoint_path`, or where
    only it is, the STORE/fusion/<model>.pt an older mess saved every run of the model to."""
    path = checkpoint_path(store, run)
    older = path.with_name(f"{slug(run.model)}.pt")
    return older if older.is_file() and not path.exists() else path


def checkpoint_problem(path: Path, store_root: Path | None = None) -> str | None:
    """Why a checkpoint cannot be saved at ``path`` (None when it can): a folder, a parent (or a folder above it)
    that is a file or a link to nothing, a folder that cannot be written, a .json name, which its description (the
    same name with .json) would overwrite, a device or a pipe at either name, a file there that is not a mess
    checkpoint (a user's own weights or photo), a file at that description's name that is not one (a user's own
    JSON), or a place in the store at ``store_root`` outside its fusion/ folder (STORE/catalog.sqlite was
    overwritten)."""
    if store_root is not None:
        target, root = resolved(path), resolved(store_root)
        if target.is_relative_to(root) and not target.is_relative_to(root / "fusion"):
            return f"it is inside the feature store {store_root}, where checkpoints go to its fusion/ folder"
    if path.is_dir():
        return "it is a folder"
    above = next(p for p in path.parents if p.exists() or p.is_symlink())  # the folder it goes to, or would be made in
    if above.is_symlink() and not above.exists():  # not 'a file': no folder can be made at a link to nothing
        return (f"{above} is a link to {os.readlink(above)}, which does not exist (or links back); create that folder "
                "or give the checkpoint another place")
    if not above.is_dir():
        return "its parent is a file" if above == path.parent else f"{above} is a file, not a folder"
    if not os.access(above, os.W_OK | os.X_OK):  # read-only, or not the user's (root passes, but for a read-only mount)
        return f"the folder {above} cannot be written; give the checkpoint a place that can"
    description = path.with_suffix(".json")
    if description == path:
        return "its description is written beside it as .json, over it; name it .pt"
    for place in (path, description):  # not opened: a FIFO would block, /dev/zero never end
        if is_device_or_pipe(place):
            return f"{place} is a device or a pipe, not a file a checkpoint and its .json description can be saved to"
    if (path.exists() or path.is_symlink()) and not _is_checkpoint(path):
        return (f"it would replace {path}, which is not a mess fusion checkpoint; move that file or give the "
                "checkpoint another name")
    if (description.exists() or description.is_symlink()) and not _is_description(description):
        return (f"its description would replace {description}, which is not the description of a mess fusion "
                "checkpoint; move that file or give the checkpoint another name")
    return None


def _is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint :func:`save_checkpoint` wrote (a PyTorch file of a dict holding the keys
    every mess wrote), so a save may replace it. Memory-mapped: a user's large weights are not read whole."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 -- unpickling a file that is no checkpoint can raise almost anything
        return False
    keys = {"state_dict", "model", "layer_dims", "config", "data_hash", "history"}
    return isinstance(saved, dict) and keys <= saved.keys()


def _is_description(path: Path) -> bool:
    """Whether ``path`` is a checkpoint description :func:`save_checkpoint` wrote (a JSON object holding the keys
    every mess wrote), so a save may replace it."""
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError):  # a folder, unreadable, not JSON (UnicodeDecodeError is a ValueError)
        return False
    return isinstance(meta, dict) and {"model", "layer_dims", "config", "data_hash", "history"} <= meta.keys()


class CheckpointRefused(FusionError):
    """:func:`save_checkpoint` refused its path (``problem`` says why); nothing was written at either name."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"cannot save a checkpoint at {path}: {problem}")
        self.problem = problem


def save_checkpoint(result: FusionResult, path: Path) -> str:
    """Write the weights with their config, split and data hash (.pt) and the same minus weights (.json). A name
    where nothing was is taken by an exclusive create (:func:`mess.store.paths.create_file`), so a file that comes
    there after the check is never replaced: refused. Only a checkpoint or description found to be one is replaced,
    whole: a retrain killed while saving leaves the previous checkpoint as it was. The .json, written after the .pt
    (where both are new or both replaced), records the .pt's SHA-256 (``checkpoint_sha256``), so one left from
    before a save killed between the two is told apart from the .pt. Returns that SHA-256
    (:func:`checkpoint_digest`); :class:`CheckpointRefused` (nothing written) for a ``path`` that
    :func:`checkpoint_problem` refuses or where a file came meanwhile; an OSError (a full disk) removes the names
    it had created."""
    description = path.with_suffix(".json")
    free = [p for p in (path, description) if not (p.exists() or p.is_symlink())]  # looked at before the check
    if (problem := checkpoint_problem(path)) is not None:
        raise CheckpointRefused(path, problem)
    weights = io.BytesIO()
    torch.save({"state_dict": result.network.state_dict(), **result.meta()}, weights)
    digest = hashlib.sha256(weights.getvalue()).hexdigest()
    contents = {path: weights.getvalue(),
                description: json.dumps({**result.meta(), "checkpoint_sha256": digest}, indent=2).encode()}
    made: list[Path] = []
    try:
        for place in free:  # the new names first: a refusal then leaves a replaced checkpoint as it was
            create_file(place, contents[place])
            made.append(place)
        for place, data in contents.items():
            if place not in free:
                replace_file(place, data)
    except BaseException as exc:  # a file that came, a full disk, Ctrl-C: no half of a checkpoint left behind
        for ours in made:
            ours.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise CheckpointRefused(path, f"a file came at {place} while it was being saved") from None
        raise
    return digest


def checkpoint_digest(path: Path) -> str:
    """SHA-256 of a checkpoint file: its identity, recorded with fused vectors and in its training log."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_checkpoint(path: Path) -> FusionResult:
    """Read a checkpoint written by :func:`save_checkpoint`, with the SHA-256 of the bytes read (``sha256``: the
    identity of this network, though the file is replaced since)."""
    if not path.exists():
        raise FusionError(f"no fusion checkpoint at {path}; run `mess fuse train` first")
    if path.is_dir():
        raise FusionError(f"{path} is a folder, not a fusion checkpoint (a .pt file `mess fuse train` saved)")
    data = path.read_bytes()  # an I/O error is the caller's to report; all torch.load raises is about the content
    try:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 -- unpickling a file that is no checkpoint can raise almost anything
        # not torch's words: they run to many lines, and for most files advise loading with weights_only=False,
        # which runs whatever code the file holds
        raise FusionError(f"{path} is not a mess fusion checkpoint (not a PyTorch file of weights)") from None
    try:
        config = FusionConfig(**saved["config"])
        network = LayerFusion(saved["layer_dims"], config.fusion_dim, config.hidden_dim, config.common_dim,
                              config.gated, config.dropout)
        network.load_state_dict(saved["state_dict"])
    except Exception as exc:  # noqa: BLE001 -- a PyTorch file of other weights can miss or mistype anything
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # torch's messages run to many lines
        raise FusionError(f"{path} is not a mess fusion checkpoint ({first})") from None
    network.eval()
    split = LabelSplit(*(tuple(saved["split"][p]) for p in ("train", "val", "test")))
    return FusionResult(network, config, saved["model"], saved["revision"], tuple(saved["layer_names"]),
                        tuple(saved["layer_dims"]), split, saved["data_hash"], saved["best_epoch"],
                        [EpochLog(**h) for h in saved["history"]], saved.get("policy"), saved.get("run_id"),
                        saved.get("interrupted_at"), hashlib.sha256(data).hexdigest(),
                        {int(i): v for i, v in given.items()} if (given := saved.get("labels")) else None)
