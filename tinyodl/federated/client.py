"""Clients and the client update: Algorithm 1's ClientUpdate, FedSGD and FedProx.

McMahan et al. (2017), Algorithm 1, runs on client k with the global weights w::

    B <- split P_k into batches of size B
    for each local epoch i = 1..E:
        for batch b in B:
            w <- w - eta * grad l(w; b)
    return w to the server

With ``B = infinity`` and ``E = 1`` this is one full-batch gradient step, and the server's
weighted average of the returned weights is ``w_t - eta * sum_k (n_k / m_t) g_k``: FedSGD.
:class:`LocalSGD` implements both; the client returns the *model difference*
``delta_k = w_k - w_t`` rather than ``w_k`` (the same information, and what compression and
secure aggregation work on). FedProx (Li et al. 2020) adds ``mu/2 ||w - w_t||^2`` to the local
loss, i.e. ``mu (w - w_t)`` to every gradient of a shared parameter.

A simulated client is only data *indices*, a seed and a device profile
(:class:`Client`); the server trains every client on one reused *worker model*, so 1,000
clients cost 1,000 index arrays, not 1,000 models. The update function's contract is in
``docs/architecture.md`` ("Federated engine", extension point 1). Chapter 09.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.nn import SGD, softmax_cross_entropy

__all__ = [
    "Client",
    "ClientJob",
    "ClientUpdate",
    "LocalResult",
    "LocalSGD",
    "ParamLayout",
    "SimulatedCrash",
    "make_clients",
]


class SimulatedCrash(RuntimeError):
    """Raised inside a client's training when fault injection makes it crash mid-round."""


@dataclass(frozen=True)
class Client:
    """One simulated device: which examples it holds, its seed, and its hardware.

    Attributes
    ----------
    cid : int
        Client id (its index in the federation's client list).
    indices : ndarray of int64
        Indices of its examples in the federation's training arrays.
    seed : int
        Its local randomness in round t is ``default_rng([seed, t])``.
    profile : DeviceProfile or None
        Simulated compute, bandwidth, availability and battery (``selection.py``).
    """

    cid: int
    indices: np.ndarray
    seed: int
    profile: Any = None

    @property
    def num_examples(self) -> int:
        return int(len(self.indices))


def make_clients(
    parts: Sequence[np.ndarray], seed: int = 0, profiles: Sequence[Any] | None = None
) -> list[Client]:
    """Clients ``0..K-1`` from a partition; client k's seed is drawn from ``[seed, k]``."""
    if profiles is not None and len(profiles) != len(parts):
        raise ValueError(f"make_clients: {len(parts)} parts but {len(profiles)} profiles")
    clients = []
    for k, idx in enumerate(parts):
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1 or len(idx) == 0:
            raise ValueError(f"make_clients: client {k} needs a non-empty 1-D index array")
        client_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        profile = None if profiles is None else profiles[k]
        clients.append(Client(k, idx, client_seed, profile))
    return clients


class ParamLayout:
    """Which parameters of a model are shared (federated), and their place in a flat vector.

    Parameters
    ----------
    model : tinyodl.nn.Layer
    shared : sequence of str or None
        Name prefixes of the federated parameters (``["features"]``); None means all.
    """

    def __init__(self, model: Any, shared: Sequence[str] | None = None) -> None:
        named = list(model.named_parameters())
        if shared is None:
            chosen = named
        else:
            prefixes = [shared] if isinstance(shared, str) else list(shared)

            def is_shared(name: str) -> bool:
                return any(name == p or name.startswith(p + ".") for p in prefixes)

            chosen = [(n, p) for n, p in named if is_shared(n)]
            if not chosen:
                raise ValueError(
                    f"ParamLayout: no parameter matches {prefixes}; parameters are "
                    f"{[n for n, _ in named]}"
                )
        chosen_names = {n for n, _ in chosen}
        self.shared = chosen
        self.private = [(n, p) for n, p in named if n not in chosen_names]
        self.names = [n for n, _ in chosen]
        self.size = sum(p.size for _, p in chosen)
        self.private_size = sum(p.size for _, p in self.private)

    @staticmethod
    def _get(pairs) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([p.data.ravel() for _, p in pairs]).astype(np.float32, copy=False)

    @staticmethod
    def _set(pairs, vec: np.ndarray) -> None:
        offset = 0
        for _, p in pairs:
            p.data[...] = vec[offset : offset + p.size].reshape(p.shape)
            offset += p.size

    def get(self) -> np.ndarray:
        """The shared parameters as a new flat float32 vector (model order)."""
        return self._get(self.shared)

    def set(self, vec: np.ndarray) -> None:
        """Copy a flat vector into the shared parameters."""
        if vec.shape != (self.size,):
            raise ValueError(f"ParamLayout.set: expected shape ({self.size},), got {vec.shape}")
        self._set(self.shared, vec)

    def get_private(self) -> np.ndarray:
        return self._get(self.private)

    def set_private(self, vec: np.ndarray) -> None:
        if vec.shape != (self.private_size,):
            raise ValueError(
                f"ParamLayout.set_private: expected shape ({self.private_size},), got {vec.shape}"
            )
        self._set(self.private, vec)

    def views(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        """Name -> array view into ``vec`` shaped like each shared parameter."""
        out, offset = {}, 0
        for name, p in self.shared:
            out[name] = vec[offset : offset + p.size].reshape(p.shape)
            offset += p.size
        return out


@dataclass
class ClientJob:
    """Everything a client update function gets (extension point 1).

    Attributes
    ----------
    cid, round : int
    model : Layer
        The worker model, already holding the global parameters (and, for a split model, this
        client's private part). Trainable flags say what the client may train.
    x, y : ndarray
        This client's examples.
    global_params : ndarray (d,) float32, read-only
    rng : numpy Generator
        ``default_rng([client.seed, round])``.
    state : dict name -> ndarray
        This client's persistent state (replace arrays, do not mutate them in place).
    layout : ParamLayout
        The shared parameters of ``model``.
    crash_after_steps : int or None
        Fault injection: :meth:`step` raises :class:`SimulatedCrash` at this step.
    """

    cid: int
    round: int
    model: Any
    x: np.ndarray
    y: np.ndarray
    global_params: np.ndarray
    rng: np.random.Generator
    state: dict[str, np.ndarray]
    layout: ParamLayout
    crash_after_steps: int | None = None
    steps_done: int = 0

    @property
    def shared(self) -> list[str]:
        return self.layout.names

    def global_views(self) -> dict[str, np.ndarray]:
        """Shared parameter name -> the global value (read-only views)."""
        return self.layout.views(self.global_params)

    def local_delta(self) -> np.ndarray:
        """``w_local - w_global`` over the shared parameters, float32 (d,)."""
        return (self.layout.get() - self.global_params).astype(np.float32, copy=False)

    def step(self) -> None:
        """Count one local step; crash here if fault injection says so."""
        self.steps_done += 1
        if self.crash_after_steps is not None and self.steps_done > self.crash_after_steps:
            raise SimulatedCrash(
                f"client {self.cid} crashed after {self.crash_after_steps} local steps "
                f"(round {self.round}, simulated fault)"
            )


@dataclass
class LocalResult:
    """What a client update function returns: ``delta`` (d,) float32, n_k, metrics."""

    delta: np.ndarray
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ClientUpdate:
    """A client's update as the server received it (after decompression).

    ``delta`` (d,) float32; ``bytes_up`` what it sent; ``sim_seconds`` its simulated round
    time (download + compute + upload) from its device profile (0 without a profile).
    """

    cid: int
    delta: np.ndarray
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    bytes_up: int = 0
    sim_seconds: float = 0.0


class LocalSGD:
    """Algorithm 1's ClientUpdate: E epochs of mini-batch SGD (FedAvg, FedSGD, FedProx).

    Parameters
    ----------
    epochs : int
        E, local epochs.
    batch_size : int or None
        B; None is B = infinity (one full-batch step per epoch: FedSGD when E = 1).
    lr : float
        eta, the local learning rate.
    prox_mu : float, default 0
        FedProx's proximal coefficient mu (0: plain FedAvg).
    momentum : float, default 0
        Local SGD momentum (reset every round: clients are stateless).
    loss : callable, default softmax cross-entropy
        ``f(logits, y) -> (loss, dlogits)``, mean over the batch.

    Each epoch visits the client's examples in the order ``rng.permutation(n)`` (not drawn
    when B = infinity); the last batch may be smaller than B.
    """

    def __init__(
        self,
        epochs: int = 1,
        batch_size: int | None = 10,
        lr: float = 0.1,
        prox_mu: float = 0.0,
        momentum: float = 0.0,
        loss: Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]] = softmax_cross_entropy,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"LocalSGD: epochs must be >= 1, got {epochs}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"LocalSGD: batch_size must be >= 1 or None, got {batch_size}")
        if not lr > 0 or prox_mu < 0:
            raise ValueError(f"LocalSGD: need lr > 0 and prox_mu >= 0, got {lr}, {prox_mu}")
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.prox_mu, self.momentum, self.loss = prox_mu, momentum, loss

    def work(self, num_examples: int) -> int:
        """Examples processed by one client update (for simulated compute time)."""
        return self.epochs * num_examples

    def __call__(self, job: ClientJob) -> LocalResult:
        model, n = job.model, len(job.y)
        model.train()
        opt = SGD(model, lr=self.lr, momentum=self.momentum)
        prox = None
        if self.prox_mu:
            views = job.global_views()
            prox = [(p, views[name]) for name, p in job.layout.shared if p.trainable]
        batch = n if self.batch_size is None else self.batch_size
        total, seen = 0.0, 0
        for _ in range(self.epochs):
            order = np.arange(n) if self.batch_size is None else job.rng.permutation(n)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                job.step()
                opt.zero_grad()
                value, dlogits = self.loss(model.forward(job.x[idx]), job.y[idx])
                if not np.isfinite(value):
                    raise FloatingPointError(
                        f"LocalSGD: client {job.cid} diverged in round {job.round} "
                        f"(loss {value}); lower the learning rate"
                    )
                model.backward(dlogits)
                if prox is not None:
                    for p, w_global in prox:
                        if p.grad is not None:
                            p.grad += self.prox_mu * (p.data - w_global)
                opt.step()
                total += float(value) * len(idx)
                seen += len(idx)
        return LocalResult(job.local_delta(), n, {"loss": total / max(seen, 1)})

    def __repr__(self) -> str:
        b = "inf" if self.batch_size is None else self.batch_size
        extra = f", prox_mu={self.prox_mu}" if self.prox_mu else ""
        return f"LocalSGD(E={self.epochs}, B={b}, lr={self.lr}{extra})"
