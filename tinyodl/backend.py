"""Kernel backends: the readable numpy reference and the compiled Cython kernels.

Every kernel exists twice with the same signature:

* ``tinyodl.reference.<module>`` -- pure numpy, written to be read next to the maths;
* ``tinyodl._kernels.<module>`` -- Cython, compiled from ``kernels/<module>.pyx``.

:mod:`tinyodl.ops` forwards each call to the backend selected here. The choice is made
with the ``TINYODL_BACKEND`` environment variable (``numpy`` or ``cython``) when tinyodl is
imported, and can be changed at run time with :func:`set_backend` or, for a block of code,
with :func:`use_backend`. When the compiled extension is missing, tinyodl falls back to the
numpy backend and says once how to build it.

Chapter 00 (foundations). See ``docs/architecture.md`` for the kernel list.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType, SimpleNamespace

#: Kernel modules and the functions each must provide, in both backends.
KERNELS: dict[str, tuple[str, ...]] = {
    "conv": (
        "im2col",
        "col2im",
        "conv2d_forward",
        "conv2d_backward_input",
        "conv2d_backward_weight",
    ),
    "linear": ("linear_forward", "linear_backward_input", "linear_backward_weight"),
    "pool": (
        "maxpool2d_forward",
        "maxpool2d_backward",
        "avgpool2d_forward",
        "avgpool2d_backward",
    ),
    "int8": (
        "gemm_s8",
        "requantize",
        "linear_s8",
        "conv2d_s8",
        "depthwise_conv2d_s8",
    ),
    "norm": ("batchnorm_forward", "batchnorm_backward"),
    "int8_backward": (
        "conv2d_s8_backward_input",
        "conv2d_s8_backward_weight",
        "linear_s8_backward_input",
        "linear_s8_backward_weight",
        "ste_clamp_backward",
    ),
    "int8_elementwise": ("add_s8", "avgpool2d_s8"),
    "elementwise": (
        "relu_forward",
        "relu_backward",
        "bias_grad",
        "add_into",
        "fill_zeros",
        "sgd_update",
    ),
}

BACKENDS = ("numpy", "cython")
ENV_VAR = "TINYODL_BACKEND"
BUILD_HINT = (
    "tinyodl: the compiled kernels (tinyodl._kernels) are not built; using the numpy "
    "reference backend. Build them with `pip install -e .` from the project root "
    "(needs a C compiler)."
)


class BackendError(RuntimeError):
    """Raised when a backend is unknown or cannot be loaded."""


def _load(package: str) -> SimpleNamespace:
    """Collect every kernel of one backend into a flat namespace."""
    functions = {}
    for module_name, names in KERNELS.items():
        module: ModuleType = importlib.import_module(f"{package}.{module_name}")
        for name in names:
            try:
                functions[name] = getattr(module, name)
            except AttributeError as err:
                raise BackendError(f"{package}.{module_name} does not define {name}") from err
    return SimpleNamespace(**functions)


class _State:
    """The one piece of module state tinyodl keeps: which backend is active."""

    def __init__(self) -> None:
        self.loaded: dict[str, SimpleNamespace] = {}
        self.current: str | None = None
        self.warned = False


_state = _State()


def cython_available() -> bool:
    """Return True if the compiled kernels can be imported."""
    try:
        _namespace("cython")
    except (ImportError, BackendError):
        return False
    return True


def available_backends() -> list[str]:
    """Names of the backends that can be used on this installation."""
    return ["numpy", "cython"] if cython_available() else ["numpy"]


def _namespace(name: str) -> SimpleNamespace:
    if name not in _state.loaded:
        package = "tinyodl.reference" if name == "numpy" else "tinyodl._kernels"
        _state.loaded[name] = _load(package)
    return _state.loaded[name]


def _default_backend() -> str:
    requested = os.environ.get(ENV_VAR, "").strip().lower()
    if requested and requested not in BACKENDS:
        raise BackendError(f"{ENV_VAR}={requested!r} is not one of {BACKENDS}")
    if requested == "numpy":
        return "numpy"
    if cython_available():
        return "cython"
    if requested == "cython":
        raise BackendError(f"{ENV_VAR}=cython but the compiled kernels are missing. {BUILD_HINT}")
    if not _state.warned:
        warnings.warn(BUILD_HINT, RuntimeWarning, stacklevel=3)
        _state.warned = True
    return "numpy"


def get_backend() -> str:
    """Name of the active backend, ``"numpy"`` or ``"cython"``."""
    if _state.current is None:
        _state.current = _default_backend()
    return _state.current


def set_backend(name: str) -> None:
    """Select the backend used by :mod:`tinyodl.ops` from now on.

    Parameters
    ----------
    name : {"numpy", "cython"}
        ``"numpy"`` is the readable reference, ``"cython"`` the compiled kernels.
    """
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "cython" and not cython_available():
        raise BackendError(BUILD_HINT)
    _state.current = name


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block of code on one backend, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _state.current = previous


def implementation(name: str | None = None) -> SimpleNamespace:
    """Namespace of kernel functions for backend ``name`` (default: the active one)."""
    return _namespace(name or get_backend())


def set_num_threads(n: int) -> None:
    """Set the number of OpenMP threads the compiled kernels use (no-op on numpy)."""
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    if not cython_available():
        return
    for module_name in KERNELS:
        module = importlib.import_module(f"tinyodl._kernels.{module_name}")
        setter = getattr(module, "set_num_threads", None)
        if setter is not None:
            setter(n)
