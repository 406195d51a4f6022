"""Adversarial training: train on the attack, not only on the data (chapter 11).

Madry et al. (2018) write robustness as a saddle-point problem,

    min_theta  E_(x, y) [ max_(||delta||_inf <= eps)  L(theta, x + delta, y) ],

and solve the inner maximisation with PGD on every mini-batch (:func:`adversarial_fit` with
``method="pgd"``). Their MNIST CNN reaches 98.8% clean and 93.2% accuracy under PGD-40 at
``eps = 0.3``, but each step costs ``k + 1`` forward/backward passes. Wong, Rice and Kolter
(2020, "Fast is better than free") get most of that robustness from a *single* FGSM step
taken from a uniformly random point of the ball, with a step ``alpha = 1.25 eps``
(``method="fgsm_rs"``): two passes per step. Plain FGSM from the clean point
(``method="fgsm"``) tends to "catastrophic overfitting": the model learns to mask the
one-step gradient and PGD then breaks it; the random start is what prevents it.

:func:`robust_cnn` is the small MNIST network of Wong et al. (two strided 4x4 convolutions
and a 100-unit hidden layer, 166k parameters): ten times cheaper per example than
``cnn_mcmahan``, which is what lets adversarial training finish in minutes on two CPU cores.
:class:`OneCycle` is their triangular learning-rate schedule.

The chapter's benchmark (``tinyodl bench security``) measures clean and PGD-20 accuracy of
the result and the wall time of training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tinyodl.attacks.estimator import Classifier
from tinyodl.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
from tinyodl.data import BatchSampler
from tinyodl.history import History
from tinyodl.nn import Conv2d, Flatten, Linear, ReLU, Sequential, softmax_cross_entropy
from tinyodl.nn.utils import as_generator
from tinyodl.train import DivergenceError, evaluate

METHODS = ("fgsm_rs", "pgd", "fgsm")


def robust_cnn(seed: int | np.random.Generator = 0, num_classes: int = 10) -> Sequential:
    """The MNIST network of Wong et al. (2020): conv4x4/2 x16 - conv4x4/2 x32 - fc100 - fc10.

    Input (N, 1, 28, 28); 166,406 parameters. No pooling (strided convolutions), so it is
    also what :mod:`tinyodl.quantization` can turn into an int8 on-device model.
    """
    rng = as_generator(seed)
    s = [int(v) for v in rng.integers(2**31, size=4)]
    features = Sequential(
        [
            Conv2d(1, 16, 4, stride=2, padding=1, seed=s[0]),
            ReLU(),
            Conv2d(16, 32, 4, stride=2, padding=1, seed=s[1]),
            ReLU(),
            Flatten(),
        ]
    )
    classifier = Sequential(
        [Linear(32 * 7 * 7, 100, seed=s[2]), ReLU(), Linear(100, num_classes, seed=s[3])]
    )
    return Sequential({"features": features, "classifier": classifier})


class OneCycle:
    """Triangular learning rate: 0 -> ``lr_max`` over the first half, back to 0 at the end.

    ``lr(t) = lr_max * (1 - |2 t / total_steps - 1|)`` for ``0 <= t <= total_steps``.
    """

    def __init__(self, lr_max: float, total_steps: int) -> None:
        if not lr_max > 0 or int(total_steps) < 1:
            raise ValueError(
                f"OneCycle: need lr_max > 0 and total_steps >= 1, got {lr_max}, {total_steps}"
            )
        self.lr_max, self.total_steps = float(lr_max), int(total_steps)

    def __call__(self, step: int) -> float:
        t = min(max(step, 0), self.total_steps) / self.total_steps
        return self.lr_max * (1.0 - abs(2.0 * t - 1.0))

    def __repr__(self) -> str:
        return f"OneCycle(lr_max={self.lr_max}, total_steps={self.total_steps})"


def make_training_attack(
    model: Any,
    method: str,
    eps: float,
    eps_step: float | None = None,
    steps: int = 10,
    seed: int | np.random.Generator = 0,
    clip_values: tuple[float, float] = (0.0, 1.0),
):
    """The inner maximisation of adversarial training, as an attack object on ``model``.

    ``fgsm_rs``: FGSM from a random start, step ``eps_step`` (default ``1.25 eps``).
    ``pgd``: PGD with a random start, ``steps`` steps of ``eps_step`` (default ``2.5 eps /
    steps``). ``fgsm``: FGSM from the clean point, step ``eps``.
    """
    if method not in METHODS:
        raise ValueError(f"adversarial training: method must be one of {METHODS}, got {method!r}")
    clf = Classifier(model, clip_values=clip_values)
    rng = as_generator(seed)
    if method == "fgsm_rs":
        alpha = 1.25 * eps if eps_step is None else eps_step
        return FastGradientMethod(clf, eps=eps, eps_step=alpha, num_random_init=1, seed=rng)
    if method == "pgd":
        alpha = 2.5 * eps / steps if eps_step is None else eps_step
        return ProjectedGradientDescent(
            clf, eps=eps, eps_step=alpha, max_iter=steps, num_random_init=1, seed=rng
        )
    return FastGradientMethod(clf, eps=eps)


def adversarial_fit(
    model: Any,
    optimizer: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    eps: float,
    epochs: int,
    batch_size: int,
    seed: int,
    method: str = "fgsm_rs",
    eps_step: float | None = None,
    steps: int = 10,
    eps_warmup_steps: int = 0,
    schedule: Callable[[int], float] | None = None,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    x_check: np.ndarray | None = None,
    y_check: np.ndarray | None = None,
    check_steps: int = 10,
    restore_best: bool = True,
    progress: bool = True,
    max_steps: int | None = None,
) -> History:
    """Train ``model`` on adversarial examples of each mini-batch (Madry et al. 2018).

    Parameters
    ----------
    model : tinyodl.nn.Sequential
        Trained in place, in training mode; the attack runs it in evaluation mode with its
        parameters frozen (no weight gradients are computed or accumulated while crafting).
    optimizer : tinyodl.nn optimizer
    x_train : ndarray (N, 1, 28, 28) float in [0, 1]
    y_train : ndarray (N,) int
    eps : float
        L-infinity radius of the training attack.
    epochs, batch_size, seed : int
        As :func:`tinyodl.train.fit` (same batches for the same seed); the attack's random
        starts come from ``default_rng([seed, 1])``.
    method : {"fgsm_rs", "pgd", "fgsm"}
        See :func:`make_training_attack`.
    eps_step, steps : optional
        Step length and PGD steps of the training attack.
    eps_warmup_steps : int, default 0
        Ramp the training radius linearly from 0 to ``eps`` over these steps.
    schedule : callable, optional
        ``step -> lr``.
    x_val, y_val : ndarray, optional
        Clean validation accuracy after every epoch.
    x_check, y_check : ndarray, optional
        A small held-out set for Wong et al.'s guard against *catastrophic overfitting*
        (the model learns to defeat the one-step attack only, and its accuracy under PGD
        collapses within an epoch): after every epoch, accuracy under PGD-``check_steps``
        (random start, step ``eps / 4``) is measured on it and stored in
        ``history.check_accuracy``; when it falls more than 0.2 below its best, training
        stops. With ``restore_best`` the weights of the best epoch are put back at the end.
    check_steps : int, default 10
    restore_best : bool, default True
    progress : bool
        tqdm progress bar.
    max_steps : int, optional
        Stop after this many steps.

    Returns
    -------
    History
        ``train_loss`` / ``train_accuracy`` are on the adversarial batches.
    """
    if len(x_train) != len(y_train) or len(x_train) == 0:
        raise ValueError(
            f"adversarial_fit: x_train has {len(x_train)} examples, y_train {len(y_train)}"
        )
    attack = make_training_attack(
        model, method, eps, eps_step, steps, seed=np.random.default_rng([seed, 1])
    )
    model.train()
    sampler = BatchSampler(len(x_train), batch_size, seed)
    history, step, t0 = History(), 0, time.perf_counter()
    history.check_accuracy = []  # PGD accuracy on the check set, per epoch
    best = (-1.0, None)
    total = epochs * len(sampler) if max_steps is None else min(max_steps, epochs * len(sampler))
    bar = _bar(progress, total)
    try:
        for epoch in range(epochs):
            loss_sum, correct, count = 0.0, 0, 0
            for idx in sampler:
                if max_steps is not None and step >= max_steps:
                    break
                xb, yb = x_train[idx], y_train[idx]
                attack.eps = (
                    eps * min(1.0, (step + 1) / eps_warmup_steps) if eps_warmup_steps else eps
                )
                if method == "fgsm_rs" and eps_step is None:
                    attack.eps_step = 1.25 * attack.eps
                x_adv = attack.generate(xb, yb) if attack.eps > 0 else xb
                if schedule is not None:
                    optimizer.lr = schedule(step)
                optimizer.zero_grad()
                logits = model.forward(x_adv)
                value, dlogits = softmax_cross_entropy(logits, yb)
                if not np.isfinite(value):
                    raise DivergenceError(
                        f"adversarial_fit: loss is {value} at step {step} (epoch {epoch})",
                        step,
                        epoch,
                        "loss",
                    )
                model.backward(dlogits)
                optimizer.step()
                history.step_loss.append(float(value))
                history.step_lr.append(float(optimizer.lr))
                loss_sum += float(value) * len(yb)
                correct += int(np.sum(np.argmax(logits, axis=1) == yb))
                count += len(yb)
                step += 1
                bar.update(1)
            val = (None, None) if x_val is None else evaluate(model, x_val, y_val)
            history.end_epoch(
                train_loss=loss_sum / max(count, 1),
                train_accuracy=correct / max(count, 1),
                val_loss=val[0],
                val_accuracy=val[1],
                wall_time=time.perf_counter() - t0,
            )
            if x_check is not None:
                acc = _check_accuracy(model, x_check, y_check, eps, check_steps, seed + epoch)
                history.check_accuracy.append(acc)
                if acc > best[0]:
                    best = (acc, {k: v.copy() for k, v in model.state_dict().items()})
                elif acc < best[0] - 0.2:
                    break  # catastrophic overfitting: the one-step attack no longer teaches
            if max_steps is not None and step >= max_steps:
                break
    finally:
        bar.close()
    if restore_best and best[1] is not None:
        model.load_state_dict(best[1])
    return history


def _check_accuracy(model, x, y, eps: float, steps: int, seed: int) -> float:
    from tinyodl.attacks.evasion import adversarial_accuracy

    attack = ProjectedGradientDescent(
        model, eps=eps, eps_step=eps / 4, max_iter=steps, num_random_init=1, seed=seed
    )
    accuracy = adversarial_accuracy(model, attack, x, y)
    model.train()
    return accuracy


def _bar(enabled: bool, total: int):
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="adversarial training", unit="step")

    class _Null:
        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    return _Null()


__all__ = ["METHODS", "OneCycle", "adversarial_fit", "make_training_attack", "robust_cnn"]
