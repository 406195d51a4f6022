"""Kernel entry points that forward to the active backend.

``tinyodl.ops.conv2d_forward(x, w, ...)`` calls the numpy reference or the Cython kernel
of the same name, whichever :mod:`tinyodl.backend` has selected. The list of kernels is
:data:`tinyodl.backend.KERNELS`; read their documentation in ``tinyodl.reference``.
"""

from __future__ import annotations

from typing import Any

from tinyodl import backend as _backend

__all__ = [name for names in _backend.KERNELS.values() for name in names]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(_backend.implementation(), name)
    raise AttributeError(f"module 'tinyodl.ops' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
