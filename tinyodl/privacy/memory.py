"""What per-example gradients cost, measured and predicted, and what ghost clipping saves.

Chapter 10, section "memory". Per layer, two ways to get the per-example norms DP-SGD needs:

* Linear (in -> out): per-example gradients are ``N (out in + out)`` numbers; ghost norms
  need two squared norms, ``2 N`` numbers.
* Conv2d with L output positions and ``K = C/G KH KW``: per-example gradients are
  ``N (F K + F)`` numbers plus the im2col columns ``N C KH KW L``; ghost norms need the same
  columns plus two Gram matrices ``2 N G L^2`` -- or, where that is larger, this one layer's
  ``N F K`` (the mixed rule of :func:`tinyodl.privacy.ghost.conv2d_sq_norms`).

The numpy backend's im2col also pads a copy of the input, alive together with the columns
but not with the results (the Cython kernel unfolds without it); the model counts it so.

:func:`layer_memory_table` measures each layer's computation with :mod:`tracemalloc`
(:func:`tinyodl.memory.measure_peak`) beside these formulas; :func:`measure_clipping_step`
measures a whole clipped sum (forward + backward + clipping) by either method. The numbers
are bytes (``itemsize`` of the model's dtype); the tests hold measured and analytic within
10%, and ``tinyodl bench dpmemory`` records them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.memory import measure_peak
from tinyodl.nn import functional as F
from tinyodl.nn.conv_layers import Conv2d
from tinyodl.nn.layers import Linear
from tinyodl.privacy import ghost
from tinyodl.privacy.dpsgd import DPSGD, _leaves, _sum_loss

__all__ = ["analytic_layer_bytes", "layer_memory_table", "measure_clipping_step"]


def analytic_layer_bytes(layer, input_shape: tuple[int, ...], output_shape: tuple[int, ...]):
    """Predicted peak bytes of one layer's per-example gradients and of its ghost norms.

    Parameters
    ----------
    layer : Linear or Conv2d (DepthwiseConv2d)
    input_shape, output_shape : shapes of the layer's input and output, batch first

    Returns
    -------
    dict with ``per_example_bytes``, ``ghost_bytes`` and ``ghost_method`` ("outer product",
    "ghost" or "materialize")
    """
    if not isinstance(layer, Linear | Conv2d):
        raise TypeError(f"analytic_layer_bytes: no model for {type(layer).__name__}")
    n, s = int(input_shape[0]), layer.dtype.itemsize
    w = layer.params["weight"]
    has_bias = "bias" in layer.params
    if isinstance(layer, Linear):
        per_example = n * (w.size + (layer.out_features if has_bias else 0)) * s
        return {
            "per_example_bytes": per_example,
            "ghost_bytes": 2 * n * (s + 8),
            "ghost_method": "outer product",
        }
    f, positions = layer.out_channels, int(output_shape[2]) * int(output_shape[3])
    k = int(np.prod(w.shape[1:]))
    cols = n * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] * positions * s
    scratch = _im2col_scratch(layer, input_shape)  # lives with cols, before the outputs
    grads = n * (f * k + (f if has_bias else 0)) * s
    if ghost.conv2d_ghost_is_cheaper(w.shape, output_shape[2:], layer.groups):
        method, norms = "ghost", 2 * n * layer.groups * positions**2 * s
    else:
        method, norms = "materialize", n * f * k * s
    return {
        "per_example_bytes": cols + max(scratch, grads),
        "ghost_bytes": cols + max(scratch, norms),
        "ghost_method": method,
    }


def _im2col_scratch(layer, input_shape) -> int:
    """The numpy reference im2col pads a copy of the input; the Cython kernel does not."""
    from tinyodl import backend

    if backend.get_backend() != "numpy":
        return 0
    n, c, h, w = (int(v) for v in input_shape)
    ph, pw = layer.padding
    return n * c * (h + 2 * ph) * (w + 2 * pw) * layer.dtype.itemsize


def _per_example_call(layer, x, dout):
    if isinstance(layer, Linear):
        return F.linear_per_example_grads(dout, x)
    w = layer.params["weight"]
    return F.conv2d_per_example_grads(dout, x, w.shape, layer.stride, layer.padding, layer.groups)


def layer_memory_table(model, x: np.ndarray, y: np.ndarray, loss: Any = "cross_entropy"):
    """Per trainable layer: measured and analytic bytes of per-example gradients and ghost norms.

    One forward/backward pass with ``capture`` provides each layer's input and output
    gradient; then each layer's per-example gradients (the function its backward calls) and
    its ghost norms are measured separately with tracemalloc.

    Returns
    -------
    list of dict: ``layer``, ``type``, ``num_params``, ``batch_size``, ``per_example_bytes``
    (measured), ``per_example_analytic``, ``ghost_bytes`` (measured), ``ghost_analytic``,
    ``ghost_method``
    """
    was_capturing = model.capturing
    model.capture(True)
    try:
        _, dlogits = _sum_loss(loss)(model.forward(x), y)
        model.backward(dlogits)
        rows = []
        for name, layer in _leaves(model):
            if not isinstance(layer, Linear | Conv2d):
                continue
            a, d = layer.last_input, layer.last_grad_output
            pred = analytic_layer_bytes(layer, a.shape, d.shape)
            for fn in (_per_example_call, ghost.layer_sq_norms):
                fn(layer, a[:2], d[:2])  # warm-up: BLAS allocates its work buffer once
            measured_pe = measure_peak(_per_example_call, layer, a, d).peak_bytes
            measured_ghost = measure_peak(ghost.layer_sq_norms, layer, a, d).peak_bytes
            rows.append(
                {
                    "layer": name,
                    "type": type(layer).__name__,
                    "num_params": int(sum(p.size for p in layer.params.values())),
                    "batch_size": len(a),
                    "per_example_bytes": measured_pe,
                    "per_example_analytic": pred["per_example_bytes"],
                    "ghost_bytes": measured_ghost,
                    "ghost_analytic": pred["ghost_bytes"],
                    "ghost_method": pred["ghost_method"],
                }
            )
    finally:
        model.capture(was_capturing)
        model.zero_grad(set_to_none=True)
    return rows


def measure_clipping_step(
    model, x: np.ndarray, y: np.ndarray, clipping: str, clip_norm: float = 1.0
) -> dict[str, Any]:
    """Peak bytes of one clipped sum (forward, backward, norms, clipped sums) by ``clipping``.

    The model's parameters and the batch exist before the measurement, so they are not in the
    number; everything the step allocates is (activations, per-example gradients or captured
    output gradients, gradients, the sums).

    Returns
    -------
    dict with ``clipping``, ``peak_bytes`` and ``sums`` (the clipped sums, to compare methods)
    """
    from tinyodl.nn import SGD

    dp = DPSGD(
        model,
        SGD(model, lr=0.0),
        clip_norm=clip_norm,
        noise_multiplier=0.0,
        expected_batch_size=len(x),
        clipping=clipping,
    )
    model.zero_grad(set_to_none=True)
    result = measure_peak(dp.clipped_sum, x, y)
    sums = result.result[0]
    for p in model.parameters():
        p.grad_sample = None
    model.zero_grad(set_to_none=True)
    return {"clipping": clipping, "peak_bytes": result.peak_bytes, "sums": sums}
