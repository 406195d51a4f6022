"""Gradual pruning during training (Zhu & Gupta 2018, "To prune, or not to prune").

Pruning all at once to 90% removes weights the network still needs; pruning a little at a
time and training in between lets the remaining weights take over. Zhu & Gupta raise the
sparsity from ``s_i`` to ``s_f`` over ``n`` pruning steps spaced ``dt`` training steps apart,
starting at step ``t_0``, with a cubic schedule that prunes fast early (when many weights
are redundant) and slowly at the end::

    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (n dt))^3,    t in {t_0, t_0 + dt, ...}

:func:`gradual_sparsity` is this formula (held constant between pruning steps);
:class:`GradualPruner` recomputes the magnitude masks at each pruning step and, through
:class:`~tinyodl.pruning.magnitude.MaskedOptimizer`, keeps them applied between steps;
:func:`prune_and_finetune` runs the whole thing with :func:`tinyodl.train.fit`.
Chapter 02 (pruning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.pruning.magnitude import (
    MaskedOptimizer,
    apply_masks,
    magnitude_masks,
    prunable_weights,
)


def gradual_sparsity(
    step: int,
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    initial_sparsity: float = 0.0,
    frequency: int = 1,
    power: int = 3,
) -> float:
    """Target sparsity at training step ``step`` of the Zhu & Gupta schedule.

    Parameters
    ----------
    step : int
    final_sparsity, initial_sparsity : float in [0, 1)
        ``s_f`` and ``s_i``.
    begin_step, end_step : int
        ``t_0`` and ``t_0 + n dt``: no pruning before ``begin_step`` (sparsity 0), the final
        sparsity from ``end_step`` on.
    frequency : int, default 1
        ``dt``: the sparsity changes only every ``frequency`` steps after ``begin_step``.
    power : int, default 3
        The exponent (3 in the paper).

    Returns
    -------
    float
    """
    if end_step <= begin_step or frequency < 1:
        raise ValueError(
            f"gradual_sparsity: need end_step > begin_step and frequency >= 1, got "
            f"begin_step={begin_step}, end_step={end_step}, frequency={frequency}"
        )
    if step < begin_step:
        return 0.0
    if step >= end_step:
        return float(final_sparsity)
    t = begin_step + ((step - begin_step) // frequency) * frequency  # last pruning step
    progress = (t - begin_step) / (end_step - begin_step)
    return float(final_sparsity + (initial_sparsity - final_sparsity) * (1 - progress) ** power)


class GradualPruner:
    """Magnitude masks that follow :func:`gradual_sparsity` during training.

    Parameters
    ----------
    model : tinyodl.nn.Layer
    final_sparsity : float
    begin_step, end_step, frequency, initial_sparsity, power : as in :func:`gradual_sparsity`
    scope : {"layer", "global"}, default "global"
    names : list of str, optional
        Which weights to prune (default: every Linear/Conv2d weight).

    Use ``pruner.wrap(optimizer)`` as the optimizer and ``pruner.callback`` as the
    ``callback`` of :func:`tinyodl.train.fit` (it is called after each step with the number
    of steps done). ``masks`` holds the current masks; ``history`` the (step, sparsity)
    of every pruning event.
    """

    def __init__(
        self,
        model: Any,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        frequency: int = 100,
        initial_sparsity: float = 0.0,
        scope: str = "global",
        power: int = 3,
        names: list[str] | None = None,
    ) -> None:
        self.model = model
        self.final_sparsity = final_sparsity
        self.begin_step, self.end_step, self.frequency = begin_step, end_step, frequency
        self.initial_sparsity, self.scope, self.power = initial_sparsity, scope, power
        self.names = list(prunable_weights(model)) if names is None else list(names)
        self.masks = {n: np.ones(p.shape, dtype=bool) for n, p in self._weights().items()}
        self.current_sparsity = 0.0
        self.history: list[tuple[int, float]] = []
        gradual_sparsity(0, final_sparsity, begin_step, end_step, initial_sparsity, frequency)

    def _weights(self):
        weights = prunable_weights(self.model)
        return {n: weights[n] for n in self.names}

    def target(self, step: int) -> float:
        """The schedule's sparsity at ``step``."""
        return gradual_sparsity(
            step,
            self.final_sparsity,
            self.begin_step,
            self.end_step,
            self.initial_sparsity,
            self.frequency,
            self.power,
        )

    def update(self, step: int) -> bool:
        """Prune to the schedule's sparsity at ``step`` if it rose; True if it pruned.

        Weights pruned earlier have magnitude 0, so they are the first to go again: the
        masks only ever lose entries.
        """
        target = self.target(step)
        if target <= self.current_sparsity:
            return False
        new = magnitude_masks(self.model, target, self.scope, self.names)
        for n, m in new.items():
            self.masks[n] = m & self.masks[n]  # in place in the shared dict
        apply_masks(self.model, self.masks)
        self.current_sparsity = target
        self.history.append((int(step), float(target)))
        return True

    def callback(self, step: int, epoch: int, loss: float) -> None:
        """For ``fit(..., callback=pruner.callback)``."""
        self.update(step)

    def wrap(self, optimizer: Any) -> MaskedOptimizer:
        """``optimizer`` wrapped so that it keeps this pruner's masks."""
        return MaskedOptimizer(optimizer, self.masks)


def prune_and_finetune(
    model: Any,
    optimizer: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    final_sparsity: float,
    epochs: int,
    batch_size: int,
    seed: int,
    prune_fraction: float = 0.6,
    frequency: int | None = None,
    scope: str = "global",
    schedule: Any = None,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    progress: bool = False,
) -> tuple[GradualPruner, Any]:
    """Iterative pruning + fine-tuning of a trained model with the cubic schedule.

    The sparsity rises from 0 to ``final_sparsity`` during the first ``prune_fraction`` of
    the training steps (pruning every ``frequency`` steps, default about 20 times), then
    the model trains on at the final sparsity with the masks held.

    Parameters
    ----------
    model : tinyodl.nn.Layer
        Pruned and trained in place.
    optimizer : tinyodl.nn optimizer on ``model``
    x, y : training data; epochs, batch_size, seed : as in :func:`tinyodl.train.fit`
    final_sparsity : float in [0, 1)
    prune_fraction : float, default 0.6
    frequency : int, optional
    scope : {"layer", "global"}, default "global"
    schedule : callable step -> lr, optional
    x_val, y_val : optional validation data for the history
    progress : bool

    Returns
    -------
    pruner : GradualPruner
        Its ``masks`` are the final masks.
    history : tinyodl.train.History
    """
    from tinyodl.train import fit

    steps = epochs * int(np.ceil(len(x) / batch_size))
    end = max(2, int(prune_fraction * steps))
    frequency = frequency or max(1, end // 20)
    pruner = GradualPruner(model, final_sparsity, 0, end, frequency=frequency, scope=scope)
    pruner.update(0)  # the first pruning event happens before any training
    history = fit(
        model,
        pruner.wrap(optimizer),
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        schedule=schedule,
        x_val=x_val,
        y_val=y_val,
        callback=pruner.callback,
        progress=progress,
    )
    return pruner, history
