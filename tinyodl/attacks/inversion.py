"""Privacy attacks that reconstruct inputs: model inversion and gradient inversion (chapter 11).

**Model inversion** (MI-Face, Fredrikson, Jha and Ristenpart 2015; textbook 12.6.3): with
access to a model's confidences, search for the input the model finds most typical of a
class -- gradient descent on ``c(x) = 1 - p_target(x)`` (plus an optional L2 prior) inside
the valid range, stopping when the cost stops improving (:func:`mi_face`). For a linear or
shallow model the result resembles the class average: what the training data "looked like".

**Gradient inversion** of a federated update: a FedSGD client sends ``g = dL/dtheta`` of
its batch, and that gradient can give the batch away.

* Exact, for a first dense layer ``a = W x + b`` and a batch of one (Phong et al. 2018;
  GUIDE section 5): ``dL/dW_i = (dL/da_i) x`` and ``dL/db_i = dL/da_i``, so
  ``x = (dL/dW_i) / (dL/db_i)`` for any unit ``i`` with a non-zero bias gradient
  (:func:`invert_dense_gradient` solves it in the least-squares sense over all units).
  With a batch of B the same ratio is a weighted *mixture* of the B inputs.
* By optimisation, for any batch size (DLG, Zhu, Liu and Han 2019): choose dummy inputs
  ``x'`` whose gradient matches the observed one, ``min_x' D(dL/dtheta(x', y), g)`` with
  ``D`` the squared distance of DLG or the cosine distance of Geiping et al. (2020, the
  default: on ReLU networks L2 matching stalls far from the input), by L-BFGS inside the
  box [0, 1] (:class:`DLG`). The labels come first
  from the last layer's bias gradient (iDLG, Zhao et al. 2020: for cross-entropy, the
  present classes are where ``dL/db`` is negative; :func:`infer_labels`).
  ``dD/dx'`` needs a mixed second derivative, ``(d g / d x')^T w`` with ``w = dD/dg``; tinyodl
  has first derivatives only, so it uses the symmetric identity
  ``(d g/ d x)^T v = d/dx [g(x) . v] = (dL/dx(theta + h v) - dL/dx(theta - h v)) / (2 h)``:
  two extra input-gradient passes with the weights nudged along ``v``
  (:func:`gradient_matching_loss`, checked against finite differences in the tests).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment, minimize

from tinyodl.attacks.estimator import Classifier, as_classifier
from tinyodl.nn import parameters_to_vector, softmax, softmax_cross_entropy, vector_to_parameters
from tinyodl.nn.utils import as_generator

# ----------------------------------------------------------------------------- MI-Face


def mi_face(
    model: Any,
    target: int,
    shape: tuple[int, ...] = (1, 28, 28),
    steps: int = 200,
    lr: float = 0.1,
    l2: float = 0.0,
    patience: int = 20,
    tol: float = 1e-4,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, list[float]]:
    """MI-Face model inversion: the input the model finds most like class ``target``.

    Gradient descent on ``c(x) = 1 - softmax(f(x))_target + l2 * ||x||^2``, clipped to the
    classifier's valid range after every step (Fredrikson et al. 2015, Algorithm 1 without
    their image post-processing).

    Parameters
    ----------
    model : Classifier or tinyodl model
    target : int
    shape : tuple, default (1, 28, 28)
        Shape of one input.
    steps : int, default 200
    lr : float, default 0.1
    l2 : float, default 0
        Weight of the L2 prior (keeps pixels that do not matter dark).
    patience, tol : stop when the best cost has not improved by ``tol`` in ``patience`` steps
    start : ndarray, optional
        Initial input (default all zeros).

    Returns
    -------
    x : ndarray ``shape`` (float32)
    costs : list of float
        ``c(x)`` at every step.
    """
    clf = as_classifier(model)
    x = np.zeros((1, *shape), np.float32) if start is None else np.array(start[None], np.float32)
    t = int(target)

    def objective(logits, rows):
        p = softmax(logits.astype(np.float64))
        d = -p[:, t : t + 1] * (np.eye(p.shape[1])[t] - p)  # d(1 - p_t)/dz
        return 1.0 - p[:, t], d.astype(logits.dtype)

    costs, best, since = [], np.inf, 0
    for _ in range(int(steps)):
        value, grad = clf.gradient(x, objective)
        cost = float(value[0] + l2 * np.sum(x.astype(np.float64) ** 2))
        costs.append(cost)
        if cost < best - tol:
            best, since = cost, 0
        else:
            since += 1
            if since >= patience:
                break
        x = clf.clip(x - lr * (grad + 2 * l2 * x)).astype(np.float32)
    return x[0], costs


# ----------------------------------------------------------------------------- analytic


def invert_dense_gradient(grad_weight: np.ndarray, grad_bias: np.ndarray) -> np.ndarray:
    """Recover the input of a dense layer from its weight and bias gradients (batch of 1).

    ``dL/dW = outer(dL/db, x)`` for one example, so ``x`` is the least-squares solution
    ``sum_i (dL/db_i) (dL/dW_i) / sum_i (dL/db_i)^2`` -- exact up to rounding.

    Parameters
    ----------
    grad_weight : ndarray (out, in)
    grad_bias : ndarray (out,)

    Returns
    -------
    x : ndarray (in,) float64
    """
    gw, gb = np.asarray(grad_weight, np.float64), np.asarray(grad_bias, np.float64)
    if gw.ndim != 2 or gb.shape != (gw.shape[0],):
        raise ValueError(
            f"invert_dense_gradient: expected (out, in) and (out,), got {gw.shape} and {gb.shape}"
        )
    denom = float(gb @ gb)
    if denom == 0.0:
        raise ValueError("invert_dense_gradient: the bias gradient is zero; nothing to divide by")
    return gb @ gw / denom


def infer_labels(grad_last_bias: np.ndarray, batch_size: int) -> np.ndarray:
    """Labels of a batch from the last layer's bias gradient (iDLG; distinct labels).

    For softmax cross-entropy ``dL/db_c = mean_n (p_nc - [y_n = c])``: negative entries
    mark classes present in the batch. Returns the ``batch_size`` most negative classes
    (sorted); exact for a batch of one, and for batches of distinct, confidently wrong
    or uncertain examples.
    """
    g = np.asarray(grad_last_bias, np.float64)
    if not 1 <= batch_size <= len(g):
        raise ValueError(f"infer_labels: batch_size must be in [1, {len(g)}], got {batch_size}")
    return np.sort(np.argsort(g, kind="stable")[:batch_size]).astype(np.int64)


# ----------------------------------------------------------------------------- DLG


def model_gradient(model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Flat ``dL/dtheta`` (trainable parameters, model order) of the mean cross-entropy.

    What a FedSGD client sends (up to the factor ``-lr``). Evaluation-mode forward; the
    model's existing gradients are left untouched.
    """
    params = [p for _, p in model.named_parameters() if p.trainable]
    kept = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        logits = model.forward(x, train=False)
        _, d = softmax_cross_entropy(logits, y)
        model.backward(d)
        return np.concatenate(
            [(p.grad if p.grad is not None else np.zeros_like(p.data)).ravel() for p in params]
        )
    finally:
        for p, g in zip(params, kept, strict=True):
            p.grad = g


def gradient_matching_loss(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    observed: np.ndarray,
    h: float = 1e-3,
    distance: str = "l2",
) -> tuple[float, np.ndarray]:
    """DLG's objective ``D(g(x), observed)`` with ``g(x) = dL/dtheta(x, y)``, and ``dD/dx``.

    ``distance="l2"``: ``||g - observed||^2`` (Zhu et al. 2019). ``distance="cosine"``:
    ``1 - cos(g, observed)`` (Geiping et al. 2020, "Inverting gradients"), blind to the
    gradient's scale and much easier to optimise through ReLU networks.

    ``dD/dx = (dg/dx)^T w`` with ``w = dD/dg`` is computed as the symmetric difference of
    the input gradient with the trainable weights moved by ``+-h`` along the unit direction
    ``w / ||w||`` (exact for a network that is linear in the weights around theta; the error
    is O(h^2) otherwise). Use a float64 model.

    Returns
    -------
    loss : float
    grad : ndarray, shape of ``x``
    """
    g = model_gradient(model, x, y).astype(np.float64)
    if distance == "l2":
        loss, w = float((g - observed) @ (g - observed)), 2.0 * (g - observed)
    elif distance == "cosine":
        ng, no = float(np.linalg.norm(g)), float(np.linalg.norm(observed))
        if ng == 0.0 or no == 0.0:
            raise ValueError("gradient_matching_loss: a zero gradient has no direction")
        cos = float(g @ observed) / (ng * no)
        loss, w = 1.0 - cos, -(observed / (ng * no) - cos * g / ng**2)
    else:
        raise ValueError(
            f"gradient_matching_loss: distance must be 'l2' or 'cosine', got {distance!r}"
        )
    norm = float(np.linalg.norm(w))
    if norm == 0.0:
        return loss, np.zeros_like(x)
    theta = parameters_to_vector(model, trainable_only=True).copy()
    v = w / norm
    clf = Classifier(model, clip_values=None)
    grads = []
    try:
        for sign in (1.0, -1.0):
            vector_to_parameters((theta + sign * h * v).astype(theta.dtype), model, True)
            grads.append(clf.gradient(x, _mean_cross_entropy(y, len(x)))[1].astype(np.float64))
    finally:
        vector_to_parameters(theta, model, trainable_only=True)
    return loss, norm * (grads[0] - grads[1]) / (2.0 * h)


def _mean_cross_entropy(y: np.ndarray, n: int):
    def fn(logits, rows):
        loss, d = softmax_cross_entropy(logits, y[rows], reduction="sum")
        return np.full(len(logits), loss / n), d / n

    return fn


class DLG:
    """Deep Leakage from Gradients: optimise dummy inputs until their gradient matches.

    Parameters
    ----------
    model : tinyodl model
        The shared model the gradient was computed on; copied to float64.
    steps : int, default 300
        Iterations of the optimiser (L-BFGS may stop earlier when it converges).
    distance : {"cosine", "l2"}, default "cosine"
        See :func:`gradient_matching_loss`.
    optimizer : {"lbfgs", "adam"}, default "lbfgs"
        L-BFGS-B with the box [0, 1] (as the DLG paper uses L-BFGS), or Adam with step
        ``lr`` and clipping to [0, 1].
    lr : float, default 0.05
        Adam's step.
    h : float, default 1e-3
        Weight nudge of :func:`gradient_matching_loss`.
    restarts : int, default 1
        Independent random initialisations; the one with the lowest final matching loss
        is kept (the objective is not convex: a run can stall in a poor local minimum).
    seed : int or Generator
        Initial dummy inputs (uniform in [0, 1]).

    Attributes (after :meth:`reconstruct`)
    --------------------------------------
    losses_ : list of float
        Gradient-matching loss per evaluation of the kept run.
    labels_ : ndarray (B,)
    """

    def __init__(
        self,
        model: Any,
        steps: int = 300,
        distance: str = "cosine",
        optimizer: str = "lbfgs",
        lr: float = 0.05,
        h: float = 1e-3,
        restarts: int = 1,
        seed: Any = 0,
    ) -> None:
        self.model = copy.deepcopy(model).astype("float64")
        self.steps, self.lr, self.h, self.seed = int(steps), float(lr), float(h), seed
        self.restarts = int(restarts)
        if self.restarts < 1 or self.steps < 1:
            raise ValueError(f"DLG: steps and restarts must be >= 1, got {steps}, {restarts}")
        if distance not in ("cosine", "l2") or optimizer not in ("lbfgs", "adam"):
            raise ValueError(
                f"DLG: distance must be 'cosine' or 'l2' and optimizer 'lbfgs' or 'adam', got "
                f"{distance!r}, {optimizer!r}"
            )
        self.distance, self.optimizer = distance, optimizer

    def reconstruct(
        self,
        observed: np.ndarray,
        batch_size: int,
        shape: tuple[int, ...] = (1, 28, 28),
        labels: np.ndarray | None = None,
        last_bias: str | None = None,
    ) -> np.ndarray:
        """Dummy inputs (B, *shape) whose gradient matches ``observed`` (flat dL/dtheta).

        ``labels`` default: :func:`infer_labels` on the slice of ``observed`` that holds the
        last parameter named ``last_bias`` (default: the model's last parameter).
        """
        observed = np.asarray(observed, np.float64)
        if labels is None:
            labels = infer_labels(self._slice(observed, last_bias), batch_size)
        self.labels_ = np.asarray(labels, np.int64)
        rng = as_generator(self.seed)
        run = self._lbfgs if self.optimizer == "lbfgs" else self._adam
        best = None
        for _ in range(self.restarts):
            x, losses = run(observed, rng.uniform(0, 1, size=(batch_size, *shape)))
            if best is None or losses[-1] < best[1][-1]:
                best = (x, losses)
        self.losses_ = best[1]
        return best[0].astype(np.float32)

    def _objective(self, observed: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray]:
        return gradient_matching_loss(self.model, x, self.labels_, observed, self.h, self.distance)

    def _lbfgs(self, observed: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """L-BFGS-B within [0, 1]; returns the inputs and the loss per evaluation."""
        losses: list[float] = []

        def f(flat):
            loss, g = self._objective(observed, flat.reshape(x.shape))
            losses.append(loss)
            return loss, g.ravel()

        res = minimize(
            f,
            x.ravel(),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, 1.0)] * x.size,
            options={"maxiter": self.steps},
        )
        losses.append(float(res.fun))
        return res.x.reshape(x.shape), losses

    def _adam(self, observed: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Adam on the dummy inputs from ``x``; returns them and the loss per step."""
        m, v = np.zeros_like(x), np.zeros_like(x)
        b1, b2 = 0.9, 0.999
        losses = []
        for t in range(1, self.steps + 1):
            loss, g = self._objective(observed, x)
            losses.append(loss)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            step = self.lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
            x = np.clip(x - step, 0.0, 1.0)
        return x, losses

    def _slice(self, observed: np.ndarray, name: str | None) -> np.ndarray:
        offset, found = 0, None
        for pname, p in self.model.named_parameters():
            if not p.trainable:
                continue
            if name is None or pname == name:
                found = (offset, p.size)
            offset += p.size
        if found is None:
            raise ValueError(f"DLG: no trainable parameter named {name!r}")
        return observed[found[0] : found[0] + found[1]]


def match_reconstructions(x_true: np.ndarray, x_rec: np.ndarray) -> dict[str, Any]:
    """Pair reconstructions with true inputs (Hungarian on MSE) and score them.

    Returns ``{"order", "mse" (per pair), "mean_mse", "psnr" (mean, dB, peak 1)}``; order[i]
    is the reconstruction matched to ``x_true[i]``.
    """
    a = x_true.reshape(len(x_true), -1).astype(np.float64)
    b = x_rec.reshape(len(x_rec), -1).astype(np.float64)
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).mean(axis=2)
    rows, cols = linear_sum_assignment(cost)
    mse = cost[rows, cols]
    psnr = float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))
    return {"order": cols, "mse": mse, "mean_mse": float(mse.mean()), "psnr": psnr}


__all__ = [
    "DLG",
    "gradient_matching_loss",
    "infer_labels",
    "invert_dense_gradient",
    "match_reconstructions",
    "mi_face",
    "model_gradient",
]
