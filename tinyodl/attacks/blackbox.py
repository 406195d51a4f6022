"""Black-box evasion: attacks that only query the model (chapter 11).

A deployed model rarely hands out its gradients, but it answers queries. Two threat models:

* **Score-based** -- the victim returns its probabilities. :class:`NES` (Ilyas et al. 2018)
  estimates the gradient of the margin ``m(x) = log p_y(x) - max_{j != y} log p_j(x)`` from
  ``2n`` queries around ``x`` with antithetic Gaussian directions,

      g ~= 1 / (2 n sigma) * sum_i [m(x + sigma u_i) - m(x - sigma u_i)] u_i,

  and takes projected sign steps (PGD, L-infinity) down the margin. ``sampling="rademacher"``
  draws +-1 directions instead: the SPSA estimator of Uesato et al. (2018).
* **Decision-based** -- the victim returns only its label. :class:`HopSkipJump` (Chen,
  Jordan and Wainwright 2020) starts from any misclassified point, walks it to the decision
  boundary by binary search, estimates the boundary's normal from the signs of ``B`` random
  probes ``phi(x_b + delta u_b)``, steps along it (geometric step-size search), and binary
  searches back to the boundary -- shrinking the L2 distance to ``x`` with every iteration.

Both count queries per example (``queries_``): the measure of a black-box attack. On-device
models add a third option (Hong et al. 2023, textbook section 12.6.4): the attacker owns a
copy of the on-device model, so :class:`TransferPriorAttack` starts from a transfer example
crafted on it (free: no victim queries) and mixes its gradient into NES's estimate --
``tinyodl bench security`` counts the queries this saves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.attacks.estimator import BlackBox, as_classifier
from tinyodl.attacks.evasion import ProjectedGradientDescent, projection
from tinyodl.nn.utils import as_generator

SeedLike = int | np.random.Generator | None


def margin(log_probs: np.ndarray, y: np.ndarray, targeted: bool = False) -> np.ndarray:
    """Per-example margin (N,): positive while the attack has not succeeded.

    Untargeted: ``log p_y - max_{j != y} log p_j``. Targeted (``y`` = target):
    ``max_{j != y} log p_j - log p_y``. With log-probabilities these are differences of
    logits, so the same formula serves scores and logits.
    """
    n = len(y)
    own = log_probs[np.arange(n), y]
    others = log_probs.copy()
    others[np.arange(n), y] = -np.inf
    best = others.max(axis=1)
    return best - own if targeted else own - best


def margin_objective(y: np.ndarray, targeted: bool = False):
    """:func:`margin` as an objective of the logits for :meth:`Classifier.gradient`."""

    def fn(logits: np.ndarray, rows: slice):
        yb = y[rows]
        z = logits.astype(np.float64)
        n = len(yb)
        others = z.copy()
        others[np.arange(n), yb] = -np.inf
        j = others.argmax(axis=1)
        sign = -1.0 if targeted else 1.0
        d = np.zeros_like(z)
        d[np.arange(n), yb] = sign
        d[np.arange(n), j] = -sign
        return margin(z, yb, targeted), d.astype(logits.dtype)

    return fn


class _QueryAttack:
    """Shared bits: the victim (a :class:`BlackBox`), labels, per-example query counts."""

    def __init__(self, victim: Any, output: str, targeted: bool, max_queries: int) -> None:
        self.victim = victim if isinstance(victim, BlackBox) else BlackBox(victim, output)
        self.targeted = bool(targeted)
        self.max_queries = int(max_queries)
        if self.max_queries < 1:
            raise ValueError(f"{type(self).__name__}: max_queries must be >= 1, got {max_queries}")

    def _labels(self, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        if y is None:
            if self.targeted:
                raise ValueError(f"{type(self).__name__}.generate: a targeted attack needs y")
            return self.victim.labels(x)  # counted: the attacker asks for the clean labels
        y = np.asarray(y)
        if y.shape != (len(x),) or y.dtype.kind not in "iu":
            raise ValueError(
                f"{type(self).__name__}.generate: y must be int labels of shape ({len(x)},), "
                f"got shape {y.shape} and dtype {y.dtype}"
            )
        return y.astype(np.int64)


# ----------------------------------------------------------------------------- NES / SPSA


class NES(_QueryAttack):
    """Score-based L-infinity attack with NES (or SPSA) gradient estimates.

    Parameters
    ----------
    victim : BlackBox or model
        A model is wrapped in ``BlackBox(model, "scores")``.
    eps : float, default 0.3
    eps_step : float, default 0.01
        Sign-step length per iteration.
    sigma : float, default 0.01
        Radius of the finite-difference probes.
    samples : int, default 25
        Antithetic pairs per estimate (``2 * samples`` queries).
    max_queries : int, default 5000
        Per example, the success checks included.
    sampling : {"gaussian", "rademacher"}
        NES (Gaussian) or SPSA (+-1) probe directions.
    targeted : bool, default False
    prior : Classifier or model, optional
        A surrogate whose margin gradient is added to the estimate (transfer prior).
    prior_weight : float, default 1.0
        Weight of the prior's (normalised) gradient against the estimate's.
    momentum : float, default 0.0
        Average the estimates over iterations, ``v <- m v + (1 - m) g`` (Ilyas et al. use
        0.9); the step follows ``sign(v)``.
    seed : int or Generator, optional

    Attributes (after :meth:`generate`)
    -----------------------------------
    queries_ : ndarray (N,) int
        Victim queries spent on each example (until success or the budget).
    success_ : ndarray (N,) bool
    """

    def __init__(
        self,
        victim: Any,
        eps: float = 0.3,
        eps_step: float = 0.01,
        sigma: float = 0.01,
        samples: int = 25,
        max_queries: int = 5000,
        sampling: str = "gaussian",
        targeted: bool = False,
        prior: Any = None,
        prior_weight: float = 1.0,
        momentum: float = 0.0,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(victim, "scores", targeted, max_queries)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"NES: momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        if sampling not in ("gaussian", "rademacher"):
            raise ValueError(f"NES: sampling must be 'gaussian' or 'rademacher', got {sampling!r}")
        if not (eps >= 0 and eps_step > 0 and sigma > 0 and samples >= 1):
            raise ValueError(
                f"NES: need eps >= 0, eps_step > 0, sigma > 0, samples >= 1; got {eps}, "
                f"{eps_step}, {sigma}, {samples}"
            )
        self.eps, self.eps_step, self.sigma = float(eps), float(eps_step), float(sigma)
        self.samples, self.sampling = int(samples), sampling
        self.prior = None if prior is None else as_classifier(prior)
        self.prior_weight = float(prior_weight)
        self.seed = seed

    def _margin(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return margin(np.log(np.maximum(self.victim.scores(x), 1e-300)), y, self.targeted)

    def estimate_gradient(self, x: np.ndarray, y: int, rng: np.random.Generator) -> np.ndarray:
        """NES/SPSA estimate of ``d margin / dx`` at one example ``x`` (2 * samples queries)."""
        shape = (self.samples, *x.shape)
        if self.sampling == "gaussian":
            u = rng.standard_normal(shape)
        else:
            u = rng.choice([-1.0, 1.0], size=shape)
        probes = np.concatenate([x + self.sigma * u, x - self.sigma * u]).astype(x.dtype)
        m = self._margin(probes, np.full(len(probes), y))
        diff = (m[: self.samples] - m[self.samples :]).reshape((-1,) + (1,) * x.ndim)
        return (diff * u).sum(axis=0) / (2 * self.samples * self.sigma)

    def _prior_gradient(self, x: np.ndarray, y: int) -> np.ndarray:
        objective = margin_objective(np.array([y]), self.targeted)
        return self.prior.gradient(x[None], objective)[1][0].astype(np.float64)

    def generate(
        self, x: np.ndarray, y: np.ndarray | None = None, x_start: np.ndarray | None = None
    ) -> np.ndarray:
        """Adversarial examples (shape and dtype of ``x``); fills ``queries_`` and ``success_``.

        ``x_start`` (optional, inside the ball) is where each search starts (default ``x``).
        """
        y = self._labels(x, y)
        rng = as_generator(self.seed)
        lo, hi = self.victim.clip_values or (-np.inf, np.inf)
        out = np.array(x if x_start is None else x_start, dtype=x.dtype, copy=True)
        self.queries_ = np.zeros(len(x), dtype=np.int64)
        self.success_ = np.zeros(len(x), dtype=bool)
        for i in range(len(x)):
            xi, xa, velocity = x[i], out[i], 0.0
            while self.queries_[i] < self.max_queries:
                self.queries_[i] += 1
                if self._margin(xa[None], y[i : i + 1])[0] < 0:
                    self.success_[i] = True
                    break
                if self.queries_[i] + 2 * self.samples > self.max_queries:
                    break
                g = self.estimate_gradient(xa, int(y[i]), rng)
                self.queries_[i] += 2 * self.samples
                if self.prior is not None:
                    g = g / (np.linalg.norm(g) + 1e-12)
                    gp = self._prior_gradient(xa, int(y[i]))
                    g = g + self.prior_weight * gp / (np.linalg.norm(gp) + 1e-12)
                velocity = self.momentum * velocity + (1.0 - self.momentum) * g
                xa = xa - self.eps_step * np.sign(velocity)  # descend the margin
                xa = np.clip(xi + projection((xa - xi)[None], self.eps)[0], lo, hi).astype(x.dtype)
            out[i] = xa
        return out


class TransferPriorAttack:
    """Query attack with a transfer prior from a surrogate (the on-device model).

    1. Craft PGD adversarial examples on the surrogate (white-box, no victim queries).
    2. Query the victim once each: examples that transfer are done after one query.
    3. Run :class:`NES` on the rest, starting from the transferred point, with the
       surrogate's gradient added to each estimate.

    Parameters
    ----------
    victim : BlackBox or model
    surrogate : Classifier or model
        The attacker's copy (e.g. the int8 on-device model's differentiable twin).
    eps, eps_step, max_queries, samples, sigma, momentum, seed
        Passed to :class:`NES`; the surrogate PGD uses ``pgd_steps`` steps of ``2.5 eps /
        pgd_steps``.
    prior_weight : float, default 3.0
        Weight of the surrogate's unit gradient against NES's unit estimate: a good
        surrogate's gradient is far more accurate than a ``2 * samples``-query estimate in
        hundreds of dimensions (measured: with weight 1 the non-transferring examples of
        ``tinyodl bench security`` rarely succeed, with 3 most do).

    Attributes (after :meth:`generate`)
    -----------------------------------
    queries_, success_ : ndarray (N,)
    transferred_ : ndarray (N,) bool
        Examples that fooled the victim straight from the surrogate.
    """

    def __init__(
        self,
        victim: Any,
        surrogate: Any,
        eps: float = 0.3,
        eps_step: float = 0.01,
        max_queries: int = 5000,
        samples: int = 25,
        sigma: float = 0.01,
        prior_weight: float = 3.0,
        pgd_steps: int = 20,
        momentum: float = 0.9,
        targeted: bool = False,
        seed: SeedLike = None,
    ) -> None:
        self.surrogate = as_classifier(surrogate)
        self.nes = NES(
            victim,
            eps=eps,
            eps_step=eps_step,
            sigma=sigma,
            samples=samples,
            max_queries=max_queries,
            targeted=targeted,
            prior=self.surrogate,
            prior_weight=prior_weight,
            momentum=momentum,
            seed=seed,
        )
        self.pgd = ProjectedGradientDescent(
            self.surrogate,
            eps=eps,
            eps_step=2.5 * eps / pgd_steps,
            max_iter=pgd_steps,
            targeted=targeted,
        )

    @property
    def victim(self) -> BlackBox:
        return self.nes.victim

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Adversarial examples; fills ``queries_``, ``success_`` and ``transferred_``."""
        y = self.nes._labels(x, y)
        x_start = self.pgd.generate(x, y)
        out = self.nes.generate(x, y, x_start=x_start)  # its first query tests the transfer
        self.queries_, self.success_ = self.nes.queries_, self.nes.success_
        self.transferred_ = self.success_ & (self.queries_ == 1)
        return out


# ----------------------------------------------------------------------------- HopSkipJump


class HopSkipJump(_QueryAttack):
    """Decision-based L2 attack (HopSkipJumpAttack, Chen et al. 2020).

    Parameters
    ----------
    victim : BlackBox or model
        A model is wrapped in ``BlackBox(model, "labels")``.
    max_queries : int, default 2000
        Per example.
    max_iter : int, default 50
    init_eval, max_eval : int, default 100, 1000
        Probes for the boundary-normal estimate at iteration t: ``min(init_eval sqrt(t),
        max_eval)``.
    gamma : float, default 1.0
        Binary-search tolerance ``theta = gamma / d^(3/2)`` (relative to the distance) and
        probe radius ``delta_t = sqrt(d) theta ||x_t - x||``, as in the paper.
    init_tries : int, default 100
        Uniform-noise images tried to find a misclassified starting point.
    targeted : bool, default False
        Targeted attacks need starting points of the target class: ``generate(x, y,
        x_init=...)``.
    seed : int or Generator, optional

    Attributes (after :meth:`generate`)
    -----------------------------------
    queries_ : ndarray (N,) int
    distances_ : ndarray (N,) float
        Final L2 distance (inf where no adversarial starting point was found).
    """

    def __init__(
        self,
        victim: Any,
        max_queries: int = 2000,
        max_iter: int = 50,
        init_eval: int = 100,
        max_eval: int = 1000,
        gamma: float = 1.0,
        init_tries: int = 100,
        targeted: bool = False,
        seed: SeedLike = None,
    ) -> None:
        super().__init__(victim, "labels", targeted, max_queries)
        self.max_iter, self.init_eval, self.max_eval = int(max_iter), int(init_eval), int(max_eval)
        self.gamma, self.init_tries, self.seed = float(gamma), int(init_tries), seed

    # -- the oracle phi: +1 on the adversarial side
    def _adversarial(self, xs: np.ndarray, y: int, i: int) -> np.ndarray:
        self.queries_[i] += len(xs)
        pred = self.victim.labels(xs)
        return pred == y if self.targeted else pred != y

    def _budget(self, i: int, need: int) -> bool:
        return self.queries_[i] + need <= self.max_queries

    def _binary_search(self, x0, x_adv, y, i, theta):
        """Point on the segment x0 -> x_adv just on the adversarial side (tolerance theta)."""
        lo, hi = 0.0, 1.0  # fraction of the way from x0 to x_adv; hi is adversarial
        while hi - lo > theta and self._budget(i, 1):
            mid = (lo + hi) / 2
            if self._adversarial((x0 + mid * (x_adv - x0))[None].astype(x0.dtype), y, i)[0]:
                hi = mid
            else:
                lo = mid
        return (x0 + hi * (x_adv - x0)).astype(x0.dtype)

    def _initial(self, x0, y, i, rng, lo, hi, x_init):
        if x_init is not None:
            return x_init if self._adversarial(x_init[None], y, i)[0] else None
        for _ in range(self.init_tries):
            if not self._budget(i, 1):
                return None
            cand = rng.uniform(lo, hi, size=x0.shape).astype(x0.dtype)
            if self._adversarial(cand[None], y, i)[0]:
                return cand
        return None

    def _normal(self, xb, y, i, delta, count, rng, lo, hi):
        """Monte Carlo estimate of the unit normal of the boundary at xb (count queries)."""
        u = rng.standard_normal((count, *xb.shape))
        u /= np.sqrt((u.reshape(count, -1) ** 2).sum(axis=1)).reshape((-1,) + (1,) * xb.ndim)
        probes = np.clip(xb + delta * u, lo, hi).astype(xb.dtype)
        u = (probes - xb) / delta
        phi = np.where(self._adversarial(probes, y, i), 1.0, -1.0)
        if abs(phi.mean()) < 1.0:
            phi = phi - phi.mean()  # the baseline of the paper (variance reduction)
        g = (phi.reshape((-1,) + (1,) * xb.ndim) * u).mean(axis=0)
        return g / (np.linalg.norm(g) + 1e-12)

    def generate(
        self, x: np.ndarray, y: np.ndarray | None = None, x_init: np.ndarray | None = None
    ) -> np.ndarray:
        """Adversarial examples (``x`` where none was found); fills ``queries_``, ``distances_``."""
        y = self._labels(x, y)
        if self.targeted and x_init is None:
            raise ValueError("HopSkipJump.generate: a targeted attack needs x_init (target images)")
        rng = as_generator(self.seed)
        lo, hi = self.victim.clip_values or (0.0, 1.0)
        d = int(np.prod(x.shape[1:]))
        theta = self.gamma / d**1.5
        out = np.array(x, copy=True)
        self.queries_ = np.zeros(len(x), dtype=np.int64)
        self.distances_ = np.full(len(x), np.inf)
        for i in range(len(x)):
            x0, yi = x[i], int(y[i])
            start = self._initial(x0, yi, i, rng, lo, hi, None if x_init is None else x_init[i])
            if start is None:
                out[i] = x0
                continue
            xb = self._binary_search(x0, start, yi, i, theta)
            for t in range(1, self.max_iter + 1):
                dist = float(np.linalg.norm(xb - x0))
                count = int(min(self.init_eval * np.sqrt(t), self.max_eval))
                if dist == 0 or not self._budget(i, count + 1):
                    break
                delta = max(np.sqrt(d) * theta * dist, 1e-6)
                g = self._normal(xb, yi, i, delta, count, rng, lo, hi)
                step = dist / np.sqrt(t)
                while self._budget(i, 1):  # geometric step-size search
                    cand = np.clip(xb + step * g, lo, hi).astype(x.dtype)
                    if self._adversarial(cand[None], yi, i)[0]:
                        break
                    step /= 2
                    if step < 1e-8:
                        cand = xb
                        break
                else:
                    break
                xb = self._binary_search(x0, cand, yi, i, theta)
            out[i] = xb
            self.distances_[i] = float(np.linalg.norm(xb - x0))
        return out


__all__ = ["NES", "HopSkipJump", "TransferPriorAttack", "margin", "margin_objective"]
