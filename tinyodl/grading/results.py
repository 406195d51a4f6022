"""Gradescope ``results.json``: one test per task, the checks and their messages inside.

The format (https://gradescope-autograders.readthedocs.io): ``score``, ``execution_time``,
``output``, ``visibility``, ``stdout_visibility``, ``tests`` (``name``, ``number``,
``score``, ``max_score``, ``status``, ``output``, ``tags``, ``visibility``) and
``extra_data``. A visible task's output lists every check with ``[pass]`` / ``[FAIL]``, its
points and its message; a hidden task's says only passed or failed.
"""

from __future__ import annotations

import re
import time

from tinyodl.grading.api import Task, TaskContext

HIDDEN_FAILED = "Failed. (Hidden test: details are not shown.)"


def task_entry(task: Task, ctx: TaskContext, number: int) -> dict:
    """The Gradescope test of one graded task (score = points of the checks that passed)."""
    score = sum(points for label, points in task.checks if ctx.results[label] is True)
    passed = all(ctx.results[label] is True for label, _ in task.checks)
    entry = {
        "name": task.name,
        "number": str(number),
        "score": float(score),
        "max_score": task.points,
        "status": "passed" if passed else "failed",
        "tags": [task.id],
    }
    if task.hidden:
        entry["visibility"] = "after_published"
        entry["output"] = "Passed." if passed else HIDDEN_FAILED
        return entry
    entry["visibility"] = "visible"
    lines = ["Passed." if passed else f"Failed: {score:g} / {task.points:g} points."]
    previous = None
    for label, points in task.checks:
        state = ctx.results[label]
        if state is True:
            lines.append(f"[pass] {label} ({points:g})")
            continue
        message = str(state).replace("\n", "\n    ")
        if message == previous:
            message = "the same error as above"
        else:
            previous = message
        lines.append(f"[FAIL] {label} (0 / {points:g}): {message}")
    entry["output"] = "\n".join(lines)
    return entry


def failed_everywhere(tasks: list[Task], message: str) -> list[dict]:
    """Every task with every check failed for one reason (a notebook that cannot be read)."""
    entries = []
    for number, task in enumerate(tasks, start=1):
        ctx = TaskContext(task, None)
        ctx.fail_all(message)
        entries.append(task_entry(task, ctx, number))
    return entries


def cell_number(note: str) -> int:
    """Sort key of a load note ``"cell 7: ..."``."""
    match = re.match(r"cell (\d+)", note)
    return int(match.group(1)) if match else 0


def results_dict(exercise, tests, notes, load_errors, sandbox, start) -> dict:
    """The whole ``results.json`` dictionary (``start``: ``time.monotonic()`` at the start)."""
    score = float(sum(t["score"] for t in tests))
    max_score = float(sum(t["max_score"] for t in tests))
    lines = [f"Exercise {exercise}: {score:g} / {max_score:g} points."] if exercise else []
    lines += notes
    if load_errors:
        lines.append("Cells that failed while loading your notebook (other cells still ran):")
        lines.extend(f"  {note}" for note in load_errors)
    return {
        "score": score,
        "execution_time": round(time.monotonic() - start, 3),
        "output": "\n".join(lines),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": {
            "exercise": exercise,
            "max_score": max_score,
            "load_errors": load_errors,
            "sandbox": sandbox,
        },
    }
