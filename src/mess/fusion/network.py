"""The fusion network: softmax attention over a track's layer vectors, then a projection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


class LayerFusion(nn.Module):
    """Learn one L2-normalised embedding from all layer vectors of a track.

    Input is the concatenation of the L layer vectors, [batch, sum(layer_dims)].
    Each layer is standardised with collection statistics and layer-normalised;
    layers of different sizes are first mapped to ``common_dim`` by their own
    linear map (then normalised again, so layer weights stay comparable). The
    normalised layer vectors are averaged with softmax weights (static learned
    logits, plus a per-track score from a small gating MLP when ``gated``). The
    mixture goes to ``fusion_dim`` through a linear projection (started on its
    principal directions, see :meth:`fit_projection`) plus a residual MLP that
    starts at zero, so the untrained network is PCA of the layer mean.
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, layer_dims: Sequence[int], fusion_dim: int = 256, hidden_dim: int = 512,
                 common_dim: int = 256, gated: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.layer_dims = tuple(int(d) for d in layer_dims)
        self.shared = len(set(self.layer_dims)) == 1
        width = self.layer_dims[0] if self.shared else common_dim
        if fusion_dim > width:  # the projection starts as orthonormal rows: at most ``width`` of them
            raise ValueError(f"--fusion-dim ({fusion_dim}) must be at most {width}, the width of the layer mixture")
        total = sum(self.layer_dims)
        self.register_buffer("mean", torch.zeros(total))
        self.register_buffer("std", torch.ones(total))
        self.adapters = nn.ModuleList() if self.shared else nn.ModuleList(
            nn.Linear(d, common_dim) for d in self.layer_dims)
        self.logits = nn.Parameter(torch.zeros(len(self.layer_dims)))
        self.gate = nn.Sequential(nn.Linear(width, 64), nn.GELU(), nn.Linear(64, 1)) if gated else None
        self.project = nn.Linear(width, fusion_dim, bias=False)
        nn.init.orthogonal_(self.project.weight)
        first, last = nn.Linear(width, hidden_dim), nn.Linear(hidden_dim, fusion_dim)
        self.residual = nn.Sequential(first, nn.GELU(), nn.Dropout(dropout), last)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def set_standardisation(self, x: torch.Tensor) -> None:
        """Set per-feature mean and std from training vectors [n, sum(layer_dims)]."""
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(x.std(dim=0, unbiased=False).clamp_min(1e-6))

    @torch.no_grad()
    def fit_projection(self, x: torch.Tensor) -> None:
        """Set the linear projection to the top principal directions of the mixed vectors of ``x``.

        Directions beyond the rank of ``x`` are completed with a random orthonormal
        basis of the rest, so the projection keeps orthonormal rows.
        """
        mixed = torch.cat([self.mix(part) for part in x.split(2048)])
        _, singular, basis = torch.linalg.svd(mixed, full_matrices=False)
        out, width = self.project.weight.shape
        tol = singular.max() * max(mixed.shape) * torch.finfo(mixed.dtype).eps
        weight = basis[:min(out, int((singular > tol).sum()))]
        rank = weight.shape[0]
        if rank < out:
            rest = torch.randn(width, out - rank)
            rest -= weight.T @ (weight @ rest)
            weight = torch.cat([weight, torch.linalg.qr(rest).Q.T])
        self.project.weight.copy_(weight)

    def layer_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised per-layer vectors [batch, L, width]."""
        parts = torch.split((x - self.mean) / self.std, list(self.layer_dims), dim=1)
        normed = [F.layer_norm(p, p.shape[-1:]) for p in parts]
        if not self.shared:
            adapters = cast(list[nn.Linear], list(self.adapters))  # a ModuleList yields plain Modules
            normed = [F.layer_norm(a(p), (a.out_features,)) for a, p in zip(adapters, normed, strict=False)]
        return torch.stack(normed, dim=1)

    def weights(self, h: torch.Tensor) -> torch.Tensor:
        """Softmax layer weights [batch, L] for normalised layer vectors ``h``."""
        scores = self.logits.expand(h.shape[0], -1)
        if self.gate is not None:
            scores = scores + self.gate(h).squeeze(-1)
        return scores.softmax(dim=-1)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the normalised layer vectors [batch, width]."""
        h = self.layer_vectors(x)
        return (self.weights(h).unsqueeze(-1) * h).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused, L2-normalised embeddings [batch, fusion_dim]."""
        mixed = self.mix(x)
        return F.normalize(self.project(mixed) + self.residual(mixed), dim=-1)

    @torch.no_grad()
    def mean_weights(self, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """Layer weights averaged over tracks (equal to the static softmax when not gated), ``batch`` tracks at a
        time: the normalised layer vectors of a whole collection are several times its size."""
        total = sum(self.weights(self.layer_vectors(part)).sum(dim=0) for part in x.split(batch))
        return torch.as_tensor(total) / len(x)
