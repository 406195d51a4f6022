"""Checks that run in the grader's process, on plain data returned by the student's code.

Each helper raises ``AssertionError`` with a message that names the input (``label``), what
was expected and what came back, without giving the answer away: for arrays the shape,
dtype, the worst index and the two values there, never the whole expected array. Inside
``with t.check("..."):`` a failed helper fails that check only (``docs/grading.md``).

The values come from :mod:`tinyodl.grading._wire`, so an array is always a plain
``numpy.ndarray`` the grader built itself; the student's process cannot patch these helpers,
numpy, or the comparison.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_array", "check_close", "check_equal", "check_true"]


def _kind(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


def check_array(label: str, actual, shape: tuple, dtype=None) -> np.ndarray:
    """Assert ``actual`` is a numpy array of ``shape`` (and ``dtype``); return it.

    ``shape`` entries may be ``None`` (any length along that axis).
    """
    if not isinstance(actual, np.ndarray):
        raise AssertionError(f"{label}: expected a numpy array, got {_kind(actual)}")
    shape = tuple(shape)
    matches = len(actual.shape) == len(shape) and all(
        want is None or want == got for want, got in zip(shape, actual.shape, strict=True)
    )
    if not matches:
        raise AssertionError(f"{label}: expected shape {shape}, got {actual.shape}")
    if dtype is not None and actual.dtype != np.dtype(dtype):
        raise AssertionError(f"{label}: expected dtype {np.dtype(dtype)}, got {actual.dtype}")
    return actual


def _as_number(label: str, actual) -> float:
    if isinstance(actual, bool) or not isinstance(actual, (int, float, np.ndarray)):
        raise AssertionError(f"{label}: expected a number, got {_kind(actual)}")
    if isinstance(actual, np.ndarray):
        if actual.ndim != 0 and actual.shape != (1,):
            raise AssertionError(f"{label}: expected a number, got {_kind(actual)}")
        if not np.issubdtype(actual.dtype, np.number) or np.issubdtype(
            actual.dtype, np.complexfloating
        ):
            raise AssertionError(f"{label}: expected a number, got dtype {actual.dtype}")
        return float(actual.reshape(()))
    return float(actual)


def check_close(label: str, actual, expected, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Assert ``actual`` equals ``expected`` within ``rtol``/``atol`` (numpy's ``allclose``).

    A scalar ``expected`` accepts a Python number, a numpy scalar (a 0-d array) or a
    one-element array; an array ``expected`` needs an array of the same shape (any real
    dtype; check the dtype with :func:`check_array`). Reports the worst index and both values.
    """
    expected = np.asarray(expected)
    if expected.ndim == 0:
        got = _as_number(label, actual)
        want = float(expected)
        if not np.isfinite(got):
            raise AssertionError(f"{label}: got {got!r}, expected a finite number")
        if not abs(got - want) <= atol + rtol * abs(want):
            raise AssertionError(
                f"{label}: got {got!r}, expected {want!r} (difference {abs(got - want):.3g})"
            )
        return
    check_array(label, actual, expected.shape)
    if actual.dtype == bool or not np.issubdtype(actual.dtype, np.number):
        raise AssertionError(f"{label}: expected numbers, got dtype {actual.dtype}")
    if np.issubdtype(actual.dtype, np.complexfloating):
        raise AssertionError(f"{label}: expected real numbers, got dtype {actual.dtype}")
    got = actual.astype(np.float64)
    if not np.all(np.isfinite(got)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
        raise AssertionError(f"{label}: the result contains {got[bad].item()!r} at index {bad}")
    want = expected.astype(np.float64)
    err = np.abs(got - want)
    tol = atol + rtol * np.abs(want)
    if np.any(err > tol):
        worst = tuple(int(i) for i in np.unravel_index(np.argmax(err - tol), err.shape))
        raise AssertionError(
            f"{label}: {int(np.sum(err > tol))} of {err.size} values differ from the expected "
            f"result; largest difference {err.max():.3g}, e.g. at index {worst} "
            f"(got {got[worst].item()!r}, expected {want[worst].item()!r})"
        )


def check_equal(label: str, actual, expected) -> None:
    """Assert ``actual == expected`` exactly: arrays by shape and values (dtype not
    compared; NaN equals NaN), anything else by type and ``==``."""
    if isinstance(expected, np.ndarray):
        check_array(label, actual, expected.shape)
        same = np.array_equal(actual, expected, equal_nan=_nan_ok(actual, expected))
        if not same:
            differ = actual != expected
            if _nan_ok(actual, expected):
                differ &= ~(np.isnan(actual) & np.isnan(expected))
            first = tuple(int(i) for i in np.argwhere(differ)[0]) if differ.ndim else ()
            got, want = actual[first].item(), expected[first].item()
            raise AssertionError(
                f"{label}: {int(np.sum(differ))} of {differ.size} values differ from the "
                f"expected result, e.g. at index {first} (got {got!r}, expected {want!r})"
            )
        return
    if isinstance(actual, np.ndarray) and actual.ndim == 0 and not isinstance(expected, str):
        actual = actual.item()
    numbers = (int, float)
    if isinstance(expected, numbers) and not isinstance(expected, bool):
        ok = isinstance(actual, numbers) and not isinstance(actual, bool) and actual == expected
    else:
        ok = type(actual) is type(expected) and actual == expected
    if not ok:
        raise AssertionError(f"{label}: expected {expected!r}, got {_short(actual)}")


def _nan_ok(a: np.ndarray, b: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.inexact) and np.issubdtype(b.dtype, np.inexact)


def _short(value) -> str:
    text = repr(value) if not isinstance(value, np.ndarray) else _kind(value)
    return text if len(text) <= 200 else text[:200] + "..."


def check_true(label: str, condition: bool, message: str) -> None:
    """Assert ``condition`` (computed in the grader); the failure reads ``label: message``."""
    if not isinstance(condition, (bool, np.bool_)):
        raise TypeError(f"check_true: condition must be a bool, got {type(condition).__name__}")
    if not condition:
        raise AssertionError(f"{label}: {message}")
