"""Unstructured magnitude pruning: zero the smallest weights, keep them zero while training.

Han et al. (NeurIPS 2015, "Learning both weights and connections for efficient neural
networks") remove the weights of smallest magnitude and retrain the rest. A *mask*
``m in {0, 1}`` per weight says which survive; the pruned model computes with ``W * m``.

* Layer-wise: every layer loses the same fraction ``s`` of its weights (its own threshold,
  the ``ceil``-free count ``round(s * n)`` smallest ``|w|``).
* Global: one threshold over all prunable weights, so layers with many small weights (the
  large first layer of an MLP) lose more than small, sensitive ones (the classifier).

Only the weights of ``Linear`` and ``Conv2d`` layers are pruned (biases and batchnorm
parameters are a tiny fraction of the model). :class:`MaskedOptimizer` keeps the masks
through training: it zeroes the gradients of pruned weights before the update and re-applies
the masks after it, so momentum or weight decay cannot revive a pruned weight.
Chapter 02 (pruning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.nn import Conv2d, Linear, Parameter

SCOPES = ("layer", "global")


def prunable_weights(model: Any) -> dict[str, Parameter]:
    """The weights magnitude pruning acts on: ``weight`` of every Linear/Conv2d, by name.

    Returns
    -------
    dict
        ``"features.1.weight" -> Parameter``, in model order.
    """
    out = {}
    for name, layer in model.named_layers():
        if isinstance(layer, (Linear, Conv2d)):
            out[f"{name}.weight"] = layer.params["weight"]
    if isinstance(model, (Linear, Conv2d)):
        out["weight"] = model.params["weight"]
    return out


def _check_sparsity(sparsity: float, fn: str) -> float:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"{fn}: sparsity must be in [0, 1), got {sparsity}")
    return float(sparsity)


def _smallest_mask(magnitude: np.ndarray, n_prune: int) -> np.ndarray:
    """Boolean mask keeping all but the ``n_prune`` entries of smallest magnitude."""
    mask = np.ones(magnitude.size, dtype=bool)
    if n_prune > 0:
        mask[np.argsort(magnitude.ravel(), kind="stable")[:n_prune]] = False
    return mask.reshape(magnitude.shape)


def magnitude_masks(
    model: Any,
    sparsity: float,
    scope: str = "layer",
    names: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Masks that prune the fraction ``sparsity`` of the weights with the smallest ``|w|``.

    Parameters
    ----------
    model : tinyodl.nn.Layer
    sparsity : float in [0, 1)
        Fraction of weights set to zero (per layer, or over all the chosen layers).
    scope : {"layer", "global"}, default "layer"
        One threshold per layer, or one for all (module docstring).
    names : list of str, optional
        Which weights (keys of :func:`prunable_weights`); default all of them.

    Returns
    -------
    dict name -> bool ndarray
        True where the weight is kept; same shape as the weight.
    """
    sparsity = _check_sparsity(sparsity, "magnitude_masks")
    if scope not in SCOPES:
        raise ValueError(f"magnitude_masks: scope must be one of {SCOPES}, got {scope!r}")
    weights = prunable_weights(model)
    if names is not None:
        unknown = [n for n in names if n not in weights]
        if unknown:
            raise KeyError(f"magnitude_masks: {unknown} are not prunable weights {list(weights)}")
        weights = {n: weights[n] for n in names}
    if scope == "layer":
        return {
            n: _smallest_mask(np.abs(p.data), int(round(sparsity * p.size)))
            for n, p in weights.items()
        }
    flat = np.concatenate([np.abs(p.data).ravel() for p in weights.values()])
    keep = _smallest_mask(flat, int(round(sparsity * flat.size)))
    masks, offset = {}, 0
    for n, p in weights.items():
        masks[n] = keep[offset : offset + p.size].reshape(p.shape)
        offset += p.size
    return masks


def apply_masks(model: Any, masks: dict[str, np.ndarray]) -> None:
    """Set the pruned weights of ``model`` to zero, in place (``w *= mask``)."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise KeyError(f"apply_masks: the model has no parameter {name!r}")
        if mask.shape != params[name].shape:
            raise ValueError(
                f"apply_masks: mask of {name!r} has shape {mask.shape}, the weight "
                f"{params[name].shape}"
            )
        params[name].data *= mask


def sparsity(model_or_masks: Any, names: list[str] | None = None) -> float:
    """Fraction of zeros among the prunable weights of a model (or among mask entries)."""
    if isinstance(model_or_masks, dict):
        arrays = [np.asarray(m) for m in model_or_masks.values()]
    else:
        weights = prunable_weights(model_or_masks)
        arrays = [weights[n].data for n in (names or weights)]
    total = sum(a.size for a in arrays)
    return float(sum(a.size - np.count_nonzero(a) for a in arrays) / max(total, 1))


def layer_sparsities(model: Any) -> dict[str, float]:
    """Fraction of zeros in each prunable weight."""
    return {n: 1.0 - np.count_nonzero(p.data) / p.size for n, p in prunable_weights(model).items()}


class MaskedOptimizer:
    """Wrap an optimizer so that pruned weights stay exactly zero during training.

    Parameters
    ----------
    optimizer : tinyodl.nn optimizer
    masks : dict name -> bool ndarray
        Parameter names as in ``optimizer.params``. The dict is read at every step, so a
        pruning schedule may replace its entries between steps (:class:`GradualPruner`).

    ``step()`` multiplies each masked gradient by its mask (so the optimizer state of a pruned
    weight stays zero), steps, and multiplies the weights by their masks. Everything else
    (``lr``, ``zero_grad``, ``state_dict``, ...) is the wrapped optimizer's, so it can be
    passed to :func:`tinyodl.train.fit`.
    """

    def __init__(self, optimizer: Any, masks: dict[str, np.ndarray]) -> None:
        self.optimizer = optimizer
        self.masks = masks
        known = {n for n, _ in optimizer.params}
        unknown = [n for n in masks if n not in known]
        if unknown:
            raise KeyError(f"MaskedOptimizer: {unknown} are not parameters of the optimizer")

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value

    def __getattr__(self, name: str) -> Any:
        if name == "optimizer":  # not set yet (copying): don't recurse
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def step(self) -> None:
        params = dict(self.optimizer.params)
        for name, mask in self.masks.items():
            if params[name].grad is not None:
                params[name].grad *= mask
        self.optimizer.step()
        for name, mask in self.masks.items():
            params[name].data *= mask
