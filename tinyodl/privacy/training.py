"""The DP-SGD training loop, its record, and averaging of the iterates.

Chapter 10. :func:`fit_dpsgd` runs :class:`~tinyodl.privacy.dpsgd.DPSGD` on Poisson lots for
a number of epochs and records epsilon after each epoch. :class:`ParameterAverage` keeps an
exponential moving average (EMA) of the weights: the noise DP-SGD adds makes the iterates
wander around the optimum, and averaging them cancels much of that wander (De et al. 2022
use it for their DP ImageNet results). Averaging reads only the released iterates, so it is
post-processing and costs no privacy. ``fit_dpsgd(augment=..., multiplicity=K)`` trains with
augmentation multiplicity (De et al. 2022): each example of a lot is augmented K times and its
gradient is the mean over the copies, clipped once -- less variance in each clipped gradient at
no privacy cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyodl.history import History
from tinyodl.privacy.dpsgd import DPSGD, poisson_sample

__all__ = ["DPRun", "ParameterAverage", "fit_dpsgd"]


@dataclass
class DPRun:
    """What :func:`fit_dpsgd` returns.

    Attributes
    ----------
    history : History (per-epoch train/validation curves)
    epsilons : list of float, epsilon at ``delta`` after each epoch
    sample_rate, steps, noise_multiplier, delta, seconds
    """

    history: History
    epsilons: list[float]
    sample_rate: float
    steps: int
    noise_multiplier: float
    delta: float
    seconds: float


class ParameterAverage:
    """Exponential moving average of a model's trainable parameters.

    ``avg <- d_t * avg + (1 - d_t) * w`` after update t, starting at the weights given to
    the constructor, with ``d_t = min(decay, (1 + t) / (10 + t))``: a short window at first
    (the early iterates are far from the later ones), the full one later. :meth:`swap`
    exchanges the model's weights with the average (call it twice to swap back).

    Parameters
    ----------
    model : tinyodl Layer
    decay : float in [0, 1)
        The time constant is ``1 / (1 - decay)`` steps.
    """

    def __init__(self, model, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"ParameterAverage: decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.params = [p for _, p in model.named_parameters() if p.trainable]
        self.average_ = [p.data.astype(np.float64) for p in self.params]
        self.updates_ = 0

    def update(self) -> None:
        d = min(self.decay, (1 + self.updates_) / (10 + self.updates_))
        for avg, p in zip(self.average_, self.params, strict=True):
            avg *= d
            avg += (1.0 - d) * p.data
        self.updates_ += 1

    def swap(self) -> None:
        for i, p in enumerate(self.params):
            current = p.data.copy()
            p.data[...] = self.average_[i]
            self.average_[i] = current.astype(np.float64)


def fit_dpsgd(
    model,
    optimizer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    lot_size: int,
    clip_norm: float,
    noise_multiplier: float,
    epochs: float,
    delta: float,
    seed: int,
    schedule: Callable[[int], float] | None = None,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    clipping: str = "per_example",
    max_physical_batch_size: int | None = None,
    progress: bool = False,
    prior: Any = None,
    average: float | None = None,
    augment: Callable[[np.ndarray, int, np.random.Generator], np.ndarray] | None = None,
    multiplicity: int = 1,
) -> DPRun:
    """Train with DP-SGD: Poisson lots of expected size ``lot_size``, ``epochs * n / L`` steps.

    The noise and the lots come from ``default_rng([seed, 0])`` and ``default_rng([seed, 1])``.
    The run's privacy is ``epsilon(q=lot_size / n, noise_multiplier, steps, delta)`` (RDP,
    improved conversion), plus whatever the accountant ``prior`` already holds; an epoch is
    ``round(n / lot_size)`` steps. With ``average=decay`` the validation accuracy is that of
    the :class:`ParameterAverage` of the iterates, and the model ends holding that average.

    With ``augment``, each lot ``x[idx]`` goes through ``augment(x[idx], multiplicity, rng)``
    (``rng = default_rng([seed, 2])``), which must return ``multiplicity`` model inputs per
    example, example-major (rows ``i K .. i K + K - 1`` are example ``i``'s copies); ``x`` is
    then whatever ``augment`` reads (images, say) and ``x_val`` the model's input.
    """
    if multiplicity != 1 and augment is None:
        raise ValueError(
            f"fit_dpsgd: multiplicity={multiplicity!r} needs augment= (K identical copies of an "
            "example would only repeat its gradient)"
        )
    n = len(x)
    q = lot_size / n
    steps_per_epoch = max(1, round(n / lot_size))
    dp = DPSGD(
        model,
        optimizer,
        clip_norm=clip_norm,
        noise_multiplier=noise_multiplier,
        expected_batch_size=lot_size,
        sample_rate=q,
        clipping=clipping,
        max_physical_batch_size=max_physical_batch_size,
        seed=np.random.default_rng([seed, 0]),
        prior=prior,
        multiplicity=multiplicity,
    )
    lots, augmentations = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    history, epsilons = History(), []
    total_steps = int(round(epochs * steps_per_epoch))
    t0 = time.perf_counter()
    bar = _progress(progress, total_steps)
    accum = [0.0, 0, 0]
    ema = ParameterAverage(model, average) if average is not None else None
    for step in range(total_steps):
        if schedule is not None:
            optimizer.lr = float(schedule(step))
        idx = poisson_sample(n, q, lots)
        xb = x[idx] if augment is None else _augmented(augment, x[idx], multiplicity, augmentations)
        stats = dp.step(xb, y[idx])
        accum[0] += 0.0 if not len(idx) else stats["loss"] * len(idx)
        accum[2] += len(idx)
        if ema is not None:
            ema.update()
        if bar is not None:
            bar.update(1)
        if (step + 1) % steps_per_epoch == 0 or step + 1 == total_steps:
            val = _evaluate(model, ema, x_val, y_val)
            history.end_epoch(
                train_loss=accum[0] / max(accum[2], 1),
                train_accuracy=None,
                val_loss=val[0],
                val_accuracy=val[1],
                wall_time=time.perf_counter() - t0,
            )
            epsilons.append(dp.epsilon(delta))
            accum = [0.0, 0, 0]
            if bar is not None:
                bar.set_postfix(eps=f"{epsilons[-1]:.2f}", acc=val[1])
    if bar is not None:
        bar.close()
    if ema is not None:
        ema.swap()  # the model ends with the averaged weights
    return DPRun(
        history, epsilons, q, total_steps, noise_multiplier, delta, time.perf_counter() - t0
    )


def _augmented(augment, x, multiplicity: int, rng: np.random.Generator) -> np.ndarray:
    """``augment(x, K, rng)``, checked to give K rows per example."""
    out = np.asarray(augment(x, multiplicity, rng))
    if len(out) != multiplicity * len(x):
        raise ValueError(
            f"fit_dpsgd: augment returned {len(out)} rows for {len(x)} examples; expected "
            f"multiplicity x examples = {multiplicity * len(x)}"
        )
    return out


def _evaluate(model, ema, x_val, y_val):
    from tinyodl.train import evaluate

    if x_val is None:
        return None, None
    if ema is None:
        return evaluate(model, x_val, y_val)
    ema.swap()
    try:
        return evaluate(model, x_val, y_val)
    finally:
        ema.swap()


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="DP-SGD", unit="step")
