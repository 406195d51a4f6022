"""Every exercise and its grader, found automatically: the solution scores full marks, the
generated student version fails every check, each plausible bug (``tests/exercises/
bugs_exNN.py``) fails the checks it names, hidden tasks do not leak, and the committed
student notebooks are up to date."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from grading_utils import shared_session

from tinyodl.grading import grade_notebook, solution_source, student_source
from tinyodl.grading.api import collect_tasks
from tinyodl.grading.engine import grader_module_name, load_grader
from tinyodl.grading.notebook import Cell, parse_percent, to_ipynb
from tinyodl.grading.release import exercise_sources, release_exercise
from tinyodl.grading.results import HIDDEN_FAILED

REPO = Path(__file__).resolve().parents[1]
EXERCISES = exercise_sources(REPO / "exercises")
BUG_DIR = Path(__file__).resolve().parent / "exercises"
TIMEOUT = 60.0


def _ids(paths):
    return [p.stem for p in paths]


def _number(source: Path) -> str:
    return source.stem[:2]


def _tasks(source: Path):
    return collect_tasks(load_grader(grader_module_name(source.stem)))


def load_bugs(source: Path) -> dict:
    """The BUGS of ``tests/exercises/bugs_exNN.py`` (an empty dict when the file is missing)."""
    path = BUG_DIR / f"bugs_ex{_number(source)}.py"
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location(f"bugs_ex{_number(source)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BUGS


def buggy_source(source: Path, bug: dict) -> str:
    """The solution source with one bug applied (text edits, or a cell appended at the end)."""
    text = solution_source(source.read_text(encoding="utf-8"), str(source))
    for old, new in bug.get("replace", []):
        count = text.count(old)
        assert count == 1, f"bug edit {old!r} must match the solution exactly once, not {count}"
        text = text.replace(old, new)
    if "code" in bug:
        text += "\n\n# %%\n" + textwrap.dedent(bug["code"]).strip() + "\n"
    return text


def _write(path: Path, text: str) -> Path:
    path.write_text(to_ipynb(parse_percent(text)), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=EXERCISES, ids=_ids(EXERCISES))
def graded(request, tmp_path_factory):
    """Grade the released solution and student notebooks and every bug of one exercise."""
    source = request.param
    out = tmp_path_factory.mktemp(source.stem)
    paths = release_exercise(source, out)
    bugs = load_bugs(source)
    session = shared_session()

    def grade_bug(item):
        name, bug = item
        path = out / f"bug{list(bugs).index(name)}" / f"{source.stem}.ipynb"
        path.parent.mkdir()
        _write(path, buggy_source(source, bug))
        results = grade_notebook(
            path, timeout=TIMEOUT, tasks=[bug["task"]], details=True, session=session
        )
        return name, results

    with ThreadPoolExecutor(max_workers=2) as pool:
        kwargs = {"timeout": TIMEOUT, "jobs": 2, "details": True, "session": session}
        solution = pool.submit(grade_notebook, paths["solution"], **kwargs)
        student = pool.submit(grade_notebook, paths["student"], **kwargs)
        bug_results = dict(pool.map(grade_bug, bugs.items()))
    return {
        "source": source,
        "solution": solution.result(),
        "student": student.result(),
        "bugs": bugs,
        "bug_results": bug_results,
    }


def test_exercises_exist():
    assert EXERCISES, "no exercises/NN_*.py sources found"


def test_the_solution_scores_full_marks(graded):
    results = graded["solution"]
    failed = [t["name"] + ": " + t["output"] for t in results["tests"] if t["status"] != "passed"]
    assert not failed, "\n".join(failed)
    assert results["score"] == results["extra_data"]["max_score"] > 0
    assert results["extra_data"]["load_errors"] == []
    assert len(results["tests"]) == len(_tasks(graded["source"]))


def test_the_student_version_fails_every_check(graded):
    results = graded["student"]
    passing = [
        f"{task}: {label}"
        for task, checks in results["extra_data"]["checks"].items()
        for label, passed in checks.items()
        if passed
    ]
    assert not passing, f"checks that pass on a blank stub grade nothing: {passing}"
    assert results["score"] == 0
    assert results["extra_data"]["load_errors"] == []  # the stubs load cleanly


def test_every_task_has_a_plausible_bug(graded):
    bugs = graded["bugs"]
    assert bugs, f"add tests/exercises/bugs_ex{_number(graded['source'])}.py"
    covered = {bug["task"] for bug in bugs.values()}
    missing = [t.id for t in _tasks(graded["source"]) if t.id not in covered]
    assert not missing, f"tasks without a plausible bug: {missing}"


def test_each_bug_fails_the_checks_it_names(graded):
    tasks = {t.id: dict(t.checks) for t in _tasks(graded["source"])}
    problems = []
    for name, bug in graded["bugs"].items():
        assert bug["task"] in tasks, f"bug {name!r}: unknown task {bug['task']!r}"
        unknown = set(bug["fails"]) - set(tasks[bug["task"]])
        assert not unknown, f"bug {name!r}: unknown checks {sorted(unknown)}"
        assert bug["fails"], f"bug {name!r} names no check"
        checks = graded["bug_results"][name]["extra_data"]["checks"][bug["task"]]
        passing = [label for label in bug["fails"] if checks[label]]
        if passing:
            problems.append(f"bug {name!r} passes {passing}")
    assert not problems, "\n".join(problems)


def test_hidden_tasks_do_not_leak(graded):
    tasks = {t.name: t for t in _tasks(graded["source"])}
    for test in graded["student"]["tests"]:
        if tasks[test["name"]].hidden:
            assert test["visibility"] == "after_published"
            assert test["output"] == HIDDEN_FAILED
            text = json.dumps({k: v for k, v in graded["student"].items() if k != "extra_data"})
            for label, _ in tasks[test["name"]].checks:
                assert label not in text
        else:
            assert test["visibility"] == "visible"
            assert "NotImplementedError" in test["output"]


def _check_results_schema(results: dict) -> None:
    """The Gradescope results.json fields tinyodl produces, with their types."""
    assert isinstance(results["score"], float)
    assert isinstance(results["execution_time"], float) and results["execution_time"] >= 0
    assert isinstance(results["output"], str)
    assert results["visibility"] in {"visible", "hidden", "after_due_date", "after_published"}
    assert results["stdout_visibility"] in {"visible", "hidden"}
    numbers = [t["number"] for t in results["tests"]]
    assert len(set(numbers)) == len(numbers)
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output", "visibility", "status"}
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] in {"passed", "failed"}
        assert test["visibility"] in {"visible", "after_published"}
    assert results["score"] == sum(t["score"] for t in results["tests"])
    json.dumps(results, allow_nan=False)


def test_results_follow_the_gradescope_schema(graded):
    _check_results_schema(graded["solution"])
    _check_results_schema(graded["student"])


@pytest.mark.parametrize("source", EXERCISES, ids=_ids(EXERCISES))
def test_committed_student_notebooks_are_up_to_date(source, tmp_path):
    committed = REPO / "exercises" / "student" / f"{source.stem}.ipynb"
    fresh = release_exercise(source, tmp_path, solutions=False)["student"]
    assert committed.exists(), "run: tinyodl exercises release --out exercises --no-solutions"
    assert committed.read_text() == fresh.read_text(), (
        f"{committed} is stale; run: tinyodl exercises release --out exercises --no-solutions"
    )


@pytest.mark.notebook
@pytest.mark.parametrize("source", EXERCISES, ids=_ids(EXERCISES))
def test_solution_notebook_runs_in_jupyter(source, tmp_path):
    """The instructor notebook, self-checks and demos included, runs top to bottom."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    path = release_exercise(source, tmp_path)["solution"]
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute(cwd=tmp_path)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("source", EXERCISES, ids=_ids(EXERCISES))
def test_sources_name_their_exercise_and_grader(source):
    text = source.read_text(encoding="utf-8")
    assert f"tinyodl-exercise: {source.stem}" in text
    assert "NotImplementedError" in student_source(text, str(source))
    module = load_grader(grader_module_name(source.stem))
    assert module.EXERCISE == source.stem


def test_bug_edits_are_checked(tmp_path):
    """A text edit that does not match the solution is an error in the bug file, not a pass."""
    source = EXERCISES[0]
    with pytest.raises(AssertionError, match="exactly once"):
        buggy_source(source, {"replace": [("this text is not in the solution", "")]})
    text = buggy_source(source, {"code": "    x = 1\n"})
    cells = parse_percent(text).cells
    assert cells[-1] == Cell("code", "x = 1", cells[-1].line)
