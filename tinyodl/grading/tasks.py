"""Graded tasks: ordinary pytest test functions that carry their points.

A grader module ``tinyodl.grading.tests_exNN`` holds one test function per graded task::

    @graded(points=2, name="linear backward")
    def test_linear_backward(student):
        dx, dw, db = student.linear_backward(dout, x, w)
        check_close("linear_backward dx", dx, expected_dx)

``student`` is the module made from the student's notebook cells; tasks look functions up by
name (``student.linear_backward``), so adding, deleting or reordering cells does not matter.
``tinyodl grade`` runs each task in its own subprocess; pytest runs the same functions through
:mod:`tinyodl.grading.pytest_plugin`.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np


@dataclass(frozen=True)
class Task:
    """A graded test: ``function(student)`` raises on failure."""

    function: Callable
    points: float
    name: str
    hidden: bool

    @property
    def id(self) -> str:
        return self.function.__name__


def graded(points: float, name: str | None = None, hidden: bool = False) -> Callable:
    """Mark a test function as a graded task worth ``points``.

    Parameters
    ----------
    points : float
        Full marks for the task (all or nothing).
    name : str, optional
        Title shown to students; defaults to the function name.
    hidden : bool
        Hidden tasks report only "passed"/"failed", and only after grades are published.
    """
    if points <= 0:
        raise ValueError(f"graded: points must be positive, got {points}")

    def mark(function: Callable) -> Callable:
        function._tinyodl_task = Task(function, float(points), name or function.__name__, hidden)
        return function

    return mark


def collect_tasks(module: ModuleType) -> list[Task]:
    """Graded tasks of a grader module, in source order."""
    tasks = [obj._tinyodl_task for obj in vars(module).values() if hasattr(obj, "_tinyodl_task")]
    tasks.sort(key=lambda task: task.function.__code__.co_firstlineno)
    if not tasks:
        raise ValueError(f"collect_tasks: grader module {module.__name__} has no @graded tests")
    return tasks


def grader_module_name(exercise: str) -> str:
    """Grader module of an exercise id: ``"00_foundations"`` -> ``tinyodl.grading.tests_ex00``."""
    match = re.match(r"(\d\d)(_|$)", exercise)
    if not match:
        raise ValueError(
            f"grader_module_name: exercise ids start with two digits, got {exercise!r}"
        )
    return f"tinyodl.grading.tests_ex{match.group(1)}"


def load_grader(name_or_path: str) -> ModuleType:
    """Import a grader by module name or from a ``.py`` file (e.g. private hidden tests)."""
    if name_or_path.endswith(".py"):
        spec = importlib.util.spec_from_file_location("tinyodl_private_grader", name_or_path)
        if spec is None or spec.loader is None:
            raise ImportError(f"load_grader: cannot import {name_or_path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(name_or_path)


# -- assertion helpers with messages that tell students what went wrong ---------------------


def student_function(student: ModuleType, name: str) -> Callable:
    """``student.<name>``, with a clear failure when the notebook does not define it."""
    function = getattr(student, name, None)
    if not callable(function):
        raise AssertionError(f"the notebook does not define a function called {name}()")
    return function


def check_array(label: str, actual, shape: tuple, dtype=None) -> np.ndarray:
    """Assert ``actual`` is an ndarray of the given shape (and dtype)."""
    if not isinstance(actual, np.ndarray):
        raise AssertionError(f"{label}: expected a numpy array, got {type(actual).__name__}")
    if actual.shape != tuple(shape):
        raise AssertionError(f"{label}: expected shape {tuple(shape)}, got {actual.shape}")
    if dtype is not None and actual.dtype != np.dtype(dtype):
        raise AssertionError(f"{label}: expected dtype {np.dtype(dtype)}, got {actual.dtype}")
    return actual


def check_close(label: str, actual, expected, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Assert ``actual`` matches ``expected`` in shape and value, reporting the worst error."""
    expected = np.asarray(expected)
    if np.ndim(expected) == 0:
        if not np.isscalar(actual) and np.ndim(actual) != 0:
            raise AssertionError(f"{label}: expected a scalar, got shape {np.shape(actual)}")
        actual = np.asarray(actual, dtype=float)
    else:
        check_array(label, actual, expected.shape)
    if not np.all(np.isfinite(actual)):
        raise AssertionError(f"{label}: result contains nan or inf")
    if not np.allclose(actual, expected, rtol=rtol, atol=atol):
        err = np.abs(np.asarray(actual, dtype=float) - expected)
        worst = tuple(int(i) for i in np.unravel_index(np.argmax(err), err.shape))
        got, want = np.asarray(actual)[worst].item(), expected[worst].item()
        raise AssertionError(
            f"{label}: values differ from the expected result; largest difference "
            f"{err.max():.3g} at index {worst} (got {got!r}, expected {want!r})"
        )
