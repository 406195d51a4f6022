"""Server aggregation: from the clients' model differences to one server step.

Every aggregator maps the round's updates ``delta_k`` (sorted by client id) to a step ``s``
and the server sets ``w_{t+1} = w_t + s`` (extension point 2 in ``docs/architecture.md``).

======================  ===============================================================
:class:`WeightedMean`    ``s = sum_k (n_k / m_t) delta_k``, ``m_t = sum_k n_k``: FedAvg's
                         Algorithm 1 (McMahan et al. 2017), also FedSGD's server step
:class:`ClippedMean`     clip each ``delta_k`` to L2 norm <= C first (bounds any one client)
:class:`FedAvgM`         server momentum (Hsu et al. 2019): ``v <- beta v + mean``,
                         ``s = eta_s v``
:class:`CoordinateMedian`  per coordinate, the median of the deltas (Yin et al. 2018)
:class:`TrimmedMean`     per coordinate, drop ``int(beta m)`` lowest and highest, average
:class:`Krum`            the update closest to its ``m - f - 2`` nearest neighbours
                         (Blanchard et al. 2017); Multi-Krum averages the best few
======================  ===============================================================

FedProx's proximal term acts on the clients (``LocalSGD(prox_mu=...)``), not here. The
robust rules (median, trimmed mean, Krum) are unweighted, as in their papers: weighting by
``n_k`` would let one client claim a large ``n_k``. Sums run in float64 in client-id order, so
the result does not depend on which client finished first. Chapter 09; chapter 11 attacks
these rules with poisoned clients.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "Aggregator",
    "ClippedMean",
    "CoordinateMedian",
    "FedAvgM",
    "Krum",
    "TrimmedMean",
    "WeightedMean",
    "clip_by_norm",
    "krum_scores",
    "weighted_mean",
]


def _check_updates(name: str, updates: list[Any]) -> None:
    if not updates:
        raise ValueError(f"{name}: no client updates to aggregate")
    d = updates[0].delta.shape
    for u in updates:
        if u.delta.shape != d:
            raise ValueError(
                f"{name}: client {u.cid} sent a delta of shape {u.delta.shape}, expected {d}"
            )


def weighted_mean(deltas: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """``sum_k (w_k / sum w) delta_k`` accumulated in float64, in the given order; float32."""
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    if not total > 0:
        raise ValueError(f"weighted_mean: the weights must sum to > 0, got {total}")
    acc = np.zeros(deltas[0].shape, dtype=np.float64)
    for w, delta in zip(weights, deltas, strict=True):
        acc += (w / total) * delta
    return acc.astype(np.float32)


def clip_by_norm(delta: np.ndarray, clip_norm: float) -> np.ndarray:
    """``delta * min(1, C / ||delta||_2)``: scaled down to norm C if longer."""
    norm = float(np.linalg.norm(delta.astype(np.float64)))
    if norm <= clip_norm:
        return delta
    return (delta * (clip_norm / norm)).astype(delta.dtype)


class Aggregator:
    """Base class: ``aggregate(updates, ctx) -> step``; state for checkpoints."""

    def aggregate(self, updates: list[Any], ctx: Any) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class WeightedMean(Aggregator):
    """FedAvg: ``s = sum_k (n_k / m_t) delta_k`` over the reporting clients."""

    def aggregate(self, updates, ctx):
        _check_updates("WeightedMean", updates)
        return weighted_mean([u.delta for u in updates], [u.num_examples for u in updates])


class ClippedMean(Aggregator):
    """Clip every delta to L2 norm <= ``clip_norm``, then the weighted mean."""

    def __init__(self, clip_norm: float) -> None:
        if not clip_norm > 0:
            raise ValueError(f"ClippedMean: clip_norm must be > 0, got {clip_norm}")
        self.clip_norm = float(clip_norm)

    def aggregate(self, updates, ctx):
        _check_updates("ClippedMean", updates)
        deltas = [clip_by_norm(u.delta, self.clip_norm) for u in updates]
        return weighted_mean(deltas, [u.num_examples for u in updates])

    def __repr__(self) -> str:
        return f"ClippedMean(clip_norm={self.clip_norm})"


class FedAvgM(Aggregator):
    """Server momentum: ``v <- beta v + mean_k delta_k``; ``s = server_lr * v``.

    With ``beta = 0`` and ``server_lr = 1`` this is FedAvg. The velocity ``v`` is state (it
    is checkpointed).
    """

    def __init__(self, momentum: float = 0.9, server_lr: float = 1.0) -> None:
        if not 0 <= momentum < 1 or not server_lr > 0:
            raise ValueError(f"FedAvgM: need 0 <= momentum < 1, server_lr > 0; got {momentum}")
        self.momentum, self.server_lr = float(momentum), float(server_lr)
        self.velocity_: np.ndarray | None = None

    def aggregate(self, updates, ctx):
        _check_updates("FedAvgM", updates)
        mean = weighted_mean([u.delta for u in updates], [u.num_examples for u in updates])
        if self.velocity_ is None:
            self.velocity_ = np.zeros_like(mean)
        self.velocity_ = (self.momentum * self.velocity_ + mean).astype(np.float32)
        return (self.server_lr * self.velocity_).astype(np.float32)

    def state_dict(self):
        return {} if self.velocity_ is None else {"velocity": self.velocity_.copy()}

    def load_state_dict(self, state):
        self.velocity_ = np.array(state["velocity"], copy=True) if "velocity" in state else None

    def __repr__(self) -> str:
        return f"FedAvgM(momentum={self.momentum}, server_lr={self.server_lr})"


class CoordinateMedian(Aggregator):
    """Per coordinate, the median of the clients' deltas (unweighted)."""

    def aggregate(self, updates, ctx):
        _check_updates("CoordinateMedian", updates)
        return np.median(np.stack([u.delta for u in updates]), axis=0).astype(np.float32)


class TrimmedMean(Aggregator):
    """Per coordinate, drop the ``int(beta m)`` smallest and largest values, average the rest.

    Needs ``m > 2 int(beta m)`` updates.
    """

    def __init__(self, beta: float = 0.1) -> None:
        if not 0 <= beta < 0.5:
            raise ValueError(f"TrimmedMean: beta must be in [0, 0.5), got {beta}")
        self.beta = float(beta)

    def aggregate(self, updates, ctx):
        _check_updates("TrimmedMean", updates)
        m = len(updates)
        cut = int(self.beta * m)
        if m - 2 * cut < 1:
            raise ValueError(f"TrimmedMean: {m} updates leave nothing after trimming {cut} twice")
        ordered = np.sort(np.stack([u.delta for u in updates]), axis=0)
        kept = ordered[cut : m - cut].astype(np.float64)
        return kept.mean(axis=0).astype(np.float32)

    def __repr__(self) -> str:
        return f"TrimmedMean(beta={self.beta})"


def krum_scores(deltas: np.ndarray, num_byzantine: int) -> np.ndarray:
    """Krum score of each row: sum of squared distances to its ``m - f - 2`` nearest others.

    Parameters
    ----------
    deltas : ndarray (m, d)
    num_byzantine : int
        f, the number of malicious clients tolerated; needs ``m > 2 f + 2``.
    """
    m = len(deltas)
    if m <= 2 * num_byzantine + 2:
        raise ValueError(f"Krum: needs more than 2f + 2 = {2 * num_byzantine + 2} updates, got {m}")
    d64 = deltas.astype(np.float64)
    sq = (d64 * d64).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (d64 @ d64.T), 0.0)
    np.fill_diagonal(dist, np.inf)
    nearest = np.sort(dist, axis=1)[:, : m - num_byzantine - 2]
    return nearest.sum(axis=1)


class Krum(Aggregator):
    """Krum / Multi-Krum: the ``multi`` updates with the lowest scores, averaged.

    ``multi=1`` is Krum (one client's update becomes the step). Ties go to the lower cid.
    """

    def __init__(self, num_byzantine: int = 1, multi: int = 1) -> None:
        if num_byzantine < 0 or multi < 1:
            raise ValueError(f"Krum: need num_byzantine >= 0, multi >= 1; got {num_byzantine}")
        self.num_byzantine, self.multi = int(num_byzantine), int(multi)
        self.last_selected_: list[int] = []

    def aggregate(self, updates, ctx):
        _check_updates("Krum", updates)
        scores = krum_scores(np.stack([u.delta for u in updates]), self.num_byzantine)
        best = np.argsort(scores, kind="stable")[: self.multi]
        self.last_selected_ = [updates[i].cid for i in sorted(best)]
        chosen = [updates[i].delta for i in sorted(best)]
        return weighted_mean(chosen, np.ones(len(chosen)))

    def __repr__(self) -> str:
        return f"Krum(f={self.num_byzantine}, multi={self.multi})"
