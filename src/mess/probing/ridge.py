"""Multi-target ridge regression with per-target penalties chosen by exact leave-one-(group-)out.

Without groups, the same estimator as ``sklearn.linear_model.RidgeCV(alphas,
alpha_per_target=True)`` (efficient LOO, intercept unpenalised). With groups (albums,
artists), whole groups are held out when choosing the penalty: with plain LOO a
track's album-mates vouch for a penalty far too weak, and the probe then
extrapolates wildly to the unseen albums of the outer fold. Both are exact, from one
symmetric eigendecomposition of the training matrix (covariance or Gram, whichever
is smaller) that serves every target and every penalty: ridge is a linear smoother
``H``, so the residuals of a held-out group ``g`` are ``(I - H_gg)^-1 r_g``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg


@dataclass(frozen=True)
class RidgeFit:
    """A fitted multi-target ridge: ``predict(x) = x @ coef + intercept``."""

    coef: np.ndarray  # [n_features, n_targets]
    intercept: np.ndarray  # [n_targets]
    alphas: np.ndarray  # [n_targets], the penalty chosen for each target

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for rows of ``x``: [n_rows, n_targets]."""
        return np.asarray(x, dtype=self.coef.dtype) @ self.coef + self.intercept


def fit_ridge_loo(x: np.ndarray, y: np.ndarray, alphas: np.ndarray, groups: np.ndarray | None = None) -> RidgeFit:
    """Fit ridge for every target, choosing each target's alpha by exact held-out MSE.

    Args:
        x: [n, p] features (standardise them first; this function only centres).
        y: [n, t] targets.
        alphas: candidate penalties.
        groups: [n] labels; rows sharing one are held out together (leave-one-group-out).
            None: leave-one-out.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    u, eig = _left_eigvectors(xc)
    uty = u.T @ yc  # [r, t]
    u2 = u * u
    alphas = np.asarray(alphas, dtype=np.float64)
    best_mse = np.full(y.shape[1], np.inf)
    best_alpha = np.full(y.shape[1], alphas.max())  # kept if every LOO error is undefined
    blocks = [] if groups is None else _group_blocks(groups)
    for alpha in alphas:
        shrink = eig / (eig + alpha)
        leverage = u2 @ shrink + 1.0 / n  # hat-matrix diagonal, unpenalised intercept included
        residual = yc - u @ (shrink[:, None] * uty)
        held_out = residual / (1.0 - leverage)[:, None]
        for rows in blocks:  # groups of one size: [n_groups, size] row indices
            u_g = u[rows]  # [G, s, r]
            hat = np.einsum("gsr,r,gtr->gst", u_g, shrink, u_g) + 1.0 / n
            with np.errstate(all="ignore"):
                try:
                    held_out[rows] = np.linalg.solve(np.eye(rows.shape[1]) - hat, residual[rows])
                except np.linalg.LinAlgError:  # a group fully determines its own fit: never pick this alpha
                    held_out[rows] = np.inf
        mse = (held_out**2).mean(axis=0)
        better = mse < best_mse
        best_mse[better], best_alpha[better] = mse[better], alpha
    coef = xc.T @ (u @ (uty / (eig[:, None] + best_alpha[None, :])))
    return RidgeFit(coef, y_mean - x_mean @ coef, best_alpha)


def _group_blocks(groups: np.ndarray) -> list[np.ndarray]:
    """Row indices of every group of two or more rows, stacked by group size.

    Empty when there is a single group: nothing can be left out, so leave-one-out applies.
    """
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    if len(counts) < 2:
        return []
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(counts)[:-1])
    by_size: dict[int, list[np.ndarray]] = {}
    for m in members:
        if len(m) > 1:
            by_size.setdefault(len(m), []).append(m)
    return [np.stack(rows) for rows in by_size.values()]


def _left_eigvectors(xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors U [n, r] and squared singular values of ``xc`` (non-null part).

    Decomposes the smaller of the covariance (p x p) and the Gram matrix (n x n).
    """
    n, p = xc.shape
    if p <= n:
        eig, v = scipy.linalg.eigh(xc.T @ xc, driver="evd")
        keep = eig > eig.max(initial=0.0) * 1e-10
        eig, v = eig[keep], v[:, keep]
        return (xc @ v) / np.sqrt(eig), eig
    eig, u = scipy.linalg.eigh(xc @ xc.T, driver="evd")
    keep = eig > eig.max(initial=0.0) * 1e-10
    return u[:, keep], eig[keep]
