"""Check an exercise from inside Jupyter: grade the *saved* notebook in another process.

``tinyodl grade NOTEBOOK`` is the way to check an exercise (README, "Studying on your own").
The functions here run that command from a notebook cell, for the nbgrader release
(:mod:`tinyodl.course.nbgrader`: one autograder-test cell per task, whose value is the
task's score, nbgrader's partial credit) and for students who prefer a cell::

    from tinyodl.course.selfcheck import check
    check("00_foundations")          # save the notebook first

Grading happens in a separate ``tinyodl grade`` process (the student's code in its own
sandboxed process, the checks in the grader's), never in the kernel that runs the cell.
Only the public tests that ship with tinyodl are used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


class NotebookNotFound(FileNotFoundError):
    """The saved notebook to grade could not be found (the message says where it looked)."""


def find_notebook(exercise: str, folder: str | Path | None = None) -> Path:
    """The saved notebook of ``exercise``: ``EXERCISE.ipynb`` in the working folder, the
    notebook JupyterLab says it runs (``JPY_SESSION_NAME``), or the only ``.ipynb`` there."""
    folder = Path(folder or os.getcwd())
    candidates = [folder / f"{exercise}.ipynb"]
    session = os.environ.get("JPY_SESSION_NAME")
    if session and session.endswith(".ipynb"):
        candidates.append(Path(session))
    for path in candidates:
        if path.is_file():
            return path
    notebooks = [p for p in folder.glob("*.ipynb") if p.is_file()]
    if len(notebooks) == 1:
        return notebooks[0]
    raise NotebookNotFound(
        f"cannot find the saved notebook of {exercise}: no {exercise}.ipynb in {folder}"
        + (f" (and {len(notebooks)} other notebooks there)" if notebooks else "")
        + "; save the notebook under that name, in the folder Jupyter runs it from"
    )


def grade_saved(exercise: str, tasks: list[str] | None = None, notebook=None) -> dict:
    """Run ``tinyodl grade`` on the saved notebook; return its ``results.json`` dictionary."""
    path = Path(notebook) if notebook else find_notebook(exercise)
    with tempfile.TemporaryDirectory(prefix="tinyodl-selfcheck-") as tmp:
        out = Path(tmp) / "results.json"
        cmd = [sys.executable, "-m", "tinyodl", "grade", str(path), "--exercise", exercise]
        cmd += ["--json", str(out)]
        for task in tasks or []:
            cmd += ["--task", task]
        user = os.environ.get("TINYODL_SANDBOX_USER")
        if user and os.geteuid() == 0:
            cmd += ["--sandbox-user", user]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if not out.exists():
            raise RuntimeError(f"tinyodl grade wrote no results:\n{proc.stderr[-2000:]}")
        return json.loads(out.read_text(encoding="utf-8"))


def task_score(exercise: str, task: str) -> float:
    """Grade one task of the saved notebook; print its feedback and return its score.

    The returned value is a plain ``float`` (nbgrader reads an autograder-test cell's value
    as its partial credit).
    """
    results = grade_saved(exercise, [task])
    tests = [t for t in results["tests"] if task in t.get("tags", [])]
    if not tests:
        raise RuntimeError(f"{exercise}: the grader has no task {task!r}")
    test = tests[0]
    print(f"{test['name']}: {test['score']:g} / {test['max_score']:g}")
    print(test["output"])
    return float(test["score"])


def check(exercise: str) -> float:
    """Grade every task of the saved notebook with the public tests; print the report."""
    from tinyodl.grading.cli import format_report

    results = grade_saved(exercise)
    print(format_report(results))
    return float(results["score"])
