"""White-box evasion attacks: FGSM and PGD (chapter 11).

An evasion attack changes an input at inference time, within a small budget, so that the
model gets it wrong (the textbook's "adversarial attacks", section 12.6.2). The attacker here
knows the model and follows its input gradient ``g = dL/dx``:

* **FGSM** (Goodfellow et al. 2015), one step:
  ``x' = clip(x + eps * sign(g), 0, 1)`` -- :class:`FastGradientMethod` with ``norm=inf``.
  With ``norm=2`` the step is ``eps * g / ||g||_2`` (the "fast gradient method").
* **PGD** (Madry et al. 2018), many small steps, each projected back onto the ball
  ``||x' - x|| <= eps`` and into the valid range, optionally from a random point of the ball:
  ``x_{k+1} = x + P_eps(clip(x_k + alpha * step(g_k), 0, 1) - x)`` --
  :class:`ProjectedGradientDescent`, for L-infinity (``step = sign``, ``P`` clips each pixel
  to ``[-eps, eps]``) and L2 (``step = g / ||g||``, ``P`` rescales ``delta`` to length ``eps``
  when it is longer).

Untargeted attacks *increase* the loss of the true label (or of the model's own prediction
when ``y`` is not given, which avoids "label leaking"); targeted ones *decrease* the loss of
the target label. The parameters and the order of operations follow the Adversarial
Robustness Toolbox (``FastGradientMethod``, ``ProjectedGradientDescent``), and the tests hold
the two equal on identical inputs (``tests/test_attacks_art.py``). Madry et al. report, for
MNIST at ``eps = 0.3``, 6.4% accuracy of a naturally trained CNN under FGSM; the chapter's
benchmark (``tinyodl bench security``) measures ours.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.attacks.estimator import Classifier, as_classifier
from tinyodl.nn.utils import as_generator

SeedLike = int | np.random.Generator | None


# ----------------------------------------------------------------------------- geometry


def check_norm(norm: Any, who: str) -> float:
    """``np.inf`` or ``2.0`` from ``norm`` (``np.inf``, ``"inf"`` or 2); anything else raises."""
    if norm in (np.inf, "inf"):
        return np.inf
    if norm == 2:
        return 2.0
    raise ValueError(f"{who}: norm must be np.inf (or 'inf') or 2, got {norm!r}")


def _flat_norm(v: np.ndarray) -> np.ndarray:
    """L2 norm of each example, shaped to broadcast against ``v`` (N, 1, 1, ...)."""
    n = np.sqrt(np.sum(v.reshape(len(v), -1).astype(np.float64) ** 2, axis=1))
    return n.reshape((len(v),) + (1,) * (v.ndim - 1))


def projection(delta: np.ndarray, eps: float, norm: Any = np.inf) -> np.ndarray:
    """Project each example's perturbation onto the ``norm`` ball of radius ``eps``.

    Parameters
    ----------
    delta : ndarray, shape (N, ...)
    eps : float
    norm : np.inf or 2
        L-infinity: clip every entry to ``[-eps, eps]``. L2: rescale rows longer than
        ``eps`` to length ``eps`` (rows inside the ball are unchanged).

    Returns
    -------
    ndarray, shape and dtype of ``delta``
    """
    norm = check_norm(norm, "projection")
    if norm == np.inf:
        return np.clip(delta, -eps, eps)
    length = _flat_norm(delta)
    scale = np.minimum(1.0, eps / np.where(length > 0, length, 1.0))
    return (delta * scale).astype(delta.dtype, copy=False)


def random_ball(shape: tuple[int, ...], eps: float, norm: Any, seed: SeedLike) -> np.ndarray:
    """Points drawn uniformly from the ``norm`` ball of radius ``eps`` (one per row).

    L-infinity: each entry uniform in ``[-eps, eps]``. L2: a Gaussian direction times
    ``eps * U^(1/d)`` with ``U`` uniform in [0, 1] (uniform in the volume of the ball).
    Returns float64 of ``shape``.
    """
    norm = check_norm(norm, "random_ball")
    rng = as_generator(seed)
    if norm == np.inf:
        return rng.uniform(-eps, eps, size=shape)
    n, d = shape[0], int(np.prod(shape[1:]))
    g = rng.standard_normal((n, d))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    radius = eps * rng.uniform(size=(n, 1)) ** (1.0 / d)
    return (g * radius).reshape(shape)


def steepest_ascent(grad: np.ndarray, norm: Any) -> np.ndarray:
    """The unit-``norm`` direction that increases ``<grad, step>`` most.

    L-infinity: ``sign(grad)``. L2: ``grad / ||grad||_2`` per example (0 for a zero gradient).
    """
    norm = check_norm(norm, "steepest_ascent")
    if norm == np.inf:
        return np.sign(grad)
    length = _flat_norm(grad)
    return (grad / np.where(length > 0, length, np.inf)).astype(grad.dtype, copy=False)


# ----------------------------------------------------------------------------- shared set-up


class EvasionAttack:
    """What every evasion attack shares: the estimator, labels, success and restarts."""

    def __init__(self, estimator: Any, targeted: bool = False) -> None:
        self.estimator: Classifier = as_classifier(estimator)
        self.targeted = bool(targeted)

    def _labels(self, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        """``y`` as int labels; the model's predictions when ``y`` is None (untargeted)."""
        name = type(self).__name__
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise ValueError(f"{name}.generate: x must be a float array, got dtype {x.dtype}")
        if y is None:
            if self.targeted:
                raise ValueError(f"{name}.generate: a targeted attack needs the target labels y")
            return self.estimator.predict_labels(x)
        y = np.asarray(y)
        if y.ndim == 2:  # one-hot, as ART accepts
            y = np.argmax(y, axis=1)
        if y.shape != (len(x),) or y.dtype.kind not in "iu":
            raise ValueError(
                f"{name}.generate: y must be int labels of shape ({len(x)},) or one-hot "
                f"({len(x)}, C), got shape {y.shape} and dtype {y.dtype}"
            )
        return y.astype(np.int64)

    def success(self, x_adv: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-example success (bool (N,)): misclassified, or classified as the target."""
        pred = self.estimator.predict_labels(x_adv)
        return pred == y if self.targeted else pred != y

    def _direction(self, x: np.ndarray, y: np.ndarray, norm: float) -> np.ndarray:
        g = self.estimator.loss_gradient(x, y)
        if self.targeted:
            g = -g  # descend the loss of the target class
        return steepest_ascent(g, norm)


def _check_budget(who: str, eps: float, eps_step: float | None = None) -> None:
    if not eps >= 0:
        raise ValueError(f"{who}: eps must be >= 0, got {eps}")
    if eps_step is not None and not eps_step > 0:
        raise ValueError(f"{who}: eps_step must be > 0, got {eps_step}")


# ----------------------------------------------------------------------------- FGSM / FGM


class FastGradientMethod(EvasionAttack):
    """One gradient step (FGSM for ``norm=inf``), optionally from a random start.

    Parameters
    ----------
    estimator : Classifier or tinyodl model
        A model is wrapped in a :class:`~tinyodl.attacks.Classifier` with clip values (0, 1).
    norm : np.inf or 2, default np.inf
    eps : float, default 0.3
        Radius of the allowed perturbation ball.
    eps_step : float, optional
        Length of the step (default ``eps``, as FGSM and ART). With a random start, a step
        longer than ``eps`` (Wong et al. 2020 use ``1.25 eps``) is projected back.
    targeted : bool, default False
    num_random_init : int, default 0
        0: start at ``x``. k >= 1: k random starts in the ball; an example keeps the first
        restart that fools the model (the last one otherwise).
    seed : int or Generator, optional
        Random starts.

    Examples
    --------
    >>> x_adv = FastGradientMethod(model, eps=0.3).generate(x, y)      # doctest: +SKIP
    """

    def __init__(
        self,
        estimator: Any,
        norm: Any = np.inf,
        eps: float = 0.3,
        eps_step: float | None = None,
        targeted: bool = False,
        num_random_init: int = 0,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(estimator, targeted)
        self.norm = check_norm(norm, "FastGradientMethod")
        self.eps = float(eps)
        self.eps_step = None if eps_step is None else float(eps_step)
        self.num_random_init = int(num_random_init)
        self.seed = seed
        _check_budget("FastGradientMethod", self.eps, self.eps_step)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Adversarial examples, same shape and dtype as ``x`` (N, ...)."""
        y = self._labels(x, y)
        rng = as_generator(self.seed)
        step = self.eps if self.eps_step is None else self.eps_step
        best, done = None, np.zeros(len(x), dtype=bool)
        for _ in range(max(1, self.num_random_init)):
            start = x
            if self.num_random_init > 0:
                noise = random_ball(x.shape, self.eps, self.norm, rng)
                start = self.estimator.clip((x + noise).astype(x.dtype))
            x_adv = self.estimator.clip(start + step * self._direction(start, y, self.norm))
            x_adv = (x + projection(x_adv - x, self.eps, self.norm)).astype(x.dtype)
            best, done = _keep_successes(self, best, done, x_adv, y)
        return best


def _keep_successes(attack, best, done, x_adv, y):
    """Merge a restart into the running result: examples already fooled keep theirs."""
    if best is None:
        if getattr(attack, "num_random_init", 0) > 1:
            done = attack.success(x_adv, y)
        return x_adv, done
    take = ~done
    best = best.copy()
    best[take] = x_adv[take]
    return best, done | (take & attack.success(x_adv, y))


class FGSM(FastGradientMethod):
    """FGSM: :class:`FastGradientMethod` with ``norm=inf`` (the name most people use)."""

    def __init__(
        self,
        estimator: Any,
        eps: float = 0.3,
        eps_step: float | None = None,
        targeted: bool = False,
        num_random_init: int = 0,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(estimator, np.inf, eps, eps_step, targeted, num_random_init, seed)


# ----------------------------------------------------------------------------- PGD


class ProjectedGradientDescent(EvasionAttack):
    """PGD (Madry et al. 2018): ``max_iter`` steps of ``eps_step``, projected onto the ball.

    Parameters
    ----------
    estimator : Classifier or tinyodl model
    norm : np.inf or 2, default np.inf
    eps : float, default 0.3
    eps_step : float, default 0.01
        Step length alpha (L-infinity: per pixel; L2: of the whole step).
    max_iter : int, default 40
    targeted : bool, default False
    num_random_init : int, default 0
        0: start at ``x`` (deterministic; equal to ART's PGD with ``num_random_init=0``).
        k >= 1: k runs from uniform random points of the ball; each example keeps the
        first run that fools the model.
    seed : int or Generator, optional

    Notes
    -----
    One iteration is ``x <- x0 + P(clip(x + alpha * step(g)) - x0)``: step, clip into the
    valid range, project onto the ball around the clean ``x0``. Clipping before projecting
    stays in the valid range: the projected point lies between ``x0`` and a valid point.
    """

    def __init__(
        self,
        estimator: Any,
        norm: Any = np.inf,
        eps: float = 0.3,
        eps_step: float = 0.01,
        max_iter: int = 40,
        targeted: bool = False,
        num_random_init: int = 0,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(estimator, targeted)
        self.norm = check_norm(norm, "ProjectedGradientDescent")
        self.eps, self.eps_step = float(eps), float(eps_step)
        self.max_iter = int(max_iter)
        self.num_random_init = int(num_random_init)
        self.seed = seed
        _check_budget("ProjectedGradientDescent", self.eps, self.eps_step)
        if self.max_iter < 1:
            raise ValueError(f"ProjectedGradientDescent: max_iter must be >= 1, got {max_iter}")

    def _run(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x_adv = x
        if self.num_random_init > 0:
            noise = random_ball(x.shape, self.eps, self.norm, rng)
            x_adv = self.estimator.clip((x + noise).astype(x.dtype))
        for _ in range(self.max_iter):
            x_adv = self.estimator.clip(
                x_adv + self.eps_step * self._direction(x_adv, y, self.norm)
            )
            x_adv = (x + projection(x_adv - x, self.eps, self.norm)).astype(x.dtype)
        return x_adv

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Adversarial examples, same shape and dtype as ``x`` (N, ...)."""
        y = self._labels(x, y)
        rng = as_generator(self.seed)
        best, done = None, np.zeros(len(x), dtype=bool)
        for _ in range(max(1, self.num_random_init)):
            best, done = _keep_successes(self, best, done, self._run(x, y, rng), y)
        return best


class PGD(ProjectedGradientDescent):
    """Short name of :class:`ProjectedGradientDescent`."""


# ----------------------------------------------------------------------------- measuring


def adversarial_accuracy(
    model: Any,
    attack: EvasionAttack | None,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 500,
) -> float:
    """Accuracy of ``model`` on ``attack.generate(x, y)`` (clean accuracy for ``attack=None``).

    The attack is run ``batch_size`` examples at a time (bounds the memory); accuracy is
    measured on the model the attack was built for unless ``model`` is another one (the
    transfer setting).
    """
    clf = as_classifier(model)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        xa = xb if attack is None else attack.generate(xb, yb)
        correct += int(np.sum(clf.predict_labels(xa) == yb))
    return correct / len(x)


__all__ = [
    "FGSM",
    "PGD",
    "EvasionAttack",
    "FastGradientMethod",
    "ProjectedGradientDescent",
    "adversarial_accuracy",
    "check_norm",
    "projection",
    "random_ball",
    "steepest_ascent",
]
