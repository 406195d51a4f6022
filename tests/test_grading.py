"""Unit tests of tinyodl.grading: markers, notebook I/O, cell extraction, task helpers, CLI."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl.grading import MarkerError, grade_main, release_main, solution_source, student_source
from tinyodl.grading.notebook import (
    Cell,
    Notebook,
    exercise_id,
    parse_ipynb,
    parse_percent,
    read_notebook,
    to_ipynb,
)
from tinyodl.grading.release import find_blocks, release_exercise
from tinyodl.grading.runner import exec_cells, grading_cells
from tinyodl.grading.tasks import (
    check_array,
    check_close,
    collect_tasks,
    graded,
    grader_module_name,
)

REPO = Path(__file__).resolve().parents[1]

SOURCE = textwrap.dedent(
    '''\
    # %% [markdown]
    # # Title

    # %%
    import numpy as np


    def relu(x):
        """Doc."""
        ### BEGIN SOLUTION
        return np.maximum(x, 0)
        ### END SOLUTION


    class Layer:
        def forward(self, x):
            ### BEGIN SOLUTION
            y = 2 * x
            return y
            ### END SOLUTION

    # %%
    assert relu(-1) == 0
    ### BEGIN HIDDEN TESTS
    assert relu(3) == 3
    ### END HIDDEN TESTS
    '''
)


# -- markers and the student version ---------------------------------------------------------


def test_student_source_stubs_solutions_and_cuts_hidden_tests():
    student = student_source(SOURCE)
    assert "np.maximum" not in student and "y = 2 * x" not in student
    assert "relu(3)" not in student and "###" not in student
    assert '    raise NotImplementedError("relu: replace this line with your code")' in student
    assert '        raise NotImplementedError("forward: replace' in student  # nested indentation
    kept = [line for line in SOURCE.splitlines() if "###" not in line]
    kept = [
        line for line in kept if line not in ("    return np.maximum(x, 0)", "        y = 2 * x")
    ]
    kept = [line for line in kept if line not in ("        return y", "assert relu(3) == 3")]
    assert [
        line for line in student.splitlines() if "YOUR CODE" not in line and "raise" not in line
    ] == kept
    compile(student.replace("# %%", "#"), "<student>", "exec")


def test_solution_source_only_drops_marker_lines():
    solution = solution_source(SOURCE)
    assert solution.splitlines() == [
        x for x in SOURCE.splitlines() if not x.strip().startswith("###")
    ]


def _lines_with(*lines: str) -> str:
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            _lines_with("x = 1", "### BEGIN SOLUTION", "### BEGIN SOLUTION", "### END SOLUTION"),
            3,
            "nest",
        ),
        (_lines_with("x = 1", "### END SOLUTION"), 2, "without a matching BEGIN"),
        (
            _lines_with("### BEGIN SOLUTION", "x = 1", "### END HIDDEN TESTS"),
            3,
            "expected '### END SOLUTION'",
        ),
        (_lines_with("# %%", "### BEGIN SOLUTION", "x = 1"), 2, "never closed"),
        (_lines_with("### BEGIN SOLUTION", "# %%", "### END SOLUTION"), 2, "new cell"),
        (_lines_with("x = 1", "    ### BEGIN SOLUTON"), 2, "malformed"),
    ],
)
def test_marker_errors_name_file_and_line(text, line, words):
    with pytest.raises(MarkerError, match=f"ex.py:{line}:.*{words}"):
        student_source(text, "ex.py")


lines_strategy = st.lists(
    st.one_of(
        st.text(alphabet="abc =+1", min_size=1, max_size=8).map(lambda s: ("plain", s)),
        st.tuples(st.just("solution"), st.lists(st.sampled_from(["s1", "s2"]), max_size=3)),
        st.tuples(st.just("hidden"), st.lists(st.sampled_from(["h1", "h2"]), max_size=3)),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(lines_strategy)
def test_student_source_keeps_plain_lines_and_one_stub_per_block(items):
    text_lines, plain, n_solutions = [], [], 0
    for kind, payload in items:
        if kind == "plain":
            text_lines.append(payload)
            plain.append(payload)
        else:
            what = "SOLUTION" if kind == "solution" else "HIDDEN TESTS"
            text_lines += [f"    ### BEGIN {what}", *payload, f"    ### END {what}"]
            n_solutions += kind == "solution"
    student = student_source("".join(line + "\n" for line in text_lines)).splitlines()
    assert [
        x for x in student if x.strip() not in ("# YOUR CODE HERE",) and "raise" not in x
    ] == plain
    assert sum("raise NotImplementedError" in x for x in student) == n_solutions
    assert not any(x.startswith(("s", "h")) and x[1:].isdigit() for x in student)
    assert len(find_blocks("\n".join(text_lines))) == sum(kind != "plain" for kind, _ in items)


def test_release_refuses_a_paired_source(tmp_path):
    source = tmp_path / "00_x.py"
    source.write_text(
        "# ---\n# jupyter:\n#   jupytext:\n#     formats: ipynb,py:percent\n# ---\nx = 1\n"
    )
    with pytest.raises(MarkerError, match="formats"):
        release_exercise(source, tmp_path / "out")


# -- notebooks -------------------------------------------------------------------------------


def test_percent_parser_matches_jupytext_on_the_exercise_sources():
    jupytext = pytest.importorskip("jupytext")
    sources = sorted((REPO / "exercises").glob("[0-9][0-9]_*.py"))
    assert sources
    for path in sources + [None]:
        text = path.read_text() if path else SOURCE
        theirs = jupytext.reads(text, fmt="py:percent").cells
        ours = parse_percent(text).cells
        assert [(c.cell_type, c.source) for c in ours] == [(c.cell_type, c.source) for c in theirs]


def test_ipynb_round_trip_and_validity(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    notebook = Notebook(
        [Cell("markdown", "# T\n\ntext"), Cell("code", "x = 1\ny = 2"), Cell("code", "")],
        {"tinyodl": {"exercise": "07_demo"}},
    )
    text = to_ipynb(notebook)
    nbformat.validate(nbformat.reads(text, as_version=4))
    again = parse_ipynb(text)
    assert [(c.cell_type, c.source) for c in again.cells] == [
        (c.cell_type, c.source) for c in notebook.cells
    ]
    assert to_ipynb(again) == text  # deterministic bytes
    (tmp_path / "nb.ipynb").write_text(text)
    assert exercise_id(read_notebook(tmp_path / "nb.ipynb")) == "07_demo"


def test_exercise_id_sources():
    tagged = Notebook([Cell("code", "# tinyodl-exercise: 03_quant\nx = 1")])
    assert exercise_id(tagged, "whatever.ipynb") == "03_quant"
    assert (
        exercise_id(Notebook([Cell("code", "x = 1")]), "dir/05_layerwise.ipynb") == "05_layerwise"
    )
    assert exercise_id(Notebook([Cell("code", "x = 1")]), "homework.ipynb") is None
    assert grader_module_name("00_foundations") == "tinyodl.grading.tests_ex00"
    with pytest.raises(ValueError, match="two digits"):
        grader_module_name("foundations")


def test_read_notebook_rejects_other_files(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="a.txt"):
        read_notebook(tmp_path / "a.txt")
    (tmp_path / "b.ipynb").write_text("[]")
    with pytest.raises(ValueError, match="not a Jupyter notebook"):
        read_notebook(tmp_path / "b.ipynb")


# -- cells the grader runs -------------------------------------------------------------------


def test_grading_cells_skip_marker_and_magics():
    notebook = Notebook(
        [
            Cell("markdown", "x = 'not code'"),
            Cell("code", "%matplotlib inline\nimport numpy as np\nfor i in range(2):\n    !ls"),
            Cell("code", "### grader: skip\nraise SystemExit"),
            Cell("code", "%%time\nz = 3"),
            Cell("code", "%%bash\necho hi"),
            Cell("code", "w = 1\n### grader: skip\nv = 2"),  # the marker only counts on top
        ]
    )
    cells = grading_cells(notebook)
    assert [number for number, _ in cells] == [2, 4, 6]
    assert cells[0][1] == "pass\nimport numpy as np\nfor i in range(2):\n    pass"
    assert cells[1][1] == "z = 3"


def test_exec_cells_carries_on_after_errors_and_retries_name_errors():
    cells = [
        (1, "y = base + 1"),  # uses a name defined by a later cell
        (2, "def f():\n    return 7\n1 / 0"),
        (3, "base = 41"),
        (4, "import sys\nsys.exit(3)"),
        (5, "after = True"),
    ]
    module, errors = exec_cells(cells)
    assert module.y == 42 and module.f() == 7 and module.after
    assert len(errors) == 2
    assert errors[0].startswith("cell 2: ZeroDivisionError") and errors[1].startswith(
        "cell 4: SystemExit"
    )


# -- task helpers ----------------------------------------------------------------------------


def test_graded_tasks_are_collected_in_source_order():
    import types

    module = types.ModuleType("fake_grader")

    @graded(points=2)
    def test_b(student):
        pass

    @graded(points=1, name="A", hidden=True)
    def test_a(student):
        pass

    module.test_a, module.test_b = test_a, test_b
    tasks = collect_tasks(module)
    assert [t.id for t in tasks] == ["test_b", "test_a"]
    assert tasks[1].hidden and tasks[1].name == "A" and tasks[0].points == 2.0
    with pytest.raises(ValueError, match="points"):
        graded(points=0)
    with pytest.raises(ValueError, match="no @graded"):
        collect_tasks(types.ModuleType("empty"))


def test_check_helpers_report_what_is_wrong():
    with pytest.raises(AssertionError, match=r"expected shape \(2, 3\), got \(3, 2\)"):
        check_array("out", np.zeros((3, 2)), (2, 3))
    with pytest.raises(AssertionError, match="expected dtype float32, got float64"):
        check_array("out", np.zeros(2), (2,), np.float32)
    with pytest.raises(AssertionError, match="numpy array"):
        check_array("out", [1.0, 2.0], (2,))
    with pytest.raises(AssertionError, match=r"largest difference 0.5 at index \(1,\)"):
        check_close("out", np.array([1.0, 2.5]), np.array([1.0, 2.0]))
    with pytest.raises(AssertionError, match="nan"):
        check_close("out", np.array([np.nan]), np.array([1.0]))
    with pytest.raises(AssertionError, match="scalar"):
        check_close("loss", np.zeros(2), 0.0)
    check_close("loss", np.float32(1.0), 1.0)


# -- command line ----------------------------------------------------------------------------


def test_release_main_writes_student_and_solution(tmp_path, capsys):
    source = tmp_path / "src" / "09_demo.py"
    source.parent.mkdir()
    source.write_text(SOURCE)
    assert release_main(["--out", str(tmp_path / "out"), "--source", str(source.parent)]) == 0
    student = read_notebook(tmp_path / "out" / "student" / "09_demo.ipynb")
    solution = read_notebook(tmp_path / "out" / "solution" / "09_demo.ipynb")
    assert student.metadata["tinyodl"]["exercise"] == "09_demo"
    assert "NotImplementedError" in student.cells[1].source
    assert "np.maximum" in solution.cells[1].source and "###" not in solution.cells[1].source
    assert "wrote" in capsys.readouterr().out
    release_main(["--out", str(tmp_path / "only"), "--source", str(source), "--no-solutions"])
    assert not (tmp_path / "only" / "solution").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        release_main(["--out", str(tmp_path), "--source", str(tmp_path / "missing")])


def test_grade_main_needs_an_exercise_id(tmp_path):
    (tmp_path / "homework.ipynb").write_text(to_ipynb(Notebook([Cell("code", "x = 1")])))
    with pytest.raises(ValueError, match="--exercise"):
        grade_main([str(tmp_path / "homework.ipynb")])


def _plain_pytest(notebook: Path, cwd: Path) -> subprocess.CompletedProcess:
    plugins = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tinyodl.grading.pytest_plugin", *plugins,
         "--notebook", str(notebook), "--pyargs", "tinyodl.grading.tests_ex00"],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_grader_runs_under_plain_pytest(tmp_path):
    n_tasks = len(collect_tasks(importlib.import_module("tinyodl.grading.tests_ex00")))
    out = tmp_path / "release"
    release_exercise(REPO / "exercises" / "00_foundations.py", out, solutions=True)
    result = _plain_pytest(out / "solution" / "00_foundations.ipynb", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{n_tasks} passed" in result.stdout
