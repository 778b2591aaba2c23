"""Triplet mining: P labels x K tracks per batch, semi-hard or batch-hard negatives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

Mining = Literal["semi-hard", "batch-hard"]


class PKSampler:
    """Batches of ``p`` labels with up to ``k`` distinct tracks each (labels with >= 2 tracks only)."""

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int) -> None:
        codes, counts = np.unique(labels, return_counts=True)
        self.groups = [np.flatnonzero(labels == c) for c, n in zip(codes, counts, strict=False) if n >= 2]
        if len(self.groups) < 2:
            raise ValueError("triplet mining needs at least 2 labels with 2 or more tracks each")
        self.p = min(p, len(self.groups))
        self.k = k
        self.rng = np.random.default_rng(seed)

    def batches(self, steps: int) -> Iterator[np.ndarray]:
        """Yield ``steps`` batches of row indices."""
        for _ in range(steps):
            chosen = self.rng.choice(len(self.groups), size=self.p, replace=False)
            yield np.concatenate([
                self.rng.choice(self.groups[g], size=min(self.k, self.groups[g].size), replace=False)
                for g in chosen])


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.2,
                 mining: Mining = "semi-hard") -> tuple[torch.Tensor, float]:
    """Triplet loss over every anchor-positive pair of a batch; returns (loss, active fraction).

    Distances are squared Euclidean between L2-normalised embeddings. ``semi-hard``
    (FaceNet) picks for each pair the closest negative farther than the positive,
    falling back to the farthest negative when none is; ``batch-hard`` uses the
    hardest positive and hardest negative per anchor.
    """
    dist = torch.cdist(emb, emb).pow(2)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos_mask, neg_mask = same & ~eye, ~same
    inf = torch.finfo(dist.dtype).max
    if mining == "batch-hard":
        d_ap = dist.masked_fill(~pos_mask, -inf).amax(dim=1)
        d_an = dist.masked_fill(~neg_mask, inf).amin(dim=1)
        valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
        losses = (d_ap - d_an + margin).clamp_min(0)[valid]
    elif mining == "semi-hard":
        a, p = pos_mask.nonzero(as_tuple=True)
        d_ap = dist[a, p]
        d_an_all = dist[a]  # [pairs, batch]
        negs = neg_mask[a]
        farther = negs & (d_an_all > d_ap[:, None])
        semi = d_an_all.masked_fill(~farther, inf).amin(dim=1)
        hardest = d_an_all.masked_fill(~negs, -inf).amax(dim=1)
        d_an = torch.where(farther.any(dim=1), semi, hardest)
        losses = (d_ap - d_an + margin).clamp_min(0)[negs.any(dim=1)]
    else:
        raise ValueError(f"unknown mining {mining!r}; use semi-hard or batch-hard")
    if losses.numel() == 0:
        return emb.sum() * 0.0, 0.0
    return losses.mean(), float((losses > 0).float().mean())
