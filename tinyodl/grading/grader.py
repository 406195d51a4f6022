"""Grade a student notebook into a Gradescope ``results.json`` dictionary.

How a notebook is graded (GUIDE section 6):

1. Its code cells are collected in notebook order (:func:`~tinyodl.grading.runner.grading_cells`).
   Cell boundaries, extra cells and cell order do not matter beyond "Run All" semantics.
2. A probe run executes the cells once. A cell that raises is reported and the others still run.
   A cell that hangs or kills the interpreter (``os._exit``, a segfault) is found from the
   progress log and left out of every later run, so it costs only the tasks whose functions
   it should have defined.
3. Each graded task then runs in its own fresh interpreter with a time limit: a timeout, a
   crash or a failed check scores 0 on that task and grading continues.

Hidden tasks (``@graded(hidden=True)``) report only "passed"/"failed" with
``visibility="after_published"``, so their checks never leak into feedback.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tinyodl.grading.notebook import exercise_id, read_notebook
from tinyodl.grading.runner import RunOutcome, grading_cells, run_child
from tinyodl.grading.tasks import collect_tasks, grader_module_name, load_grader

DEFAULT_TIMEOUT = 60.0


def _load_cells(cells, grader: str, timeout: float) -> tuple[set[int], list[str]]:
    """Probe runs: find the cells that hang or kill the interpreter while loading."""
    skip: set[int] = set()
    notes: list[str] = []
    while True:
        outcome = run_child(cells, skip, grader, None, timeout)
        if outcome.status == "ok":
            return skip, notes + outcome.result["load_errors"]
        if outcome.last_cell is None or outcome.last_cell in skip:
            # died outside any cell: nothing left to skip, every task will report it
            return skip, notes + [f"the notebook could not be loaded ({_why(outcome, timeout)})"]
        skip.add(outcome.last_cell)
        notes.append(f"cell {outcome.last_cell}: {_why(outcome, timeout)}; it was skipped")


def _why(outcome: RunOutcome, timeout: float) -> str:
    if outcome.status == "timeout":
        return f"did not finish within the {timeout:g} s time limit"
    return f"the Python process crashed (exit code {outcome.returncode})"


def _stderr_tail(outcome: RunOutcome, lines: int = 6) -> str:
    """What the dying process printed: faulthandler's error and the notebook frames, if any."""
    text = outcome.stderr.strip().splitlines()
    fatal = [x for x in text if x.startswith("Fatal Python error") or 'File "<cell' in x]
    tail = fatal[:lines] if fatal else text[-lines:]
    return "\nError output:\n" + "\n".join(tail) if tail else ""


def _task_result(task, number: int, outcome: RunOutcome, timeout: float) -> dict:
    if outcome.status == "ok":
        passed = bool(outcome.result["passed"])
        message = "" if passed else outcome.result["message"]
    else:
        passed = False
        where = "while loading the notebook" if not outcome.loaded else "while running this task"
        message = f"{_why(outcome, timeout)} {where}"
        if outcome.status == "crashed":
            message += _stderr_tail(outcome)
    entry = {
        "name": task.name,
        "number": str(number),
        "score": task.points if passed else 0.0,
        "max_score": task.points,
        "status": "passed" if passed else "failed",
        "tags": [task.id],
    }
    if task.hidden:
        entry["visibility"] = "after_published"
        entry["output"] = "Passed." if passed else "Failed. (Hidden test: details are not shown.)"
    else:
        entry["visibility"] = "visible"
        entry["output"] = "Passed." if passed else f"Failed.\n{message}"
    return entry


def grade_notebook(
    path: str | Path,
    exercise: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    grader: str | None = None,
    tasks: list[str] | None = None,
    jobs: int = 1,
) -> dict:
    """Grade one notebook and return a Gradescope ``results.json`` dictionary.

    Parameters
    ----------
    path : path
        The student's ``.ipynb`` or percent-format ``.py`` notebook.
    exercise : str, optional
        Exercise id such as ``"00_foundations"``; detected from the notebook when omitted.
    timeout : float
        Seconds allowed per task (loading the notebook included).
    grader : str, optional
        Grader module name or ``.py`` path; defaults to ``tinyodl.grading.tests_exNN``.
    tasks : list of str, optional
        Run only these task ids (test function names).
    jobs : int
        Tasks graded at the same time (each in its own process).

    Returns
    -------
    dict
        ``{"score", "execution_time", "output", "visibility", "stdout_visibility", "tests",
        "extra_data": {"exercise", "max_score", "load_errors"}}``; each test has ``name``,
        ``number``, ``score``, ``max_score``, ``status``, ``output``, ``tags``, ``visibility``.
    """
    start = time.perf_counter()
    notebook = read_notebook(path)
    exercise = exercise or exercise_id(notebook, path)
    if exercise is None and grader is None:
        raise ValueError(
            f"grade_notebook: cannot tell which exercise {Path(path).name} is; "
            "pass exercise='00_foundations' (or --exercise on the command line)"
        )
    if grader is not None and grader.endswith(".py"):
        grader = str(Path(grader).resolve())  # the child runs in another directory
    grader = grader or grader_module_name(exercise)
    selected = collect_tasks(load_grader(grader))
    if tasks is not None:
        unknown = set(tasks) - {t.id for t in selected}
        if unknown:
            raise ValueError(f"grade_notebook: unknown task(s) {sorted(unknown)} in {grader}")
        selected = [t for t in selected if t.id in tasks]

    cells = grading_cells(notebook)
    skip, load_errors = _load_cells(cells, grader, timeout)

    def grade_task(task):
        return run_child(cells, skip, grader, task.id, timeout)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(grade_task, selected))
    tests = [
        _task_result(task, number, outcome, timeout)
        for number, (task, outcome) in enumerate(zip(selected, outcomes, strict=True), start=1)
    ]

    score = sum(t["score"] for t in tests)
    max_score = sum(t["max_score"] for t in tests)
    lines = [f"Exercise {exercise}: {score:g} / {max_score:g} points."]
    if load_errors:
        lines.append("Cells that failed while loading your notebook (other cells still ran):")
        lines.extend(f"  {note}" for note in load_errors)
    return {
        "score": score,
        "execution_time": round(time.perf_counter() - start, 3),
        "output": "\n".join(lines),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": {"exercise": exercise, "max_score": max_score, "load_errors": load_errors},
    }
