"""Differentially private PCA ("Analyze Gauss", Dwork, Talwar, Thakurta & Zhang 2014).

Chapter 10, the Abadi et al. reproduction: the MNIST model of Abadi et al. (2016) first
projects each image onto 60 principal directions, and the projection itself is learned from
the private training set, so it must be private too (and its cost counted).

Each row is scaled to norm at most 1, so adding or removing one example changes the
second-moment matrix ``A = X^T X`` by ``x x^T``, whose Frobenius norm is ``||x||^2 <= 1``.
Adding symmetric Gaussian noise -- i.i.d. N(0, sigma^2) on the upper triangle and the
diagonal, mirrored below -- is then a Gaussian mechanism with noise multiplier sigma
(RDP ``alpha / (2 sigma^2)``, composed by :meth:`RDPAccountant.compose_gaussian`). The top
eigenvectors of the noisy matrix are the projection; everything after is post-processing.

:func:`dp_mean` releases the mean of the rows the same way (rows clipped to a norm bound,
Gaussian noise on the sum), so the projected features can be centred, as an ordinary PCA
centres its data, at the price of one more Gaussian release in the accountant.
"""

from __future__ import annotations

import numpy as np

from tinyodl.nn.utils import SeedLike, as_generator

__all__ = ["dp_mean", "dp_pca"]


def dp_pca(
    x: np.ndarray, num_components: int, noise_multiplier: float, rng: SeedLike = None
) -> np.ndarray:
    """Top principal directions of the (noisy) uncentred second-moment matrix.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    num_components : int, k <= D
    noise_multiplier : float
        sigma, the noise std per entry (the sensitivity is 1 after row clipping); 0 gives
        the ordinary (non-private) PCA of the row-normalised data.
    rng : int or Generator, optional

    Returns
    -------
    ndarray, shape (D, k), float64, orthonormal columns (largest eigenvalue first)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"dp_pca: x must be (N, D), got shape {x.shape}")
    d = x.shape[1]
    if not 1 <= num_components <= d:
        raise ValueError(f"dp_pca: num_components must be in [1, {d}], got {num_components}")
    if not noise_multiplier >= 0:
        raise ValueError(f"dp_pca: noise_multiplier must be >= 0, got {noise_multiplier!r}")
    rows = _clip_rows(x, 1.0)  # sensitivity 1
    a = rows.T @ rows
    if noise_multiplier > 0:
        noise = np.triu(noise_multiplier * as_generator(rng).standard_normal((d, d)))
        a = a + noise + np.triu(noise, 1).T
    eigenvalues, eigenvectors = np.linalg.eigh(a)
    return eigenvectors[:, np.argsort(eigenvalues)[::-1][:num_components]]


def dp_mean(
    x: np.ndarray, clip_norm: float, noise_multiplier: float, rng: SeedLike = None
) -> np.ndarray:
    """Mean of the rows of ``x`` by the Gaussian mechanism.

    ``(sum_i clip(x_i) + N(0, sigma^2 C^2 I)) / N``: each row is clipped to L2 norm ``C``, so
    one example moves the sum by at most ``C`` (sensitivity ``C``); the count ``N`` is
    treated as public, as DP-SGD's sampling rate ``q = L / N`` is. The release composes in
    :class:`RDPAccountant` as ``compose_gaussian(noise_multiplier)``.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    clip_norm : float
        C > 0. A bound known before seeing the data clips nothing (e.g. ``sqrt(D)`` for
        pixels in [0, 1] and an orthonormal projection of them).
    noise_multiplier : float
        sigma >= 0; 0 gives the exact mean of the clipped rows.
    rng : int or Generator, optional

    Returns
    -------
    ndarray, shape (D,), float64
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"dp_mean: x must be (N, D) with N >= 1, got shape {x.shape}")
    if not clip_norm > 0:
        raise ValueError(f"dp_mean: clip_norm must be > 0, got {clip_norm!r}")
    if not noise_multiplier >= 0:
        raise ValueError(f"dp_mean: noise_multiplier must be >= 0, got {noise_multiplier!r}")
    total = _clip_rows(x, clip_norm).sum(axis=0)
    if noise_multiplier > 0:
        total += noise_multiplier * clip_norm * as_generator(rng).standard_normal(x.shape[1])
    return total / len(x)


def _clip_rows(x: np.ndarray, clip_norm: float) -> np.ndarray:
    """Each row of ``x`` (N, D) scaled down to L2 norm at most ``clip_norm``."""
    return x / np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True) / clip_norm)
