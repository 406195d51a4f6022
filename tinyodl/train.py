"""The training loop: mini-batch gradient descent with a divergence guard and exact resume.

:func:`fit` runs the loop every chapter builds on::

    for each mini-batch (x, y):
        lr <- schedule(step);  zero the gradients
        logits = model.forward(x)          # the model's mode: model.train() by fit
        loss, dlogits = loss_fn(logits, y)
        model.backward(dlogits);  optimizer.step()

It checks after every step that the loss, the gradients and the parameters are finite
(:class:`DivergenceError` otherwise), records a :class:`History`, and can write checkpoints
from which an interrupted run continues to *exactly* the weights of an uninterrupted one:
the checkpoint holds the model and optimizer state, the batch sampler's (seed, epoch,
position) and the history, and nothing else in the loop is random.
Chapter 00 (foundations); LR schedules are in :mod:`tinyodl.schedules`.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tinyodl.checkpoint import (
    CheckpointError,
    check_writable,
    load_checkpoint,
    pack_state,
    save_checkpoint,
    unpack_state,
)
from tinyodl.data.batching import BatchSampler
from tinyodl.history import History
from tinyodl.schedules import Constant, Cosine, LinearWarmup, Schedule, StepDecay

__all__ = [
    "Constant",
    "Cosine",
    "DivergenceError",
    "History",
    "LinearWarmup",
    "StepDecay",
    "evaluate",
    "fit",
    "predict",
]

LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


class DivergenceError(FloatingPointError):
    """Training produced a NaN or infinite loss, gradient or parameter.

    Attributes
    ----------
    step : int
        Global step (0-based) at which the problem appeared.
    epoch : int
        Epoch (0-based) of that step.
    where : str
        ``"loss"`` or the dotted name of the first parameter affected.
    """

    def __init__(self, message: str, step: int, epoch: int, where: str) -> None:
        super().__init__(message)
        self.step, self.epoch, self.where = step, epoch, where


# --- losses --------------------------------------------------------------------------------


#: Short names accepted for ``loss=``, and the :mod:`tinyodl.nn` function each stands for.
LOSS_ALIASES = {"cross_entropy": "softmax_cross_entropy", "mse": "mse_loss"}


def _resolve_loss(loss: str | LossFn) -> LossFn:
    """Turn a loss name from :mod:`tinyodl.nn` into ``f(logits, y) -> (loss, dlogits)``."""
    if callable(loss):
        return loss
    from tinyodl import nn

    fn = getattr(nn, LOSS_ALIASES.get(loss, loss), None)
    if not callable(fn) or loss.startswith("_"):
        raise ValueError(
            f"fit: unknown loss {loss!r}; use {sorted(LOSS_ALIASES)}, a loss function name "
            "of tinyodl.nn, or a callable f(logits, y) -> (loss, dlogits)"
        )
    return fn


# --- guards --------------------------------------------------------------------------------


def _first_non_finite(model: Any, attribute: str) -> str | None:
    """Name of the first parameter whose ``.data``/``.grad`` has a NaN or inf, else None."""
    for name, param in model.named_parameters():
        value = getattr(param, attribute)
        if value is not None and not np.isfinite(value).all():
            return name
    return None


def _guard(model: Any, loss_value: float, step: int, epoch: int, stage: str) -> None:
    """Raise :class:`DivergenceError` if the loss (stage "loss"), any gradient ("grad") or
    any parameter ("data") is not finite."""
    where = None
    if stage == "loss":
        where = None if np.isfinite(loss_value) else "loss"
    else:
        where = _first_non_finite(model, stage)
    if where is None:
        return
    what = {"loss": "the loss", "grad": f"the gradient of {where!r}", "data": f"{where!r}"}
    raise DivergenceError(
        f"fit: training diverged at step {step} (epoch {epoch}): {what[stage]} is not finite "
        f"(loss = {loss_value}); try a smaller learning rate, gradient clipping, or check "
        "the input scaling",
        step,
        epoch,
        where,
    )


# --- evaluation ----------------------------------------------------------------------------


def _batched_logits(model: Any, x: np.ndarray, batch_size: int):
    for start in range(0, len(x), batch_size):
        yield start, model.forward(x[start : start + batch_size], train=False)


def evaluate(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 1000,
    loss: str | LossFn = "cross_entropy",
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)``, in inference mode.

    Parameters
    ----------
    model : tinyodl.nn.Sequential or any Layer
    x : ndarray, shape (N, ...)
    y : ndarray of int, shape (N,)
    batch_size : int
        Examples per forward pass (bounds the memory).
    loss : str or callable
        As in :func:`fit`.

    Returns
    -------
    loss : float
        Mean over the N examples.
    accuracy : float
        Fraction of examples whose arg-max logit is the label.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"evaluate: need matching non-empty x, y; got {len(x)} and {len(y)}")
    loss_fn = _resolve_loss(loss)
    total, correct = 0.0, 0
    for start, logits in _batched_logits(model, x, batch_size):
        yb = y[start : start + batch_size]
        value, _ = loss_fn(logits, yb)
        total += float(value) * len(yb)
        correct += int(np.sum(np.argmax(logits, axis=1) == yb))
    return total / len(x), correct / len(x)


def predict(model: Any, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes (arg-max logits), int64 of shape (N,), in inference mode."""
    if len(x) == 0:
        raise ValueError("predict: x is empty")
    out = [np.argmax(logits, axis=1) for _, logits in _batched_logits(model, x, batch_size)]
    return np.concatenate(out).astype(np.int64)


# --- checkpoints ---------------------------------------------------------------------------


def _layer_generators(model: Any) -> dict[str, np.random.Generator]:
    """Every numpy Generator a layer keeps (e.g. ``Dropout.rng``), by ``"layer.attr"``.

    Their states go into the checkpoint, so a resumed run draws the same dropout masks.
    """
    found = {}
    for name, layer in [("", model), *model.named_layers()]:
        for attr, value in vars(layer).items():
            if isinstance(value, np.random.Generator):
                found[f"{name}.{attr}" if name else attr] = value
    return found


def _save(path: Path, model, optimizer, sampler: BatchSampler, run: dict) -> None:
    model_arrays, model_skeleton = pack_state(model.state_dict(), "model")
    optim_arrays, optim_skeleton = pack_state(optimizer.state_dict(), "optim")
    metadata = {
        "kind": "tinyodl.train.fit",
        "step": run["step"],
        "sampler": sampler.state_dict(),
        "accum": run["accum"],
        "elapsed": time.perf_counter() - run["t0"],
        "history": run["history"].to_dict(),
        "model": model_skeleton,
        "optim": optim_skeleton,
        "generators": {k: g.bit_generator.state for k, g in _layer_generators(model).items()},
    }
    save_checkpoint(path, {**model_arrays, **optim_arrays}, metadata)


#: What a checkpoint of :func:`fit` holds in its metadata, and the JSON type of each entry.
_META_TYPES = {
    "kind": str,
    "step": int,
    "sampler": dict,
    "accum": list,
    "elapsed": (int, float),
    "history": dict,
    "model": dict,
    "optim": dict,
    "generators": dict,
}
_SAMPLER_KEYS = ("n", "batch_size", "seed", "shuffle", "drop_last", "epoch", "position")


def _check_metadata(path: Path, meta: dict) -> None:
    """Raise :class:`CheckpointError` naming ``path`` unless ``meta`` has fit's layout."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"fit: {path}: {what}; not a checkpoint of tinyodl.train.fit")

    if meta.get("kind") != "tinyodl.train.fit":
        raise bad(f"kind is {meta.get('kind')!r}")
    for key, kind in _META_TYPES.items():
        if key not in meta:
            raise bad(f"metadata has no {key!r}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise bad(f"metadata {key!r} is a {type(meta[key]).__name__}")
    for key in _SAMPLER_KEYS:
        if not isinstance(meta["sampler"].get(key), int):
            raise bad(f"sampler state has no integer {key!r}")
    if len(meta["accum"]) != 3:
        raise bad(f"'accum' has {len(meta['accum'])} entries, expected 3")


def _validated_state(path: Path, model, optimizer, sampler, seed: int) -> tuple[dict, dict]:
    """Read the checkpoint and check that every part fits, without changing anything.

    Returns the metadata and the unpacked states. Raises :class:`CheckpointError` naming the
    file (or ``ValueError`` for a different seed) before anything was written.
    """
    arrays, meta = load_checkpoint(path)
    _check_metadata(path, meta)
    if meta["sampler"]["seed"] != seed:
        raise ValueError(
            f"fit: {path} was written with seed={meta['sampler']['seed']}, resumed with "
            f"seed={seed}; use the same seed for an exact resume"
        )
    states = {
        "model": unpack_state(arrays, meta["model"], path),
        "optim": unpack_state(arrays, meta["optim"], path),
    }
    try:
        states["history"] = History.from_dict(meta["history"])
        for key in ("n", "batch_size"):
            if meta["sampler"][key] != getattr(sampler, key):
                raise ValueError(
                    f"it was written for {key}={meta['sampler'][key]}, this run has "
                    f"{getattr(sampler, key)} (same data and batch size needed)"
                )
        if hasattr(model, "check_state_dict"):
            model.check_state_dict(states["model"])
        if hasattr(optimizer, "check_state_dict"):
            optimizer.check_state_dict(states["optim"])
        generators = _layer_generators(model)
        if generators.keys() != meta["generators"].keys():
            raise ValueError(
                f"it holds random generators {sorted(meta['generators'])}, the model has "
                f"{sorted(generators)}"
            )
        for key, state in meta["generators"].items():  # try each state on a throwaway copy
            type(generators[key].bit_generator)().state = state
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"fit: {path} does not fit this run: {err}") from err
    return meta, states


def _restore(path: Path, model, optimizer, sampler: BatchSampler, seed: int) -> dict:
    """Resume from ``path``: validate everything first, then write (all or nothing)."""
    meta, states = _validated_state(path, model, optimizer, sampler, seed)
    sampler.load_state_dict(meta["sampler"])
    model.load_state_dict(states["model"])
    optimizer.load_state_dict(states["optim"])
    generators = _layer_generators(model)
    for key, state in meta["generators"].items():
        generators[key].bit_generator.state = state
    return {
        "step": meta["step"],
        "accum": meta["accum"],
        "t0": time.perf_counter() - meta["elapsed"],
        "history": states["history"],
    }


# --- the loop ------------------------------------------------------------------------------


def _train_step(model, optimizer, loss_fn, xb, yb, lr, run, epoch) -> float:
    """One step of gradient descent with the divergence guard; updates ``run``."""
    step = run["step"]
    optimizer.lr = lr
    optimizer.zero_grad()
    logits = model.forward(xb)  # follows the layers' modes (fit put the model in training mode)
    value, dlogits = loss_fn(logits, yb)
    value = float(value)
    _guard(model, value, step, epoch, "loss")
    model.backward(dlogits)
    _guard(model, value, step, epoch, "grad")
    optimizer.step()
    _guard(model, value, step, epoch, "data")
    run["step"] = step + 1
    run["history"].step_loss.append(value)
    run["history"].step_lr.append(float(lr))
    accum = run["accum"]
    accum[0] += value * len(yb)
    accum[1] += int(np.sum(np.argmax(logits, axis=1) == yb)) if yb.ndim == 1 else 0
    accum[2] += len(yb)
    return value


def _end_epoch(model, run, x_val, y_val, loss, batch_size) -> None:
    """Record the epoch's train (running) and validation loss/accuracy and the wall time."""
    total_loss, correct, count = run["accum"]
    val = (None, None) if x_val is None else evaluate(model, x_val, y_val, batch_size, loss)
    run["history"].end_epoch(
        train_loss=total_loss / max(count, 1),
        train_accuracy=correct / max(count, 1),
        val_loss=val[0],
        val_accuracy=val[1],
        wall_time=time.perf_counter() - run["t0"],
    )
    run["accum"] = [0.0, 0, 0]


def fit(
    model: Any,
    optimizer: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    loss: str | LossFn = "cross_entropy",
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    schedule: Schedule | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    callback: Callable[[int, int, float], None] | None = None,
) -> History:
    """Train ``model`` with mini-batch gradient descent.

    Parameters
    ----------
    model : tinyodl.nn.Sequential
        Trained in place. ``fit`` calls ``model.train()`` first when the model is in
        evaluation mode; sub-layers put in evaluation mode on a model in training mode (a
        batchnorm whose statistics are kept fixed while fine-tuning) stay as they are.
    optimizer : tinyodl.nn optimizer
        Built on ``model``'s parameters; its ``lr`` is set before each step.
    x_train : ndarray, shape (N, ...)
        Model inputs, e.g. ``tinyodl.data.to_float(images)`` of shape (N, 1, 28, 28).
    y_train : ndarray of int, shape (N,)
    epochs, batch_size : int
    seed : int
        Seed of the per-epoch shuffles (:class:`tinyodl.data.BatchSampler`).
    loss : str or callable
        A loss of :mod:`tinyodl.nn` by name, or ``f(logits, y) -> (mean loss, dlogits)``.
    x_val, y_val : ndarray, optional
        Evaluated at the end of every epoch.
    schedule : callable, optional
        ``step -> lr`` (see :mod:`tinyodl.schedules`); default: keep ``optimizer.lr``.
    checkpoint_path : path-like, optional
        Where to write checkpoints: every ``checkpoint_every`` steps and when training
        stops. Its folder must exist: ``fit`` checks it (and that it is writable) before the
        first step and raises :class:`~tinyodl.checkpoint.CheckpointError` otherwise; it
        never creates folders, so a mistyped path fails at once instead of after training.
    checkpoint_every : int, optional
        Steps between checkpoints.
    resume : bool
        Continue from ``checkpoint_path`` if it exists (same data, batch size and seed).
        Everything in the checkpoint is validated against the model, optimizer and data
        before anything is written: a checkpoint that does not fit raises
        :class:`~tinyodl.checkpoint.CheckpointError` naming the file and leaves the model
        and optimizer untouched.
    progress : bool
        Show a tqdm progress bar.
    max_steps : int, optional
        Stop once this many global steps are done (the run can be resumed later).
    callback : callable, optional
        ``callback(step, epoch, loss)`` after every step (after the checkpoint, if any).

    Returns
    -------
    History
        Per-step loss and lr, per-epoch train/validation loss and accuracy, wall time.

    Raises
    ------
    DivergenceError
        When the loss, a gradient or a parameter stops being finite.
    """
    if len(x_train) != len(y_train) or len(x_train) == 0:
        raise ValueError(f"fit: x_train has {len(x_train)} examples, y_train {len(y_train)}")
    if (x_val is None) != (y_val is None):
        raise ValueError("fit: give both x_val and y_val, or neither")
    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("fit: checkpoint_every needs a checkpoint_path")
    loss_fn = _resolve_loss(loss)
    if not getattr(model, "training", True):
        model.train()
    sampler = BatchSampler(len(x_train), batch_size, seed)
    path = None if checkpoint_path is None else Path(checkpoint_path)
    if path is not None:
        check_writable(path, "fit")
    run = {"step": 0, "accum": [0.0, 0, 0], "t0": time.perf_counter(), "history": History()}
    if resume and path is not None and path.exists():
        run = _restore(path, model, optimizer, sampler, seed)
    elif resume:
        warnings.warn(f"fit: no checkpoint at {path}; starting from scratch", stacklevel=2)
    total = epochs * len(sampler) if max_steps is None else min(max_steps, epochs * len(sampler))
    bar = _progress_bar(progress, total, run["step"])
    try:
        while sampler.epoch < epochs and (max_steps is None or run["step"] < max_steps):
            epoch = sampler.epoch
            for idx in sampler:
                step, xb, yb = run["step"], x_train[idx], y_train[idx]
                lr = optimizer.lr if schedule is None else schedule(step)
                value = _train_step(model, optimizer, loss_fn, xb, yb, lr, run, epoch)
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(epoch=epoch, loss=f"{value:.4f}", refresh=False)
                if checkpoint_every and run["step"] % checkpoint_every == 0:
                    _save(path, model, optimizer, sampler, run)
                if callback is not None:
                    callback(run["step"], epoch, value)
                if max_steps is not None and run["step"] >= max_steps:
                    break
            else:
                _end_epoch(model, run, x_val, y_val, loss_fn, batch_size)
        if path is not None:
            _save(path, model, optimizer, sampler, run)
    finally:
        bar.close()
    return run["history"]


def _progress_bar(enabled: bool, total: int, initial: int):
    if enabled:
        from tqdm.auto import tqdm  # a widget in Jupyter, text in a terminal
    else:
        from tqdm import tqdm  # hidden: don't look for notebook widgets at all
    return tqdm(
        total=total, initial=initial, disable=not enabled, unit="step", leave=False, mininterval=0.5
    )
