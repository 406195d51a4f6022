"""What a grader module is written with: ``@task``, the task context ``t``, ``Fn``.

See ``docs/grading.md`` for the contract. In short::

    @task("Task 2: linear_forward", checks={"shape and dtype": 0.5, "values": 0.5})
    def linear_forward(t):
        out = t.call("linear_forward", x, w, b)     # runs in the student's process
        with t.check("shape and dtype"):
            check_array("linear_forward(x, w, b)", out, (4, 3), np.float32)
        with t.check("values"):
            check_close("linear_forward(x, w, b)", out, oracle(x, w, b))

The task function runs in the grader's process; ``t.call`` and friends send plain data to
the student's process and bring plain data back (:mod:`tinyodl.grading._wire`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType

from tinyodl.grading._wire import Fn, Ref

__all__ = ["Fn", "Outcome", "Ref", "StudentError", "StudentGone", "Task", "TaskContext", "task"]

log = logging.getLogger("tinyodl.grading")


class StudentError(Exception):
    """The student's code failed a probe: it raised, a name is missing, or the result is not
    plain data. ``str(err)`` is the feedback (the student's own lines only)."""


class StudentGone(StudentError):
    """The student's process timed out, crashed or sent garbage: the task cannot go on."""


class GraderBug(Exception):
    """A mistake in the grader module itself (an undeclared check label, ...)."""


@dataclass(frozen=True)
class Task:
    """One graded task: ``function(t)`` with its declared checks (label -> points)."""

    function: Callable
    name: str
    checks: tuple[tuple[str, float], ...]
    hidden: bool = False
    allow: tuple[str, ...] | None = None
    timeout: float | None = None

    @property
    def id(self) -> str:
        return self.function.__name__

    @property
    def points(self) -> float:
        return float(sum(points for _, points in self.checks))


def task(
    name: str,
    checks: dict[str, float],
    hidden: bool = False,
    allow: tuple[str, ...] | list[str] | None = None,
    timeout: float | None = None,
) -> Callable:
    """Declare a graded task (see ``docs/grading.md``).

    Parameters
    ----------
    name : str
        Title students see, matching the exercise text ("Task 2: linear_forward").
    checks : dict
        Ordered ``label -> points`` (positive numbers); the task's points are their sum.
    hidden : bool
        Shown only as passed/failed, after grades are published.
    allow : sequence of str, optional
        tinyodl modules student code may import in this task (default: the module's
        ``ALLOW``).
    timeout : float, optional
        Seconds for this task's student process, loading included (default: the engine's).
    """
    if not isinstance(name, str) or not name:
        raise GraderBug(f"@task: name must be a non-empty string, got {name!r}")
    if not isinstance(checks, dict) or not checks:
        raise GraderBug(f"@task {name!r}: checks must be a non-empty dict label -> points")
    for label, points in checks.items():
        ok = isinstance(points, int | float) and not isinstance(points, bool)
        if not isinstance(label, str) or not ok or not math.isfinite(points) or points <= 0:
            raise GraderBug(
                f"@task {name!r}: check {label!r} needs a string label and positive points, "
                f"got {points!r}"
            )
    if timeout is not None and not timeout > 0:
        raise GraderBug(f"@task {name!r}: timeout must be positive, got {timeout!r}")

    def mark(function: Callable) -> Callable:
        function._tinyodl_task = Task(
            function,
            name,
            tuple((label, float(points)) for label, points in checks.items()),
            bool(hidden),
            None if allow is None else tuple(allow),
            timeout,
        )
        return function

    return mark


def collect_tasks(module: ModuleType) -> list[Task]:
    """The ``@task`` functions of a grader module, in source order."""
    tasks = [v._tinyodl_task for v in vars(module).values() if hasattr(v, "_tinyodl_task")]
    tasks.sort(key=lambda t: t.function.__code__.co_firstlineno)
    if not tasks:
        raise GraderBug(f"grader module {module.__name__} has no @task functions")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise GraderBug(f"grader module {module.__name__}: two tasks share a name")
    return tasks


@dataclass
class Outcome:
    """What ``t.run`` returns: the value, the arguments as they are after the call, and
    ``aliases`` (which parts of the value are the very argument objects, e.g.
    ``{"value[0]": "args[0]"}`` when the function returned its first argument)."""

    value: object
    args: tuple
    kwargs: dict
    aliases: dict[str, str] = field(default_factory=dict)

    def returned_arg(self, value_path: str, arg_path: str) -> bool:
        """Whether ``value_path`` ("value[0]") is the very object passed as ``arg_path``
        ("args[0]", "kwargs['velocity']") - an in-place update that returns its input."""
        return self.aliases.get(value_path) == arg_path


class TaskContext:
    """The ``t`` a task function receives: probes into the student's process, and checks.

    ``channel`` carries the requests (:class:`tinyodl.grading.engine.Channel`).
    """

    def __init__(self, task: Task, channel):
        self.task = task
        self._channel = channel
        self._labels = dict(task.checks)
        self.results: dict[str, str | bool | None] = {label: None for label in self._labels}

    # -- probes --------------------------------------------------------------------------------

    def call(self, name: str, *args, keep: bool = False, **kwargs):
        """``student.<name>(*args, **kwargs)`` in the student's process; plain data back
        (a :class:`Ref` with ``keep=True``). Raises :class:`StudentError`."""
        return self._channel.ask("call", name=name, args=args, kwargs=kwargs, keep=keep)

    def run(self, name: str, *args, **kwargs) -> Outcome:
        """Like :meth:`call`, returning an :class:`Outcome` with the arguments after the call."""
        return self._channel.ask("call", name=name, args=args, kwargs=kwargs, run=True)

    def new(self, cls: str, *args, **kwargs) -> Ref:
        """An instance of the student's class ``cls``, kept in the student's process."""
        return self._channel.ask("new", name=cls, args=args, kwargs=kwargs)

    def method(self, ref: Ref, name: str, *args, keep: bool = False, **kwargs):
        """``ref.<name>(*args, **kwargs)`` in the student's process (plain data back; a
        method returning its own object, like ``fit`` returning ``self``, gives ``ref``)."""
        if not isinstance(ref, Ref):
            raise GraderBug(f"t.method: expected a Ref from t.new, got {type(ref).__name__}")
        return self._channel.ask("method", ref=ref, name=name, args=args, kwargs=kwargs, keep=keep)

    def attr(self, ref: Ref | str, name: str | None = None):
        """``ref.<name>`` as plain data; ``t.attr("NAME")`` reads a module-level variable."""
        if name is None:
            ref, name = None, ref
        elif not isinstance(ref, Ref):
            raise GraderBug(f"t.attr: expected a Ref from t.new, got {type(ref).__name__}")
        return self._channel.ask("attr", ref=ref, name=name)

    # -- checks --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def check(self, label: str) -> Iterator[None]:
        """Everything in the block counts for check ``label`` (see ``docs/grading.md``).

        ``AssertionError`` and :class:`StudentError` fail the check and the task goes on;
        :class:`StudentGone` fails it and ends the task. A check entered several times (in a
        loop) passes only if every entry passes; its first failure is reported.
        """
        if label not in self._labels:
            raise GraderBug(
                f"t.check({label!r}): not declared in @task(checks=...) of {self.task.id}; "
                f"declared: {list(self._labels)}"
            )
        try:
            yield
        except StudentGone as err:
            self.fail(label, str(err))
            raise
        except (AssertionError, StudentError) as err:
            self.fail(label, str(err) or "assertion failed")
        except GraderBug:
            raise
        except Exception as err:  # noqa: BLE001 - the student's data broke the check
            log.warning("task %s, check %r: %s", self.task.id, label, err, exc_info=True)
            self.fail(label, f"could not check your result ({type(err).__name__}: {err})")
        else:
            if self.results[label] is None:
                self.results[label] = True

    def fail(self, label: str, message: str) -> None:
        """Record a failure of ``label`` (the first failure's message is kept)."""
        if not isinstance(self.results[label], str):
            self.results[label] = message

    def fail_remaining(self, message: str) -> None:
        """Fail every check not entered yet (the task ended early)."""
        for label, state in self.results.items():
            if state is None:
                self.results[label] = message

    def fail_all(self, message: str) -> None:
        """Fail every check, passed ones included (e.g. a forbidden import)."""
        for label in self.results:
            self.results[label] = message
