"""Train the learned head (:class:`mess.models.head.Head`) and its linear baselines over a run's layers.

Every method here returns a :class:`Head`, so one evaluation loop scores them all:

* :func:`pca_head` - the untrained start: per-layer standardisation, then PCA of the training tracks;
* :func:`lda_head` - a supervised linear baseline: shrinkage LDA of the labels on top of that PCA;
* :func:`fit_head` - the PCA start refined with a supervised-contrastive loss over window vectors:
  windows of the same label are positives, windows of the same track count ``track_weight`` times more,
  and a penalty keeps the projection near its start (the data are a few hundred tracks).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from mess.fusion.data import FusionError
from mess.models.head import Head
from mess.store import FeatureStore, Run


@dataclass(frozen=True)
class HeadData:
    """Labelled tracks of a run: track vectors x [n, D], and window vectors seg_x [m, D] with their track row."""

    run: Run
    track_ids: np.ndarray
    hashes: np.ndarray
    labels: np.ndarray
    x: np.ndarray
    seg_x: np.ndarray
    seg_row: np.ndarray

    def data_hash(self, rows: np.ndarray | None = None) -> str:
        """Hash of what training saw: run identity plus sorted (content hash, label) pairs of ``rows``."""
        rows = np.arange(len(self.labels)) if rows is None else rows
        pairs = sorted(zip(self.hashes[rows].tolist(), self.labels[rows].tolist(), strict=False))
        head = [self.run.model, self.run.revision, self.run.policy, list(self.run.layer_names)]
        return hashlib.sha256(json.dumps([head, pairs]).encode()).hexdigest()


def load_head_data(store: FeatureStore, run: Run, labels: dict[int, str]) -> HeadData:
    """All layers of the labelled tracks of ``run`` (track and window vectors); FusionError when too few.

    Tracks go in content order (hash, then path), their windows with them, not in track ids: the store numbers
    tracks as they are committed, which varies from one extraction of a collection to the next, and the PCA, the
    head's seeded batches and the bootstrap over queries go by row."""
    # one catalog version for every layer, though an extract may be committing (again where a reclaim moved rows)
    mats, segs, tracks = store.reading(lambda: (
        [store.layer_matrix(run, i) for i in range(len(run.layer_names))],
        [store.segment_matrix(run, i) for i in range(len(run.layer_names))],
        {t.id: t for t in store.tracks(run)}))
    by_id = {i: t.content_hash for i, t in tracks.items()}
    ids = mats[0][0]
    keep = np.array([int(i) in labels for i in ids], dtype=bool)
    if len(set(labels[int(i)] for i in ids[keep])) < 2:
        raise FusionError(f"need labelled tracks of at least 2 labels in {run.model}; found {int(keep.sum())} tracks")
    rows = sorted(np.flatnonzero(keep).tolist(), key=lambda r: tracks[int(ids[r])].content_key)
    x = np.hstack([m for _, m in mats])[rows]
    ids = ids[rows]
    row_of = {int(t): r for r, t in enumerate(ids)}
    seg_ids = segs[0][0]
    seg_keep = np.flatnonzero([int(t) in row_of for t in seg_ids])
    seg_keep = seg_keep[np.argsort([row_of[int(t)] for t in seg_ids[seg_keep]], kind="stable")]
    seg_x = np.hstack([s for _, _, s in segs])[seg_keep]
    seg_row = np.array([row_of[int(t)] for t in seg_ids[seg_keep]], dtype=np.int64)
    return HeadData(
        run,
        ids,
        np.array([by_id[int(i)] for i in ids]),
        np.array([labels[int(i)] for i in ids]),
        x.astype(np.float32),
        seg_x.astype(np.float32),
        seg_row,
    )


@dataclass(frozen=True)
class HeadConfig:
    """Everything that decides a head: PCA size, residual width, loss and optimiser settings."""

    dims: int = 64
    hidden: int = 0  # 0 = linear head
    per_dim: bool = False  # standardise each dimension (else each layer as a whole)
    temperature: float = 0.1
    label_weight: float = 1.0
    track_weight: float = 1.0
    anchor: float = 1.0  # penalty on the distance of the projection from its PCA start
    steps: int = 150
    batch: int = 512
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dims < 2 or self.hidden < 0 or self.temperature <= 0 or self.steps < 0 or self.batch < 2:
            raise ValueError(f"invalid head config: {self}")


def _standardiser(data: HeadData, rows: np.ndarray, per_dim: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale from the window vectors of ``rows``: per-dimension std x sqrt(layer width) when
    ``per_dim``, else one scale per layer (its root-mean-square centred norm), so every layer carries
    equal variance either way."""
    seg = data.seg_x[np.isin(data.seg_row, rows)]
    mean = seg.mean(axis=0)
    dims = np.asarray(data.run.layer_dims)
    if per_dim:
        std = seg.std(axis=0)
        scale = np.where(std > 1e-6, std, 1.0) * np.sqrt(np.repeat(dims, dims))
    else:
        bounds = np.cumsum(np.concatenate([[0], dims]))
        norms = [
            np.sqrt(((seg[:, a:b] - mean[a:b]) ** 2).sum(axis=1).mean())
            for a, b in zip(bounds, bounds[1:], strict=False)
        ]
        scale = np.repeat(np.maximum(norms, 1e-6), dims)
    return mean.astype(np.float32), scale.astype(np.float32)


def _make(
    data: HeadData,
    mean: np.ndarray,
    scale: np.ndarray,
    proj: np.ndarray,
    meta: dict,
    mlp: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Head:
    w1, b1, w2 = mlp if mlp is not None else (None, None, None)
    run = data.run
    return Head(run.model, run.layer_names, run.layer_dims, mean, scale, proj.astype(np.float32), w1, b1, w2, meta)


def pca_head(data: HeadData, rows: np.ndarray, dims: int = 64, per_dim: bool = False) -> Head:
    """The untrained start: standardise, then project on the top ``dims`` principal axes of the tracks ``rows``."""
    mean, scale = _standardiser(data, rows, per_dim)
    z = (data.x[rows] - mean) / scale
    _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    return _make(data, mean, scale, vt[:dims].T, {"method": "pca", "dims": int(min(dims, len(vt)))})


def lda_head(data: HeadData, rows: np.ndarray, dims: int = 64) -> Head:
    """Supervised linear baseline: shrinkage LDA of the labels of ``rows`` on the PCA start's output."""
    start = pca_head(data, rows, dims)
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    lda.fit(start.transform(data.x[rows]), data.labels[rows])
    k = max(1, len(lda.classes_) - 1)
    return _make(data, start.mean, start.scale, start.proj @ lda.scalings_[:, :k], {"method": "lda", "dims": k})


def _supcon(z: torch.Tensor, label: torch.Tensor, track: torch.Tensor, config: HeadConfig) -> torch.Tensor:
    """Supervised contrastive loss; same-label pairs weigh ``label_weight``, same-track pairs ``track_weight`` more."""
    z = torch.nn.functional.normalize(z, dim=1)
    eye = torch.eye(len(z), dtype=torch.bool)
    logits = (z @ z.T / config.temperature).masked_fill(eye, -1e9)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    weight = (
        config.label_weight * (label[:, None] == label[None, :]).float()
        + config.track_weight * (track[:, None] == track[None, :]).float()
    )
    weight = weight.masked_fill(eye, 0.0)
    has = weight.sum(dim=1) > 0
    return -((weight * log_prob).sum(dim=1)[has] / weight.sum(dim=1)[has]).mean()


def fit_head(data: HeadData, rows: np.ndarray, config: HeadConfig = HeadConfig()) -> Head:
    """Train a head on the labelled tracks ``rows`` (their window vectors), starting from :func:`pca_head`."""
    start = pca_head(data, rows, config.dims, config.per_dim)
    seg = np.flatnonzero(np.isin(data.seg_row, rows))
    if len(set(data.labels[rows].tolist())) < 2:
        raise FusionError("training a head needs at least 2 labels")
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    z_all = torch.from_numpy(start.standardise(data.seg_x[seg]) @ start.proj)
    _, label_codes = np.unique(data.labels[data.seg_row[seg]], return_inverse=True)
    labels, tracks = torch.from_numpy(label_codes), torch.from_numpy(data.seg_row[seg])
    p = z_all.shape[1]
    proj = torch.nn.Parameter(torch.eye(p))
    params = [proj]
    if config.hidden:
        w1 = torch.nn.Parameter(torch.randn(p, config.hidden, generator=gen) / np.sqrt(p))
        b1 = torch.nn.Parameter(torch.zeros(config.hidden))
        w2 = torch.nn.Parameter(torch.zeros(config.hidden, p))
        params += [w1, b1, w2]
    opt = torch.optim.Adam(params, lr=config.lr)
    for _ in range(config.steps):
        pick = torch.randperm(len(z_all), generator=gen)[: config.batch]
        h = z_all[pick] @ proj
        if config.hidden:
            h = h + torch.relu(h @ w1 + b1) @ w2
        loss = _supcon(h, labels[pick], tracks[pick], config)
        loss = loss + config.anchor * ((proj - torch.eye(p)) ** 2).sum() / p
        opt.zero_grad()
        loss.backward()
        opt.step()
    mlp = (_float32(w1), _float32(b1), _float32(w2)) if config.hidden else None
    meta = {"method": "learned", "config": asdict(config)}
    return _make(data, start.mean, start.scale, start.proj @ proj.detach().numpy(), meta, mlp)


def _float32(t: torch.Tensor) -> np.ndarray:
    """A trained parameter as a float32 array."""
    return t.detach().numpy().astype(np.float32)
