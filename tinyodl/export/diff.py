"""Model differences for federated rounds (chapter 13): compute, compress, apply.

A device that fine-tuned a shared model sends back only what changed, ``delta = trained -
base`` per parameter/buffer. Sent uncompressed, :func:`apply_diff` reproduces the trained
model **exactly**: the difference of two float32 numbers is computed in float64, which holds
it exactly when their exponents differ by at most 28 (the sum then rounds back to the
trained float32 value); the rare elements beyond that are sent as their trained values
(``exact``). Compressed, it is smaller and approximate:

* ``"int8"``: one scale per tensor, ``q = round(delta / s)``, ``s = max|delta| / 127``
  (4x smaller than float32; error at most ``s / 2`` per element);
* ``"topk"``: only the ``k`` largest ``|delta|`` of each tensor (index int32 + value
  float32), the rest is zero (Aji & Heafield 2017; Lin et al. 2018 "Deep gradient
  compression").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.quant import round_half_away


@dataclass
class ModelDiff:
    """``delta`` (float64 per array) and ``exact`` (indices, trained values) per array."""

    delta: dict[str, np.ndarray]
    exact: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def nbytes(self) -> int:
        """Bytes sent as float32 deltas (the float64 is only for exactness) + fix-ups."""
        fixups = sum(i.nbytes + v.nbytes for i, v in self.exact.values())
        return sum(d.size * 4 for d in self.delta.values()) + fixups


@dataclass
class CompressedDiff:
    """A compressed difference: ``method``, and per array what :func:`decompress` needs."""

    method: str
    shapes: dict[str, tuple[int, ...]]
    payload: dict[str, dict[str, np.ndarray]]

    def nbytes(self) -> int:
        return sum(a.nbytes for p in self.payload.values() for a in p.values())


def _float_state(model: Any) -> dict[str, np.ndarray]:
    return {k: v for k, v in model.state_dict().items() if np.issubdtype(v.dtype, np.floating)}


def compute_diff(base: Any, trained: Any) -> ModelDiff:
    """``trained - base`` for every float array of the two models' ``state_dict()``.

    Raises ``ValueError`` naming the first array whose name or shape differs.
    """
    a, b = _float_state(base), _float_state(trained)
    if set(a) != set(b):
        raise ValueError(
            f"compute_diff: the models have different arrays: {sorted(set(a) ^ set(b))[:5]}"
        )
    delta, exact = {}, {}
    for name in a:
        if a[name].shape != b[name].shape:
            raise ValueError(
                f"compute_diff: {name}: shapes {a[name].shape} and {b[name].shape} differ"
            )
        d = b[name].astype(np.float64) - a[name].astype(np.float64)
        back = (a[name].astype(np.float64) + d).astype(b[name].dtype)
        bad = np.flatnonzero(back.ravel() != b[name].ravel())
        bad = bad[~(np.isnan(back.ravel()[bad]) & np.isnan(b[name].ravel()[bad]))]
        if bad.size:
            exact[name] = (bad.astype(np.int64), b[name].ravel()[bad].copy())
        delta[name] = d
    return ModelDiff(delta, exact)


def compress(diff: ModelDiff, method: str = "int8", k_fraction: float = 0.01) -> CompressedDiff:
    """Compress a :class:`ModelDiff` with ``"int8"`` or ``"topk"`` (``k_fraction`` kept)."""
    if method not in ("int8", "topk"):
        raise ValueError(f"compress: method must be 'int8' or 'topk', got {method!r}")
    if not 0 < k_fraction <= 1:
        raise ValueError(f"compress: k_fraction must be in (0, 1], got {k_fraction}")
    payload, shapes = {}, {}
    for name, d in diff.delta.items():
        shapes[name] = d.shape
        flat = d.ravel()
        if method == "int8":
            peak = float(np.max(np.abs(flat))) if flat.size else 0.0
            scale = peak / 127 if peak > 0 else 1.0
            q = np.clip(round_half_away(flat / scale), -127, 127).astype(np.int8)
            payload[name] = {"q": q, "scale": np.array([scale], dtype=np.float32)}
        else:
            k = max(1, int(np.ceil(k_fraction * flat.size))) if flat.size else 0
            idx = np.argsort(-np.abs(flat), kind="stable")[:k]
            idx = np.sort(idx).astype(np.int32)
            payload[name] = {"index": idx, "value": flat[idx].astype(np.float32)}
    return CompressedDiff(method, shapes, payload)


def decompress(c: CompressedDiff) -> ModelDiff:
    """The (approximate) float64 deltas of a :class:`CompressedDiff`."""
    delta = {}
    for name, shape in c.shapes.items():
        p = c.payload[name]
        if c.method == "int8":
            d = p["q"].astype(np.float64) * float(p["scale"][0])
        else:
            d = np.zeros(int(np.prod(shape)), dtype=np.float64)
            d[p["index"]] = p["value"]
        delta[name] = d.reshape(shape)
    return ModelDiff(delta)


def apply_diff(base: Any, diff: ModelDiff | CompressedDiff, inplace: bool = False) -> Any:
    """``base + delta`` (a copy unless ``inplace``); exact for an uncompressed diff."""
    if isinstance(diff, CompressedDiff):
        diff = decompress(diff)
    model = base if inplace else copy.deepcopy(base)
    state = model.state_dict()
    new = {}
    for name, d in diff.delta.items():
        if name not in state or state[name].shape != d.shape:
            raise ValueError(f"apply_diff: the model has no array {name} of shape {d.shape}")
        value = (state[name].astype(np.float64) + d).astype(state[name].dtype)
        if name in diff.exact:
            idx, vals = diff.exact[name]
            value.ravel()[idx] = vals
        new[name] = value
    model.load_state_dict({**state, **new})
    return model
