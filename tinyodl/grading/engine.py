"""Grade a notebook: one confined student process per task, checks in this process.

How a notebook is graded (``docs/architecture.md``, "Grading"):

1. Its code cells are collected (:func:`~tinyodl.grading.notebook.grading_cells`); a
   notebook that cannot be read still gives a result: 0 on every task, with the reason.
2. For each task, in source order (``jobs`` at a time), a fresh student process
   (:class:`~tinyodl.grading.sandbox.StudentProcess`) runs the cells like "Run All" that
   carries on after errors, then the task function runs *here* and asks that process for
   calls (probes). Expected values and oracles never leave this process.
3. A cell that hangs or kills the interpreter while loading is skipped from then on and the
   task starts again; every task and the whole notebook have time limits (``timeout`` per
   task, ``budget`` in total), so grading always ends.
4. The result is a Gradescope ``results.json`` dictionary, built once every student process
   (and anything it started) is gone.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tinyodl.grading import _wire
from tinyodl.grading.api import (
    GraderBug,
    Outcome,
    StudentError,
    StudentGone,
    Task,
    TaskContext,
    collect_tasks,
)
from tinyodl.grading.closure import ClosureError, closure
from tinyodl.grading.feedback import format_error, scrub, signal_name, where_stuck
from tinyodl.grading.notebook import NotebookError, exercise_id, grading_cells, read_notebook
from tinyodl.grading.process import ProcessEnded, StudentProcess, parse_dump
from tinyodl.grading.results import (
    cell_number,
    failed_everywhere,
    results_dict,
    task_entry,
)
from tinyodl.grading.sandbox import SandboxConfig, SandboxError, Session

DEFAULT_TIMEOUT = 60.0
DEFAULT_BUDGET = 480.0
log = logging.getLogger("tinyodl.grading")
_INTERNAL = "could not be graded: internal error of the grader (your instructor can see it)"


def grader_module_name(exercise: str) -> str:
    """``"00_foundations"`` -> ``"tinyodl.grading.graders.ex00"``."""
    match = re.match(r"(\d\d)(_|$)", exercise)
    if not match:
        raise ValueError(f"exercise ids start with two digits, got {exercise!r}")
    return f"tinyodl.grading.graders.ex{match.group(1)}"


def load_grader(name_or_path: str):
    """Import a grader by module name, or from a ``.py`` file (private tests)."""
    if name_or_path.endswith(".py"):
        path = Path(name_or_path).resolve()
        spec = importlib.util.spec_from_file_location(f"tinyodl_private_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import the grader file {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(name_or_path)


# -- talking to the student's process ----------------------------------------------------------


class Channel:
    """Probes of one task: requests to the student's process, answers as plain data."""

    def __init__(self, proc: StudentProcess, deadline: float, cells: dict, why_deadline: str):
        self.proc, self.deadline, self.cells = proc, deadline, cells
        self.packages = proc.session.packages
        self.why_deadline = why_deadline
        self.forbidden: set[str] = set()
        self.gone: str | None = None

    def _ref(self, id: int, type_name: str) -> _wire.Ref:
        return _wire.Ref(id, type_name, self)

    def ask(self, op: str, name: str, args=(), kwargs=None, keep=False, run=False, ref=None):
        if self.gone is not None:
            raise StudentGone(self.gone)
        if not isinstance(name, str):
            raise GraderBug(f"t.{op}: the name must be a string, got {type(name).__name__}")
        encoder = _wire.Encoder()
        try:
            header = {
                "op": op,
                "name": name,
                "args": encoder.encode(list(args), "args"),
                "kwargs": encoder.encode(dict(kwargs or {}), "kwargs"),
                "keep": bool(keep),
                "run": bool(run),
            }
        except _wire.NotPlainData as err:
            raise GraderBug(f"t.{op}({name!r}): an argument is not plain data: {err}") from None
        if ref is not None:
            if ref.owner is not self:
                raise GraderBug(f"t.{op}: {ref!r} belongs to another task's process")
            header["ref"] = ref.id
        label = name if op == "attr" else f"{name}()"
        try:
            self.proc.send(header, encoder.arrays, self.deadline)
            answer, arrays = self.proc.receive(self.deadline)
            return self._answer(answer, arrays, args, kwargs or {}, run, label)
        except ProcessEnded as end:
            self.gone = self._ended(end, label)
            raise StudentGone(self.gone) from None

    def _answer(self, answer: dict, arrays: dict, args, kwargs, run: bool, label: str):
        forbidden = answer.get("forbidden")
        if isinstance(forbidden, list):
            self.forbidden.update(str(x) for x in forbidden[:20])
        if answer.get("op") == "error":
            raise StudentError(format_error(answer, self.cells, self.packages))
        if answer.get("op") != "result" or "value" not in answer:
            raise ProcessEnded("corrupt", "unexpected answer")
        try:
            value = _wire.decode(answer["value"], arrays, self._ref)
            if not run:
                return value
            after = answer.get("args")
            after_kw = answer.get("kwargs")
            if not isinstance(after, list) or len(after) != len(args):
                raise _wire.WireError("bad arguments after the call")
            if not isinstance(after_kw, dict) or set(after_kw) != set(kwargs):
                raise _wire.WireError("bad keyword arguments after the call")
            new_args = tuple(
                orig if item == {"t": "same"} else _wire.decode(item, arrays, self._ref)
                for orig, item in zip(args, after, strict=True)
            )
            new_kwargs = {
                k: kwargs[k] if v == {"t": "same"} else _wire.decode(v, arrays, self._ref)
                for k, v in after_kw.items()
            }
            aliases = answer.get("aliases", {})
            if not isinstance(aliases, dict):
                raise _wire.WireError("bad aliases")
            aliases = {str(k): str(v) for k, v in list(aliases.items())[:100]}
            return Outcome(value, new_args, new_kwargs, aliases)
        except _wire.WireError as err:
            raise ProcessEnded("corrupt", str(err)) from None

    def _ended(self, end: ProcessEnded, label: str) -> str:
        """One message for a process that stopped answering while running ``label``."""
        if end.why == "timeout":
            fatal, frames = parse_dump(self.proc.dump_stack())
            where = where_stuck(frames, self.cells)
            text = f"{label} {self.why_deadline}"
            return text + (f"; {where}" if where else "")
        if end.why == "corrupt":
            return (
                f"while running {label}, your process sent a message the grader cannot read "
                f"({scrub(end.detail)}); only the grader may write to its pipes"
            )
        self.proc.close(died=True)
        fatal, frames = parse_dump(self.proc.dumps())
        text = f"the Python process running {label} stopped ({signal_name(self.proc.status)})"
        if fatal:
            text = f"the Python process running {label} crashed ({fatal})"
        where = where_stuck(frames, self.cells)
        return text + (f"; {where}" if where else "")


# -- loading the notebook ----------------------------------------------------------------------


@dataclass
class Loaded:
    """What loading the cells gave: errors of cells that raised, or a cell that hung/died."""

    errors: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    bad_cell: int | None = None
    bad_reason: str = ""


def _load(proc, cells, deadline, allow, packages, why_deadline, texts) -> Loaded:
    proc.send(
        {"op": "load", "cells": [list(c) for c in cells], "allow": list(allow),
         "packages": packages},
        None,
        deadline,
    )  # fmt: skip
    current = None
    started = False
    try:
        while True:
            answer, _ = proc.receive(deadline)
            if answer.get("op") == "cell":
                started = True
                current = answer.get("n") if answer.get("event") == "start" else None
                continue
            if answer.get("op") == "loaded":
                errors = [
                    f"cell {e.get('cell')}: "
                    + format_error(e, texts, packages).replace("\n", "\n    ")
                    for e in answer.get("errors", [])[:50]
                    if isinstance(e, dict)
                ]
                forbidden = [str(x) for x in answer.get("forbidden", [])[:20]]
                return Loaded(errors, forbidden)
            raise ProcessEnded("corrupt", "unexpected message while loading")
    except ProcessEnded as end:
        if not isinstance(current, int):
            if not started and end.why != "timeout":
                proc.close(died=True)
                raise SandboxError(
                    f"the student's interpreter did not start ({signal_name(proc.status)}): "
                    f"{proc.stderr()[-1500:]}"
                ) from None
            if end.why == "corrupt":
                return Loaded(bad_reason=f"sent a message the grader cannot read: {end.detail}")
            return Loaded(bad_reason=f"the notebook could not be loaded ({end.why})")
        if end.why == "timeout":
            _, frames = parse_dump(proc.dump_stack())
            where = where_stuck(frames, texts)
            reason = why_deadline + (f"; {where}" if where else "")
        elif end.why == "died":
            proc.close(died=True)
            fatal, frames = parse_dump(proc.dumps())
            reason = f"crashed ({fatal})" if fatal else f"stopped ({signal_name(proc.status)})"
            where = where_stuck(frames, texts)
            reason += f"; {where}" if where else ""
        else:
            reason = f"sent a message the grader cannot read ({end.detail})"
        return Loaded(bad_cell=current, bad_reason=reason)


# -- grading ------------------------------------------------------------------------------------


@dataclass
class _State:
    """Shared by the task threads of one notebook."""

    session: Session
    cells: list[tuple[int, str]]
    timeout: float
    budget_end: float
    deny: tuple[str, ...]
    allow: tuple[str, ...]
    lock: threading.Lock = field(default_factory=threading.Lock)
    skip: dict[int, str] = field(default_factory=dict)
    load_errors: dict[str, list[str]] = field(default_factory=dict)  # task id -> errors


def _grade_task(task: Task, state: _State) -> TaskContext:
    ctx = TaskContext(task, None)
    try:
        _run_task(task, state, ctx)
    except GraderBug as bug:
        log.error("grader bug in task %s: %s", task.id, bug, exc_info=True)
        ctx.fail_all(_INTERNAL)
    except SandboxError as err:
        log.error("task %s: %s", task.id, err)
        ctx.fail_all(
            "could not be graded: the grading sandbox failed (your instructor can see why)"
        )
    except Exception as err:  # noqa: BLE001 - grading must finish whatever happens
        log.error("task %s: internal error %r", task.id, err, exc_info=True)
        ctx.fail_all(_INTERNAL)
    return ctx


def _run_task(task: Task, state: _State, ctx: TaskContext) -> None:
    allow = task.allow if task.allow is not None else state.allow
    texts = dict(state.cells)
    timeout = task.timeout or state.timeout
    for _attempt in range(len(state.cells) + 2):
        start = time.monotonic()
        if start >= state.budget_end:
            ctx.fail_all("not graded: the notebook used up its total time budget")
            return
        deadline = min(start + timeout, state.budget_end)
        why = (
            f"did not finish within the task's {timeout:g} s"
            if deadline < state.budget_end
            else "was stopped: the notebook used up its total time budget"
        )
        with state.lock:
            cells = [(n, s) for n, s in state.cells if n not in state.skip]
        with StudentProcess(state.session, allow, state.deny, timeout) as proc:
            loaded = _load(proc, cells, deadline, allow, state.session.packages, why, texts)
            if loaded.bad_cell is not None and deadline < state.budget_end:
                with state.lock:
                    note = f"cell {loaded.bad_cell}: {loaded.bad_reason}; it was skipped"
                    state.skip.setdefault(loaded.bad_cell, note)
                continue
            if loaded.bad_cell is not None:
                ctx.fail_all(
                    "not graded: the notebook used up its total time budget while loading "
                    f"(at cell {loaded.bad_cell})"
                )
                return
            if loaded.bad_reason:
                ctx.fail_all(f"your notebook could not be loaded: {loaded.bad_reason}")
                return
            with state.lock:
                state.load_errors[task.id] = loaded.errors
            channel = Channel(proc, deadline, texts, why)
            ctx._channel = channel
            try:
                task.function(ctx)
            except StudentError as err:  # StudentGone included
                ctx.fail_remaining(str(err))
            except AssertionError as err:
                ctx.fail_remaining(str(err) or "assertion failed")
            except GraderBug:
                raise
            except Exception as err:  # noqa: BLE001 - e.g. unpacking a wrong result
                log.warning("task %s: %r", task.id, err, exc_info=True)
                ctx.fail_remaining(f"could not check your results ({type(err).__name__}: {err})")
            ctx.fail_remaining("not reached: the grader stopped before this check")
            forbidden = sorted(set(loaded.forbidden) | channel.forbidden)
            if forbidden:
                allowed = ", ".join(allow) if allow else "no tinyodl module"
                ctx.fail_all(
                    f"your notebook imports {', '.join(forbidden)}, which this task does not "
                    f"allow (it allows {allowed}): write the code yourself"
                )
            return
    ctx.fail_all("your notebook could not be loaded: too many cells hang or crash")


def grade_notebook(
    path: str | Path,
    exercise: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    grader: str | None = None,
    tasks: list[str] | None = None,
    jobs: int = 1,
    budget: float = DEFAULT_BUDGET,
    sandbox: SandboxConfig | None = None,
    details: bool = False,
    session: Session | None = None,
) -> dict:
    """Grade one notebook and return a Gradescope ``results.json`` dictionary.

    Parameters
    ----------
    path : path
        The student's ``.ipynb`` (or percent-format ``.py``) notebook.
    exercise : str, optional
        The assignment's exercise id (``"00_foundations"``); read from the notebook when
        omitted. When both exist and differ, the given one is graded and the output says so.
    timeout : float
        Seconds per task, loading the notebook included.
    grader : str, optional
        Grader module name or ``.py`` file (private tests); default
        ``tinyodl.grading.graders.exNN``.
    tasks : list of str, optional
        Grade only these task ids (the task functions' names).
    jobs : int
        Tasks graded at the same time.
    budget : float
        Seconds for the whole notebook; tasks not started in time score 0 with a message.
    sandbox : SandboxConfig, optional
        How student code is confined (default: :class:`SandboxConfig`).
    session : Session, optional
        A grading session to reuse (several notebooks graded with one zygote); it stays
        open. Its configuration replaces ``sandbox``.
    details : bool
        Also return every check's result, hidden tasks' included, as
        ``extra_data["checks"] = {task id: {label: passed}}`` (for tests and instructors;
        never pass it when the results go to students).

    Returns
    -------
    dict
        ``score``, ``execution_time``, ``output``, ``visibility``, ``stdout_visibility``,
        ``tests`` (one per task: ``name``, ``number``, ``score``, ``max_score``, ``status``,
        ``output``, ``tags``, ``visibility``) and ``extra_data`` (``exercise``,
        ``max_score``, ``load_errors``, ``sandbox``). Never raises for a bad notebook.
    """
    start = time.monotonic()
    notes: list[str] = []
    notebook, problem = None, None
    try:
        notebook = read_notebook(path)
    except NotebookError as err:
        problem = str(err)
    except (OSError, UnicodeDecodeError) as err:
        problem = f"the notebook could not be read ({type(err).__name__}: {scrub(str(err))})"
    own = exercise_id(notebook, path) if notebook is not None else None
    if exercise and own and own != exercise:
        notes.append(
            f"Note: this notebook says it is exercise {own}, but it was graded as {exercise}."
        )
    exercise = exercise or own
    if exercise is None and grader is None:
        why = problem or "it does not say which exercise it is (no 'tinyodl-exercise:' tag)"
        return results_dict(exercise, [], [f"Could not grade this notebook: {why}."], [], {}, start)
    try:
        module = load_grader(grader or grader_module_name(exercise))
        selected = collect_tasks(module)
        allow = tuple(getattr(module, "ALLOW", ()))
        deny = tuple(getattr(module, "DENY", ()))
        for t in selected:
            closure(t.allow if t.allow is not None else allow, deny)
    except (ImportError, GraderBug, ClosureError, ValueError, SyntaxError) as err:
        log.error("could not load the grader for %s: %s", exercise, err, exc_info=True)
        which = f"for exercise {exercise} " if exercise else ""
        message = f"Could not grade this notebook: the grader {which}could not be loaded."
        return results_dict(exercise, [], [message], [], {}, start)
    if tasks is not None:
        selected = [t for t in selected if t.id in tasks]
    if problem is not None:
        tests = failed_everywhere(selected, f"not graded: {problem}")
        return results_dict(
            exercise, tests, [f"Could not grade this notebook: {problem}."], [], {}, start
        )
    own_session = session is None
    if own_session:
        try:
            session = Session(sandbox)
        except SandboxError as err:
            log.error("the grading sandbox could not be prepared: %s", err)
            tests = failed_everywhere(selected, "not graded: the grading sandbox failed")
            return results_dict(exercise, tests, [f"Could not grade: {err}"], [], {}, start)
    try:
        state = _State(
            session,
            grading_cells(notebook),
            float(timeout),
            start + float(budget),
            deny,
            allow,
        )
        with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
            contexts = list(pool.map(lambda t: _grade_task(t, state), selected))
        describe = session.describe()
    finally:
        if own_session:
            session.close()
    tests = [
        task_entry(t, ctx, number)
        for number, (t, ctx) in enumerate(zip(selected, contexts, strict=True), start=1)
    ]
    first = next((state.load_errors[t.id] for t in selected if t.id in state.load_errors), [])
    load_errors = sorted(state.skip.values(), key=cell_number) + first
    results = results_dict(exercise, tests, notes, load_errors, describe, start)
    if details:
        results["extra_data"]["checks"] = {
            t.id: {label: ctx.results[label] is True for label, _ in t.checks}
            for t, ctx in zip(selected, contexts, strict=True)
        }
    return results
