"""Learning-rate schedules: callables ``step -> lr`` used by :func:`tinyodl.train.fit`.

``step`` is the global optimisation step, counted from 0. A schedule is a pure function of
the step, so a resumed run needs no schedule state. Any function ``f(step) -> float`` works
as a schedule; the classes below are the usual ones (Goyal et al. 2017 for linear warmup,
Loshchilov & Hutter 2017 for cosine annealing). Chapter 00 (foundations).
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["Constant", "Cosine", "LinearWarmup", "StepDecay", "Schedule"]

Schedule = Callable[[int], float]


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


class Constant:
    """``lr(step) = lr``."""

    def __init__(self, lr: float) -> None:
        _positive("Constant: lr", lr)
        self.lr = float(lr)

    def __call__(self, step: int) -> float:
        return self.lr

    def __repr__(self) -> str:
        return f"Constant(lr={self.lr})"


class StepDecay:
    """``lr(step) = lr * gamma ** (step // step_size)``: multiply by ``gamma`` every
    ``step_size`` steps."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        _positive("StepDecay: lr", lr)
        _positive("StepDecay: step_size", step_size)
        self.lr, self.step_size, self.gamma = float(lr), int(step_size), float(gamma)

    def __call__(self, step: int) -> float:
        return self.lr * self.gamma ** (step // self.step_size)

    def __repr__(self) -> str:
        return f"StepDecay(lr={self.lr}, step_size={self.step_size}, gamma={self.gamma})"


class Cosine:
    """Cosine annealing from ``lr`` at step 0 to ``min_lr`` at ``total_steps`` (then flat).

    ``lr(t) = min_lr + (lr - min_lr) * (1 + cos(pi * t / total_steps)) / 2``.
    """

    def __init__(self, lr: float, total_steps: int, min_lr: float = 0.0) -> None:
        _positive("Cosine: lr", lr)
        _positive("Cosine: total_steps", total_steps)
        self.lr, self.total_steps, self.min_lr = float(lr), int(total_steps), float(min_lr)

    def __call__(self, step: int) -> float:
        t = min(step, self.total_steps) / self.total_steps
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def __repr__(self) -> str:
        return f"Cosine(lr={self.lr}, total_steps={self.total_steps}, min_lr={self.min_lr})"


class LinearWarmup:
    """Ramp linearly up to ``after(warmup_steps)`` over ``warmup_steps``, then follow ``after``.

    For ``step < warmup_steps``:
    ``lr = after(warmup_steps) * (start_factor + (1 - start_factor) * step / warmup_steps)``;
    afterwards ``lr = after(step)``. ``after`` may be a schedule or a constant learning rate.
    """

    def __init__(
        self, after: Schedule | float, warmup_steps: int, start_factor: float = 0.0
    ) -> None:
        self.after = after if callable(after) else Constant(after)
        _positive("LinearWarmup: warmup_steps", warmup_steps)
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"LinearWarmup: start_factor must be in [0, 1], got {start_factor}")
        self.warmup_steps, self.start_factor = int(warmup_steps), float(start_factor)

    def __call__(self, step: int) -> float:
        if step >= self.warmup_steps:
            return self.after(step)
        fraction = self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        return self.after(self.warmup_steps) * fraction

    def __repr__(self) -> str:
        return (
            f"LinearWarmup({self.after!r}, warmup_steps={self.warmup_steps}, "
            f"start_factor={self.start_factor})"
        )
