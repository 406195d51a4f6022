"""Attacks that exploit a published on-device model (chapter 11, textbook section 12.6.4).

Hong, Carlini and Kurakin (2023, "Publishing efficient on-device models increases
adversarial vulnerability") observe that the on-device model -- the int8 or pruned version
of a full-precision "cloud" model, shipped inside every app -- is a white-box surrogate of
the cloud model: adversarial examples crafted on it **transfer**. The closer the two models
(quantization barely moves the weights), the higher the transfer rate.

* :func:`transfer_rate` -- of the inputs the target model classifies correctly, the
  fraction it gets wrong on adversarial examples crafted on another model.
* :func:`transfer_attack` -- craft with PGD on the source (surrogate), measure success on
  the source and transfer to the target.
* :func:`on_device_copy` -- the attacker's copy of the on-device model: the int8 model of
  :mod:`tinyodl.quantization` (chapter 03) and its differentiable fake-quantized twin when
  that chapter is installed, otherwise a copy whose weights are rounded to 8 bits per output
  channel (:func:`quantize_weights`), which stands in for it; pruned copies come from
  :mod:`tinyodl.pruning` (chapter 02) the same way.

Query attacks with the on-device model as a transfer prior are in
:mod:`tinyodl.attacks.blackbox` (:class:`~tinyodl.attacks.TransferPriorAttack`); the defense
(similarity unpairing) is in :mod:`tinyodl.defenses.unpairing`.
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import numpy as np

from tinyodl.attacks.estimator import as_classifier
from tinyodl.attacks.evasion import ProjectedGradientDescent


def transfer_rate(target: Any, x: np.ndarray, y: np.ndarray, x_adv: np.ndarray) -> float:
    """Fraction of the examples ``target`` gets right on ``x`` and wrong on ``x_adv``.

    Only examples the target classifies correctly when clean count (N_correct in the
    denominator), so a weak target does not look vulnerable.
    """
    clf = as_classifier(target)
    correct = clf.predict_labels(x) == y
    if not correct.any():
        raise ValueError("transfer_rate: the target classifies none of the clean inputs correctly")
    fooled = clf.predict_labels(x_adv[correct]) != y[correct]
    return float(fooled.mean())


def transfer_attack(
    source: Any,
    target: Any,
    x: np.ndarray,
    y: np.ndarray,
    eps: float = 0.3,
    steps: int = 20,
    norm: Any = np.inf,
    eps_step: float | None = None,
    seed: Any = 0,
) -> dict[str, Any]:
    """PGD on ``source``, evaluated on ``source`` and on ``target``.

    Returns ``{"x_adv", "source_success", "transfer_rate"}`` (rates as fractions;
    ``source_success`` counts only examples the source gets right when clean).
    """
    alpha = 2.5 * eps / steps if eps_step is None else eps_step
    attack = ProjectedGradientDescent(
        source, norm=norm, eps=eps, eps_step=alpha, max_iter=steps, num_random_init=1, seed=seed
    )
    x_adv = attack.generate(x, y)
    return {
        "x_adv": x_adv,
        "source_success": transfer_rate(source, x, y, x_adv),
        "transfer_rate": transfer_rate(target, x, y, x_adv),
    }


def quantize_weights(model: Any, bits: int = 8) -> Any:
    """A copy of ``model`` with every conv/linear weight rounded to ``bits``-bit levels.

    Symmetric per output channel, as int8 weights (GUIDE section 3): ``s_c = max|W_c| /
    (2^(bits-1) - 1)``, ``W_c <- s_c round(W_c / s_c)``; biases and activations stay float.
    """
    out = copy.deepcopy(model)
    qmax = 2 ** (bits - 1) - 1
    for _, layer in out.named_layers():
        w = layer.params.get("weight")
        if w is None or w.data.ndim < 2:
            continue
        flat = w.data.reshape(len(w.data), -1)
        scale = np.abs(flat).max(axis=1, keepdims=True) / qmax
        scale[scale == 0] = 1.0
        w.data[...] = (np.round(flat / scale) * scale).reshape(w.data.shape)
    return out


def has_int8_engine() -> bool:
    """Whether :mod:`tinyodl.quantization` (chapter 03) is installed."""
    return importlib.util.find_spec("tinyodl.quantization") is not None


def on_device_copy(model: Any, x_calib: np.ndarray) -> dict[str, Any]:
    """The attacker's copy of the on-device version of ``model``.

    Returns ``{"deployed", "surrogate", "kind"}``: the model that runs on the device, a
    differentiable model the attacker computes gradients on, and ``"int8"`` (chapter 03:
    ``quantize_model`` and its fake-quantized twin) or ``"int8-weights"`` (the fallback,
    :func:`quantize_weights`, deployed and surrogate being the same float model).
    """
    if has_int8_engine():
        from tinyodl import quantization

        qmodel = quantization.quantize_model(model, x_calib)
        twin = quantization.to_fake_quant(qmodel)
        twin.eval()
        return {"deployed": qmodel, "surrogate": twin, "kind": "int8"}
    q = quantize_weights(model)
    return {"deployed": q, "surrogate": q, "kind": "int8-weights"}


__all__ = [
    "has_int8_engine",
    "on_device_copy",
    "quantize_weights",
    "transfer_attack",
    "transfer_rate",
]
