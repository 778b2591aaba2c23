"""Multi-target ridge regression with per-target penalties chosen by exact leave-one-out.

The same estimator as ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=True)``
(efficient LOO, intercept unpenalised), organised for probing: one symmetric
eigendecomposition of the training matrix (covariance or Gram, whichever is
smaller) serves every target and every penalty, so a whole layer is fitted for all
targets in about the time of one decomposition.
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


def fit_ridge_loo(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> RidgeFit:
    """Fit ridge for every target, choosing each target's alpha by exact leave-one-out MSE.

    Args:
        x: [n, p] features (standardise them first; this function only centres).
        y: [n, t] targets.
        alphas: candidate penalties.
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
    for alpha in alphas:
        shrink = eig / (eig + alpha)
        leverage = u2 @ shrink + 1.0 / n  # hat-matrix diagonal, unpenalised intercept included
        residual = yc - u @ (shrink[:, None] * uty)
        mse = ((residual / (1.0 - leverage)[:, None]) ** 2).mean(axis=0)
        better = mse < best_mse
        best_mse[better], best_alpha[better] = mse[better], alpha
    coef = xc.T @ (u @ (uty / (eig[:, None] + best_alpha[None, :])))
    return RidgeFit(coef, y_mean - x_mean @ coef, best_alpha)


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
