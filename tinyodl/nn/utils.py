"""Small helpers shared by the layers: seeds, labels for error messages, shape checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinyodl.nn.errors import LayerDtypeError, LayerShapeError

SeedLike = int | np.random.Generator | None


def as_generator(seed: SeedLike) -> np.random.Generator:
    """Return ``seed`` if it is a Generator, else ``np.random.default_rng(seed)``."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def layer_label(layer: object) -> str:
    """``"Conv2d 'features.0'"`` -- the type and (if set) the dotted name of a layer."""
    name = getattr(layer, "name", "")
    kind = type(layer).__name__
    return f"{kind} {name!r}" if name else kind


def as_float_input(
    layer: object,
    x: object,
    dtype: np.dtype,
    warn: Callable[[np.dtype], None] | None = None,
) -> np.ndarray:
    """Turn a floating-point ``x`` into an ndarray of the layer's dtype.

    Integer and boolean arrays are refused rather than cast: raw uint8 images (0..255) fed
    to a float model train badly without any error, which is the mistake this catches.
    ``warn(x.dtype)`` is called when the cast loses precision (float64 -> float32).
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        hint = " (convert images with tinyodl.data.to_float)" if x.dtype.kind in "iub" else ""
        raise LayerDtypeError(
            f"{layer_label(layer)}: expected a floating-point array, got dtype {x.dtype}{hint}"
        )
    if warn is not None and x.dtype != dtype and not np.can_cast(x.dtype, dtype, "safe"):
        warn(x.dtype)
    return x.astype(dtype, copy=False)


def check_shape(
    layer: object, what: str, shape: Sequence[int], expected: Sequence[int | None], text: str
) -> None:
    """Raise if ``shape`` does not fit ``expected`` (``None`` = any size).

    ``text`` is how the expected shape is shown, e.g. ``"(N, 1, H, W)"``.
    """
    shape = tuple(int(s) for s in shape)
    ok = len(shape) == len(expected) and all(
        e is None or e == s for e, s in zip(expected, shape, strict=False)
    )
    if not ok:
        raise LayerShapeError(f"{layer_label(layer)}: expected {what} {text}, got {shape}")


def join_name(prefix: str, name: str) -> str:
    """Dotted name of a child: ``join_name("features", "0") == "features.0"``."""
    return f"{prefix}.{name}" if prefix else name
