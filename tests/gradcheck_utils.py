"""Helpers for the float kernel tests: backend loading, numeric gradients, tolerances.

The float kernels (conv, linear, pool) are loaded module by module, so these tests run
against the compiled kernels as soon as *they* are built, whatever the state of the other
compiled modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest

FLOAT_MODULES = ("conv", "linear", "pool")


def load_float_kernels(backend_name: str) -> SimpleNamespace:
    """Namespace of the conv/linear/pool functions (and modules) of one backend."""
    package = "tinyodl.reference" if backend_name == "numpy" else "tinyodl._kernels"
    functions: dict[str, object] = {"name": backend_name}
    for module_name in FLOAT_MODULES:
        module = importlib.import_module(f"{package}.{module_name}")
        functions[module_name] = module
        functions.update({k: getattr(module, k) for k in dir(module) if not k.startswith("_")})
    return SimpleNamespace(**functions)


def cython_float_kernels_built() -> bool:
    try:
        load_float_kernels("cython")
    except ImportError:
        return False
    return True


def float_backend_params() -> list:
    """pytest params ``numpy`` and ``cython`` (skipped when the kernels are not built)."""
    skip = [] if cython_float_kernels_built() else [pytest.mark.skip(reason="kernels not built")]
    return [pytest.param("numpy", id="numpy"), pytest.param("cython", id="cython", marks=skip)]


def numeric_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar ``f()`` w.r.t. ``x`` (modified in place)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        f_plus = f()
        x[i] = old - eps
        f_minus = f()
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a| + |b|), the CS231n-style relative error."""
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-300))


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Compare with a tolerance suited to the dtype (float32: ~1e-5 relative)."""
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tol = 1e-5 if expected.dtype == np.float32 else 1e-12
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=2 * tol * scale, err_msg=what)
