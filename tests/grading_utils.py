"""Helpers for the grading tests: notebooks made of exercise 00 plus extra cells, graded by
the real engine, and small private graders written to a file."""

from __future__ import annotations

import atexit
import textwrap
from pathlib import Path

from tinyodl.grading import grade_notebook, solution_source, student_source
from tinyodl.grading.api import collect_tasks
from tinyodl.grading.engine import load_grader
from tinyodl.grading.notebook import Cell, Notebook, parse_percent, to_ipynb
from tinyodl.grading.sandbox import Session

REPO = Path(__file__).resolve().parents[1]
EX00 = REPO / "exercises" / "00_foundations.py"
TIMEOUT = 60.0
_SESSION: list[Session] = []


def shared_session() -> Session:
    """One grading session (one zygote) for the tests that use the default sandbox."""
    if not _SESSION:
        _SESSION.append(Session())
        atexit.register(_SESSION[0].close)
    return _SESSION[0]


def _defaults(kwargs: dict) -> dict:
    kwargs.setdefault("timeout", TIMEOUT)
    if "sandbox" not in kwargs:
        kwargs.setdefault("session", shared_session())
    return kwargs


def ex00(version: str = "solution") -> Notebook:
    """Exercise 00 as the instructor's solution or the generated student version."""
    text = EX00.read_text(encoding="utf-8")
    make = solution_source if version == "solution" else student_source
    return parse_percent(make(text, str(EX00)))


def write_notebook(path: Path, notebook: Notebook) -> Path:
    path.write_text(to_ipynb(notebook), encoding="utf-8")
    return path


def with_cells(notebook: Notebook, *sources: str) -> Notebook:
    """``notebook`` with code cells appended (dedented)."""
    extra = [Cell("code", textwrap.dedent(src).strip("\n")) for src in sources]
    return Notebook(notebook.cells + extra, dict(notebook.metadata))


def grade_ex00(tmp_path: Path, notebook: Notebook, tasks=None, **kwargs) -> dict:
    path = write_notebook(tmp_path / "00_foundations.ipynb", notebook)
    return grade_notebook(path, tasks=tasks, details=True, **_defaults(kwargs))


def full(task_id: str) -> float:
    tasks = collect_tasks(load_grader("tinyodl.grading.graders.ex00"))
    return {t.id: t.points for t in tasks}[task_id]


def scores(results: dict) -> dict:
    return {t["tags"][0]: t["score"] for t in results["tests"]}


def output(results: dict, task_id: str) -> str:
    return next(t["output"] for t in results["tests"] if t["tags"][0] == task_id)


def grade_with(tmp_path: Path, grader: str, cells: list[str], **kwargs) -> dict:
    """Grade a notebook of ``cells`` with a private grader written from ``grader``."""
    grader_path = tmp_path / "private_grader.py"
    grader_path.write_text(textwrap.dedent(grader), encoding="utf-8")
    notebook = Notebook([Cell("code", textwrap.dedent(src).strip("\n")) for src in cells])
    path = write_notebook(tmp_path / "notebook.ipynb", notebook)
    return grade_notebook(path, grader=str(grader_path), details=True, **_defaults(kwargs))
