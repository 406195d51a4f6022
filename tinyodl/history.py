"""The record of a training run returned by :func:`tinyodl.train.fit`, and its plot.

Chapter 00 (foundations).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["History"]


@dataclass
class History:
    """Per-step and per-epoch training curves.

    Attributes
    ----------
    step_loss, step_lr : list of float
        Mini-batch loss and learning rate of every global step.
    train_loss, train_accuracy : list of float
        Per epoch, averaged over the epoch's mini-batches (measured in training mode while the
        weights were still changing).
    val_loss, val_accuracy : list of float or None
        Per epoch, on the validation set after the epoch (None without validation data).
    wall_time : list of float
        Seconds since the start of training at the end of each epoch (resumed runs include
        the time before the interruption).
    """

    step_loss: list[float] = field(default_factory=list)
    step_lr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    val_accuracy: list[float | None] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Number of completed epochs."""
        return len(self.train_loss)

    def end_epoch(self, **values: float | None) -> None:
        """Append one value to each per-epoch list (keyword per list)."""
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "wall_time"):
            value = values[key]
            getattr(self, key).append(None if value is None else float(value))

    def to_dict(self) -> dict[str, list]:
        """Plain lists, JSON-serialisable (stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls(**{key: list(value) for key, value in data.items()})

    def plot(self, path: str | os.PathLike | None = None):
        """Draw the loss (per step and per epoch) and the accuracy per epoch.

        Uses a bare :class:`matplotlib.figure.Figure` (Agg canvas), so it works without a
        display and does not touch pyplot's global state.

        Parameters
        ----------
        path : path-like, optional
            If given, save the figure there (format from the suffix, e.g. ``.png``).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 4), layout="constrained")
        ax_loss, ax_acc = fig.subplots(1, 2)
        steps_per_epoch = len(self.step_loss) / max(self.epochs, 1)
        epoch_x = steps_per_epoch * np.arange(1, self.epochs + 1)
        ax_loss.plot(self.step_loss, lw=0.6, alpha=0.5, label="train (per step)")
        ax_loss.plot(epoch_x, self.train_loss, "o-", label="train (epoch mean)")
        ax_acc.plot(np.arange(1, self.epochs + 1), self.train_accuracy, "o-", label="train")
        if any(v is not None for v in self.val_loss):
            val_loss = [np.nan if v is None else v for v in self.val_loss]
            val_acc = [np.nan if v is None else v for v in self.val_accuracy]
            ax_loss.plot(epoch_x, val_loss, "s-", label="validation")
            ax_acc.plot(np.arange(1, self.epochs + 1), val_acc, "s-", label="validation")
        ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig
