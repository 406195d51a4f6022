"""Exercises and their graders: solutions score full marks, student versions score zero,
plausible bugs are caught, and grading survives hangs, crashes and rearranged notebooks."""

from __future__ import annotations

import importlib
import json
import re
import textwrap
from pathlib import Path

import pytest

from tinyodl.grading import grade_main, grade_notebook, solution_source, student_source
from tinyodl.grading.notebook import Cell, Notebook, parse_percent, to_ipynb
from tinyodl.grading.release import exercise_sources, release_exercise
from tinyodl.grading.runner import exec_cells, grading_cells
from tinyodl.grading.tasks import collect_tasks, grader_module_name

REPO = Path(__file__).resolve().parents[1]
EXERCISES = exercise_sources(REPO / "exercises")
TIMEOUT = 30.0  # generous: only hit by the tests that hang on purpose, which use SHORT
SHORT = 3.0


def _ids(paths):
    return [p.stem for p in paths]


def _solution(source: Path) -> Notebook:
    return parse_percent(solution_source(source.read_text(encoding="utf-8"), str(source)))


def _write(path: Path, notebook: Notebook) -> Path:
    path.write_text(to_ipynb(notebook), encoding="utf-8")
    return path


def _tasks(exercise: str):
    return collect_tasks(importlib.import_module(grader_module_name(exercise)))


@pytest.fixture(scope="module", params=EXERCISES, ids=_ids(EXERCISES))
def released(request, tmp_path_factory):
    """Grade the released solution and student notebooks of one exercise once."""
    out = tmp_path_factory.mktemp(request.param.stem)
    paths = release_exercise(request.param, out)
    return {
        "source": request.param,
        "solution": grade_notebook(paths["solution"], timeout=TIMEOUT, jobs=2),
        "student": grade_notebook(paths["student"], timeout=TIMEOUT, jobs=2),
    }


def test_exercises_exist():
    assert EXERCISES, "no exercises/NN_*.py sources found"


def test_every_grader_passes_on_the_solution(released):
    results = released["solution"]
    failed = [t["name"] + ": " + t["output"] for t in results["tests"] if t["status"] != "passed"]
    assert not failed, "\n".join(failed)
    assert results["score"] == results["extra_data"]["max_score"] > 0
    assert results["extra_data"]["load_errors"] == []
    assert len(results["tests"]) == len(_tasks(released["source"].stem))


def test_every_grader_fails_on_the_student_version(released):
    results = released["student"]
    passed = [t["name"] for t in results["tests"] if t["score"] != 0 or t["status"] == "passed"]
    assert not passed, f"graders that pass on a blank stub grade nothing: {passed}"
    assert results["score"] == 0
    assert results["extra_data"]["load_errors"] == []  # the stubs load cleanly


def test_hidden_tests_do_not_leak(released):
    tasks = {t.name: t for t in _tasks(released["source"].stem)}
    for test in released["student"]["tests"]:
        if tasks[test["name"]].hidden:
            assert test["visibility"] == "after_published"
            assert test["output"] == "Failed. (Hidden test: details are not shown.)"
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


def test_results_follow_the_gradescope_schema(released):
    _check_results_schema(released["solution"])
    _check_results_schema(released["student"])


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
def test_sources_name_their_exercise(source):
    text = source.read_text(encoding="utf-8")
    assert f"tinyodl-exercise: {source.stem}" in text
    assert "NotImplementedError" in student_source(text, str(source))


# -- exercise 00: plausible bugs must lose the points (in process, fast) ----------------------

EX00 = REPO / "exercises" / "00_foundations.py"

BUGS = {
    "forward difference": (
        "test_gradient_check",
        """
        def numerical_gradient(f, x, h=1e-5):
            grad = np.zeros(x.shape)
            for i in np.ndindex(x.shape):
                old = x[i]; fx = f(x); x[i] = old + h
                grad[i] = (f(x) - fx) / h; x[i] = old
            return grad
        """,
    ),
    "x not restored": (
        "test_gradient_check",
        """
        def numerical_gradient(f, x, h=1e-5):
            grad = np.zeros(x.shape)
            for i in np.ndindex(x.shape):
                old = x[i]; x[i] = old + h; fp = f(x); x[i] = old - h
                grad[i] = (fp - f(x)) / (2 * h)
            return grad
        """,
    ),
    "relative error without floor": (
        "test_gradient_check",
        """
        def relative_error(a, b):
            return float(np.max(np.abs(a - b) / (np.abs(a) + np.abs(b))))
        """,
    ),
    "linear upcasts float32": (
        "test_linear_forward",
        """
        def linear_forward(x, w, b):
            return x.astype(np.float64) @ w.T.astype(np.float64) + b
        """,
    ),
    "linear without bias": (
        "test_linear_forward",
        """
        def linear_forward(x, w, b):
            return x @ w.T
        """,
    ),
    "db is a mean": (
        "test_linear_backward",
        """
        def linear_backward(dout, x, w):
            return dout @ w, dout.T @ x, dout.mean(axis=0)
        """,
    ),
    "im2col kernel-major rows": (
        "test_im2col",
        """
        _right = im2col
        def im2col(x, kernel_size, stride=1, padding=0):
            cols = _right(x, kernel_size, stride, padding)
            kh, kw = pair(kernel_size)
            n, c = x.shape[:2]
            return cols.reshape(n, c, kh * kw, -1).transpose(0, 2, 1, 3).reshape(cols.shape)
        """,
    ),
    "im2col ignores stride": (
        "test_im2col",
        """
        _right = im2col
        def im2col(x, kernel_size, stride=1, padding=0):
            cols = _right(x, kernel_size, 1, padding)
            return cols[:, :, : _right(x, kernel_size, stride, padding).shape[2]]
        """,
    ),
    "conv flips the kernel": (
        "test_conv2d_forward",
        """
        _right = conv2d_forward
        def conv2d_forward(x, w, b=None, stride=1, padding=0):
            return _right(x, w[:, :, ::-1, ::-1], b, stride, padding)
        """,
    ),
    "conv pads only one side": (
        "test_conv2d_forward_hidden",
        """
        _right = conv2d_forward
        def conv2d_forward(x, w, b=None, stride=1, padding=0):
            p = pair(padding)
            x = np.pad(x, ((0, 0), (0, 0), (p[0], 0), (p[1], 0)))
            return _right(x, w, b, stride, 0)
        """,
    ),
    "unstable softmax": (
        "test_softmax_cross_entropy",
        """
        def softmax_cross_entropy(logits, y):
            n = len(y)
            p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            loss = -np.log(p[np.arange(n), y]).mean()
            p[np.arange(n), y] -= 1
            return float(loss), p / n
        """,
    ),
    "gradient not divided by N": (
        "test_softmax_cross_entropy",
        """
        _right = softmax_cross_entropy
        def softmax_cross_entropy(logits, y):
            loss, d = _right(logits, y)
            return loss, d * len(y)
        """,
    ),
    "lr inside the velocity": (
        "test_sgd_momentum_step",
        """
        def sgd_momentum_step(w, grad, velocity, lr, momentum=0.9):
            velocity *= momentum
            velocity += lr * grad
            w -= velocity
            return w, velocity
        """,
    ),
    "not in place": (
        "test_sgd_momentum_step",
        """
        def sgd_momentum_step(w, grad, velocity, lr, momentum=0.9):
            velocity = momentum * velocity + grad
            return w - lr * velocity, velocity
        """,
    ),
}


def _load(extra_cells: list[str]):
    cells = grading_cells(_solution(EX00))
    cells += [(1000 + i, textwrap.dedent(src)) for i, src in enumerate(extra_cells)]
    module, errors = exec_cells(cells)
    assert errors == []
    return module


def test_ex00_solution_passes_in_process():
    student = _load([])
    for task in _tasks("00_foundations"):
        task.function(student)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bug", list(BUGS))
def test_ex00_graders_catch_plausible_bugs(bug):
    task_id, code = BUGS[bug]
    student = _load([code])
    task = {t.id: t for t in _tasks("00_foundations")}[task_id]
    with pytest.raises(AssertionError):
        task.function(student)


# -- robustness: hangs, crashes and rearranged notebooks (subprocess grading) ------------------

SUBSET = ["test_linear_forward", "test_sgd_momentum_step"]


def _grade_with(tmp_path, extra: list[str], timeout: float = TIMEOUT, **kwargs) -> dict:
    notebook = _solution(EX00)
    notebook.cells += [Cell("code", textwrap.dedent(src)) for src in extra]
    path = _write(tmp_path / "00_foundations.ipynb", notebook)
    return grade_notebook(path, timeout=timeout, tasks=SUBSET, jobs=2, **kwargs)


def _scores(results: dict) -> dict:
    return {t["tags"][0]: t["score"] for t in results["tests"]}


def _full(task_id: str) -> float:
    return {t.id: t.points for t in _tasks("00_foundations")}[task_id]


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("def linear_forward(x, w, b):\n    while True:\n        pass\n", "time limit"),
        ("def linear_forward(x, w, b):\n    import os\n    os._exit(0)\n", "crashed"),
        ("def linear_forward(x, w, b):\n    import sys\n    sys.exit(0)\n", "SystemExit"),
        ("def linear_forward(x, w, b):\n    import ctypes\n    ctypes.string_at(0)\n", "<cell"),
        ("def linear_forward(x, w, b):\n    while True:\n        print('x' * 999)\n", "limit"),
    ],
    ids=["infinite-loop", "os-exit", "sys-exit", "segfault", "print-flood"],
)
def test_a_hanging_or_crashing_task_scores_zero_and_grading_goes_on(tmp_path, code, why):
    results = _grade_with(tmp_path, [code], timeout=SHORT)
    scores = _scores(results)
    assert scores["test_linear_forward"] == 0
    assert why in results["tests"][0]["output"]
    assert scores["test_sgd_momentum_step"] == _full("test_sgd_momentum_step")


@pytest.mark.parametrize(
    ("code", "note"),
    [
        ("while True:\n    pass\n", "time limit"),
        ("import os\nos._exit(3)\n", "exit code 3"),
        ("import ctypes\nctypes.string_at(0)\n", "crashed"),
        ("raise RuntimeError('oops')\n", "RuntimeError: oops"),
        ("import sys\nsys.exit(1)\n", "SystemExit"),
    ],
    ids=["infinite-loop", "os-exit", "segfault", "exception", "sys-exit"],
)
def test_a_bad_top_level_cell_costs_nothing_else(tmp_path, code, note):
    """A failing cell outside the task functions is skipped; the tasks are still graded."""
    results = _grade_with(tmp_path, ["x = 1", code, "y = 2"], timeout=SHORT)
    assert results["score"] == sum(_full(t) for t in SUBSET)
    errors = results["extra_data"]["load_errors"]
    assert len(errors) == 1 and note in errors[0], errors
    assert note in results["output"]


def test_threads_left_running_do_not_block_grading(tmp_path):
    code = "import threading, time\nthreading.Thread(target=time.sleep, args=(1e6,)).start()"
    results = _grade_with(tmp_path, [code], timeout=SHORT)
    assert results["score"] == sum(_full(t) for t in SUBSET), results["output"]


def test_reordered_split_and_extra_cells(tmp_path):
    """Reverse the code cells, split one per function, add junk: still full marks."""
    code = [c.source for c in _solution(EX00).cells if c.cell_type == "code"]
    pieces = [piece for source in reversed(code) for piece in re.split(r"\n+(?=def )", source)]
    assert len(pieces) > len(code)
    cells = [Cell("markdown", "my notes")]
    for i, piece in enumerate(pieces):
        cells += [Cell("code", piece), Cell("code", f"print('scratch {i}')\n%timeit 1 + 1")]
    path = _write(tmp_path / "00_foundations.ipynb", Notebook(cells))
    results = grade_notebook(path, timeout=TIMEOUT, tasks=SUBSET)
    assert results["score"] == sum(_full(t) for t in SUBSET), results["output"]


def test_retyped_into_one_percent_file_without_metadata(tmp_path):
    """Everything pasted into one cell of a script (self-checks too): pass the exercise id."""
    code = "\n\n".join(c.source for c in _solution(EX00).cells if c.cell_type == "code")
    code = code.replace("# tinyodl-exercise: 00_foundations", "")
    path = tmp_path / "homework.py"
    path.write_text("# %%\n" + code + "\n")
    results = grade_notebook(path, exercise="00_foundations", timeout=TIMEOUT, tasks=SUBSET)
    assert results["score"] == sum(_full(t) for t in SUBSET), results["output"]
    assert results["extra_data"]["exercise"] == "00_foundations"


def test_missing_function_scores_zero_with_a_clear_message(tmp_path):
    notebook = _solution(EX00)
    notebook.cells = [c for c in notebook.cells if "def sgd_momentum_step" not in c.source]
    path = _write(tmp_path / "00_foundations.ipynb", notebook)
    results = grade_notebook(path, timeout=TIMEOUT, tasks=SUBSET)
    assert _scores(results)["test_sgd_momentum_step"] == 0
    assert "does not define a function called sgd_momentum_step()" in results["tests"][1]["output"]


def test_grade_main_writes_results_json(tmp_path, capsys):
    path = _write(tmp_path / "00_foundations.ipynb", _solution(EX00))
    out = tmp_path / "results.json"
    argv = [str(path), "--json", str(out), "--timeout", str(TIMEOUT), "--task", SUBSET[0]]
    assert grade_main(argv) == 0
    results = json.loads(out.read_text())
    _check_results_schema(results)
    assert [t["tags"][0] for t in results["tests"]] == [SUBSET[0]]
    assert "[PASS]" in capsys.readouterr().out


def test_private_grader_file(tmp_path, monkeypatch):
    """Instructors can keep hidden tests out of the package: --tests private.py."""
    (tmp_path / "private.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from tinyodl.grading.tasks import graded

            @graded(points=3, name="secret", hidden=True)
            def test_secret(student):
                x, w, b = np.full((1, 1), 2.0), np.full((1, 1), 3.0), np.ones(1)
                assert student.linear_forward(x, w, b)[0, 0] == 7.0, "secret input 2, 3, 1"
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    notebook = _write(tmp_path / "00_foundations.ipynb", _solution(EX00))
    results = grade_notebook(notebook, timeout=TIMEOUT, grader="private.py")
    assert [(t["name"], t["score"], t["visibility"]) for t in results["tests"]] == [
        ("secret", 3.0, "after_published")
    ]
    broken = _solution(EX00)
    broken.cells.append(Cell("code", "def linear_forward(x, w, b):\n    return 0"))
    results = grade_notebook(_write(notebook, broken), timeout=TIMEOUT, grader="private.py")
    assert results["score"] == 0 and "secret input" not in json.dumps(results)
