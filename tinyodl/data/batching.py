"""Mini-batches and train/validation splits, seeded and resumable.

Every shuffle is drawn from a seed or a :class:`numpy.random.Generator` given by the caller.
:class:`BatchSampler` derives the permutation of epoch ``e`` from ``(seed, e)`` alone, so its
whole state is three integers (seed, epoch, position): a checkpoint that stores them lets an
interrupted training run continue with exactly the batches it would have seen.
Chapter 00 (foundations).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["BatchSampler", "batches", "train_val_split"]


def _as_rng(rng: int | np.random.Generator | None, caller: str) -> np.random.Generator:
    if rng is None:
        raise ValueError(f"{caller}: shuffling needs a seed or a numpy Generator (rng=...)")
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_xy(x: np.ndarray, y: np.ndarray, caller: str) -> None:
    if len(x) != len(y):
        raise ValueError(f"{caller}: x has {len(x)} examples but y has {len(y)}")


def train_val_split(
    x: np.ndarray,
    y: np.ndarray,
    val_fraction: float,
    rng: int | np.random.Generator,
    stratify: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``(x, y)`` at random into a training and a validation part.

    Parameters
    ----------
    x : ndarray, shape (N, ...)
    y : ndarray of int, shape (N,)
    val_fraction : float in (0, 1)
        Share of the examples that go to validation.
    rng : int or numpy.random.Generator
        Seed or generator for the random choice.
    stratify : bool
        Keep the class proportions: ``round(val_fraction * N_c)`` examples of each class
        ``c`` go to validation.

    Returns
    -------
    x_train, y_train, x_val, y_val : ndarray
        Both parts keep the original order of the examples.
    """
    _check_xy(x, y, "train_val_split")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in (0, 1), got {val_fraction}")
    rng = _as_rng(rng, "train_val_split")
    y = np.asarray(y)
    if stratify:
        groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    else:
        groups = [np.arange(len(y))]
    val = [rng.permutation(g)[: int(round(val_fraction * len(g)))] for g in groups]
    is_val = np.zeros(len(y), dtype=bool)
    is_val[np.concatenate(val)] = True
    return x[~is_val], y[~is_val], x[is_val], y[is_val]


class BatchSampler:
    """Index batches over ``n`` examples, epoch after epoch, with a resumable state.

    The order of epoch ``e`` is ``default_rng([seed, e]).permutation(n)`` (or ``arange(n)``
    when ``shuffle=False``). Iterating yields the remaining batches of the current epoch,
    advancing :attr:`position` before each batch is handed out, and moves to the next epoch
    when the epoch is exhausted.

    Parameters
    ----------
    n : int
        Number of examples.
    batch_size : int
    seed : int
        Seed of the per-epoch permutations.
    shuffle : bool
    drop_last : bool
        Skip the last, smaller batch of each epoch.

    Attributes
    ----------
    epoch : int
        Current epoch (0-based).
    position : int
        Number of examples of the current epoch already handed out.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = False
    ) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(
                f"BatchSampler: need n >= 1 and batch_size >= 1, got {n}, {batch_size}"
            )
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The example order of ``epoch``, shape (n,)."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self.order(self.epoch)
        end = len(self) * self.batch_size if self.drop_last else self.n
        while self.position < end:
            start = self.position
            self.position = min(start + self.batch_size, self.n)
            yield order[start : self.position]
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        """The sampler state as plain integers (JSON-serialisable)."""
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "shuffle": int(self.shuffle),
            "drop_last": int(self.drop_last),
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a state saved by :meth:`state_dict` (n and batch_size must match)."""
        for key in ("n", "batch_size"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"BatchSampler.load_state_dict: saved {key}={state[key]}, "
                    f"this sampler has {getattr(self, key)}"
                )
        self.seed, self.shuffle = int(state["seed"]), bool(state["shuffle"])
        self.drop_last = bool(state["drop_last"])
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rng: int | np.random.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield one epoch of mini-batches ``(x[idx], y[idx])``.

    Parameters
    ----------
    x : ndarray, shape (N, ...)
    y : ndarray, shape (N,)
    batch_size : int
    rng : int or numpy.random.Generator, optional
        Seed or generator of the shuffle; required when ``shuffle=True``.
    shuffle : bool
    drop_last : bool
        Skip the last batch when it is smaller than ``batch_size``.

    Yields
    ------
    xb : ndarray, shape (B, ...)
    yb : ndarray, shape (B,)
    """
    _check_xy(x, y, "batches")
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be >= 1, got {batch_size}")
    n = len(x)
    order = _as_rng(rng, "batches").permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]
