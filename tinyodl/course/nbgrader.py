"""nbgrader-compatible exercise notebooks (cell ids, ``grade_id``, points).

``tinyodl exercises release`` writes, next to ``student/`` and ``solution/``, an nbgrader
*source* notebook per exercise, ``nbgrader/source/NN_name/NN_name.ipynb``: the exercise with
its ``### BEGIN SOLUTION`` markers (nbgrader's own), where

* every cell keeps the stable id of the release (``cell-000``, ...);
* each cell holding a solution block is an **autograded answer** (``solution: true``, a
  ``grade_id`` made of the exercise and the functions it defines);
* each task of the tinyodl grader becomes one **autograder test** cell at the end
  (``grade: true``, ``points`` = the task's points, ``locked: true``), whose code grades
  that task on the saved notebook with ``tinyodl grade`` in a separate process and evaluates
  to the score (nbgrader's partial credit); a hidden task's code sits in a
  ``### BEGIN HIDDEN TESTS`` region, so nbgrader's student version shows an empty cell;
* a cell with a ``### BEGIN HIDDEN TESTS`` region of the exercise's own is a 0-point
  autograder test (nbgrader only accepts hidden regions in test cells).

The test cells start with ``### grader: skip``: tinyodl's own grading never runs them.
nbgrader runs them in the student's kernel, as it runs all its tests: its scores are as
trustworthy as nbgrader's model (code in that kernel can tamper with them); the sandboxed,
tamper-proof scores come from ``tinyodl grade`` (``exercises/README.md``).
"""

from __future__ import annotations

import re
from pathlib import Path

from tinyodl.grading.notebook import Cell, Notebook, parse_percent, to_ipynb
from tinyodl.grading.release import find_blocks

SCHEMA_VERSION = 3
_DEF = re.compile(r"^\s*def\s+(\w+)\s*\(", re.M)


def _meta(grade_id: str, grade=False, solution=False, locked=False, points=None) -> dict:
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": SCHEMA_VERSION,
        "solution": solution,
        "task": False,
    }
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _unique(name: str, used: set[str]) -> str:
    candidate, k = name, 2
    while candidate in used:
        candidate, k = f"{name}-{k}", k + 1
    used.add(candidate)
    return candidate


def test_cell_source(exercise: str, task) -> str:
    """The code of the autograder-test cell of one task."""
    points = f"{task.points:g} point" + ("" if task.points == 1 else "s")
    call = [
        "from tinyodl.course.selfcheck import task_score",
        "",
        f'task_score("{exercise}", "{task.id}")',
    ]
    if task.hidden:
        call = ["### BEGIN HIDDEN TESTS", *call, "### END HIDDEN TESTS"]
    return "\n".join(
        [
            "### grader: skip",
            f"# Autograder test: {task.name} ({points}). Save the notebook first: this grades",
            "# the saved file with `tinyodl grade` (public tests, in a separate sandboxed",
            "# process) and its value is your score for the task.",
            *call,
        ]
    )


def nbgrader_notebook(source: str | Path, tasks) -> Notebook:
    """The nbgrader source notebook of an exercise source and its grader's tasks.

    Parameters
    ----------
    source : path
        ``exercises/NN_name.py`` (with the solution markers).
    tasks : list
        The grader's tasks (``tinyodl.grading.api.collect_tasks``): ``id``, ``name``,
        ``points``, ``hidden``.
    """
    source = Path(source)
    exercise = source.stem
    text = source.read_text(encoding="utf-8")
    find_blocks(text, str(source))  # validate the markers first
    notebook = parse_percent(text)
    notebook.metadata["tinyodl"] = {"exercise": exercise}
    used: set[str] = set()
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        has_solution = "### BEGIN SOLUTION" in cell.source
        has_hidden = "### BEGIN HIDDEN TESTS" in cell.source
        names = _DEF.findall(cell.source)
        if has_solution:
            base = f"{exercise}-" + ("-".join(names) if names else f"answer-{i:03d}")
            cell.metadata.update(_meta(_unique(base, used), solution=True))
        elif has_hidden:
            base = f"{exercise}-hidden-{i:03d}"
            cell.metadata.update(_meta(_unique(base, used), grade=True, locked=True, points=0))
    notebook.cells.append(
        Cell(
            "markdown",
            "## Check your work\n\nOne cell per graded task; each grades your *saved* "
            "notebook with `tinyodl grade` and shows your score for that task.",
        )
    )
    for task in tasks:
        grade_id = _unique(f"{exercise}-test-{task.id}", used)
        meta = _meta(grade_id, grade=True, locked=True, points=float(task.points))
        notebook.cells.append(Cell("code", test_cell_source(exercise, task), 0, meta))
    return notebook


def write_nbgrader_source(source: str | Path, tasks, out_dir: str | Path) -> Path:
    """Write ``out_dir/nbgrader/source/NN_name/NN_name.ipynb``; return its path."""
    source = Path(source)
    path = Path(out_dir) / "nbgrader" / "source" / source.stem / f"{source.stem}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_ipynb(nbgrader_notebook(source, tasks)), encoding="utf-8")
    return path


def points_of(path: str | Path) -> float:
    """Total points of the autograder-test cells of an nbgrader notebook (JSON)."""
    import json

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    total = 0.0
    for cell in data["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            total += float(meta["points"])
    return total
