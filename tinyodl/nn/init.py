"""Weight initializers (chapter 00): He/Kaiming and Glorot/Xavier, normal and uniform.

Each takes the shape of the weight, a seed or numpy Generator, and returns a new array.
Fans follow PyTorch: a linear weight ``(out, in)`` has ``fan_in = in``, ``fan_out = out``;
a conv weight ``(F, C/groups, KH, KW)`` has ``fan_in = C/groups*KH*KW`` and
``fan_out = F*KH*KW``.

* He et al. 2015 (ReLU nets): ``std = gain / sqrt(fan)``, ``gain = sqrt(2)``;
* Glorot & Bengio 2010: ``std = gain * sqrt(2 / (fan_in + fan_out))``;
* a uniform law on ``[-a, a]`` has the same variance as the normal when ``a = sqrt(3) * std``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinyodl.nn.utils import SeedLike, as_generator


def fan_in_and_fan_out(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``(out, in)`` or ``(F, C/groups, KH, KW)``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"fan_in_and_fan_out: need a weight of rank >= 2, got shape {shape}")
    receptive = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape: Sequence[int], mode: str) -> int:
    fan_in, fan_out = fan_in_and_fan_out(shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def kaiming_normal(
    shape: Sequence[int],
    seed: SeedLike = None,
    gain: float = np.sqrt(2.0),
    mode: str = "fan_in",
    dtype=np.float32,
) -> np.ndarray:
    """He normal: ``N(0, (gain / sqrt(fan))^2)``; ``gain = sqrt(2)`` suits ReLU."""
    std = gain / np.sqrt(_fan(shape, mode))
    return (as_generator(seed).standard_normal(tuple(shape)) * std).astype(dtype)


def kaiming_uniform(
    shape: Sequence[int],
    seed: SeedLike = None,
    gain: float = np.sqrt(2.0),
    mode: str = "fan_in",
    dtype=np.float32,
) -> np.ndarray:
    """He uniform: ``U(-a, a)`` with ``a = gain * sqrt(3 / fan)``."""
    bound = gain * np.sqrt(3.0 / _fan(shape, mode))
    return as_generator(seed).uniform(-bound, bound, tuple(shape)).astype(dtype)


def xavier_normal(
    shape: Sequence[int], seed: SeedLike = None, gain: float = 1.0, dtype=np.float32
) -> np.ndarray:
    """Glorot normal: ``N(0, gain^2 * 2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    std = gain * np.sqrt(2.0 / (fan_in + fan_out))
    return (as_generator(seed).standard_normal(tuple(shape)) * std).astype(dtype)


def xavier_uniform(
    shape: Sequence[int], seed: SeedLike = None, gain: float = 1.0, dtype=np.float32
) -> np.ndarray:
    """Glorot uniform: ``U(-a, a)`` with ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    bound = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return as_generator(seed).uniform(-bound, bound, tuple(shape)).astype(dtype)


def zeros(shape: Sequence[int], seed: SeedLike = None, dtype=np.float32) -> np.ndarray:
    """All zeros (``seed`` is accepted, and ignored, so every initializer has one signature)."""
    return np.zeros(tuple(shape), dtype=dtype)


he_normal = kaiming_normal
he_uniform = kaiming_uniform
glorot_normal = xavier_normal
glorot_uniform = xavier_uniform

#: Initializers by name, as accepted by the ``init=`` argument of Linear and Conv2d.
INITIALIZERS: dict[str, Callable[..., np.ndarray]] = {
    "kaiming_normal": kaiming_normal,
    "kaiming_uniform": kaiming_uniform,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "zeros": zeros,
}


def initialize(name: str, shape: Sequence[int], seed: SeedLike, dtype) -> np.ndarray:
    """Call the initializer called ``name`` (a key of :data:`INITIALIZERS`)."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; choose one of {sorted(INITIALIZERS)}")
    return INITIALIZERS[name](shape, seed, dtype=dtype)
