"""Unit tests of tinyodl.grading: markers, notebook I/O, cell extraction, the author API and
checks, the wire format, the import closure, CLI. The engine: test_grading_engine.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl.grading import (
    MarkerError,
    _wire,
    grade_main,
    release_main,
    solution_source,
    student_source,
)
from tinyodl.grading.api import GraderBug, collect_tasks, task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true
from tinyodl.grading.closure import ClosureError, closure
from tinyodl.grading.engine import grader_module_name
from tinyodl.grading.feedback import format_error, scrub, where_stuck
from tinyodl.grading.notebook import (
    Cell,
    Notebook,
    NotebookError,
    exercise_id,
    grading_cells,
    parse_ipynb,
    parse_percent,
    read_notebook,
    to_ipynb,
)
from tinyodl.grading.release import find_blocks, release_exercise

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
    assert grader_module_name("00_foundations") == "tinyodl.grading.graders.ex00"
    with pytest.raises(ValueError, match="two digits"):
        grader_module_name("foundations")


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("a.txt", "x", "a.txt"),
        ("b.ipynb", "[]", "not a Jupyter notebook"),
        ("c.ipynb", "{not json", "not valid JSON"),
        ("d.ipynb", '{"cells": [], "nbformat": 3}', "format 3 is not supported"),
        ("e.ipynb", '{"worksheets": []}', "no 'cells' list"),
        ("f.ipynb", '{"cells": [7]}', "cell 1 is not a JSON object"),
        ("g.ipynb", '{"cells": [{"source": 5}]}', "cell 1: its 'source' is not text"),
    ],
)
def test_read_notebook_rejects_bad_files_in_one_line(tmp_path, name, content, words):
    (tmp_path / name).write_text(content)
    with pytest.raises(NotebookError, match=words) as info:
        read_notebook(tmp_path / name)
    assert "\n" not in str(info.value)
    (tmp_path / "h.ipynb").write_bytes(b"\xff\xfe{")
    with pytest.raises(NotebookError, match="UTF-8"):
        read_notebook(tmp_path / "h.ipynb")


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


# -- the author API and the checks -------------------------------------------------------------


def test_tasks_are_collected_in_source_order_with_their_checks():
    import types

    module = types.ModuleType("fake_grader")

    @task("B", checks={"one": 1, "two": 0.5})
    def second(t):
        pass

    @task("A", checks={"only": 2}, hidden=True, allow=["tinyodl.nn"], timeout=5)
    def first(t):
        pass

    module.first, module.second = first, second
    tasks = collect_tasks(module)
    assert [t.id for t in tasks] == ["second", "first"]
    assert tasks[0].points == 1.5 and tasks[0].checks == (("one", 1.0), ("two", 0.5))
    assert tasks[1].hidden and tasks[1].allow == ("tinyodl.nn",) and tasks[1].timeout == 5
    for bad in [{}, {"x": 0}, {"x": -1}, {"x": float("nan")}, {"x": True}, {3: 1}]:
        with pytest.raises(GraderBug):
            task("T", checks=bad)
    with pytest.raises(GraderBug, match="no @task"):
        collect_tasks(types.ModuleType("empty"))


def test_check_helpers_report_what_is_wrong():
    with pytest.raises(AssertionError, match=r"expected shape \(2, 3\), got \(3, 2\)"):
        check_array("out", np.zeros((3, 2)), (2, 3))
    check_array("out", np.zeros((3, 2)), (None, 2))
    with pytest.raises(AssertionError, match="expected dtype float32, got float64"):
        check_array("out", np.zeros(2), (2,), np.float32)
    with pytest.raises(AssertionError, match="expected a numpy array, got a list of length 2"):
        check_array("out", [1.0, 2.0], (2,))
    with pytest.raises(AssertionError, match=r"1 of 2 values differ.*0.5.*index \(1,\)"):
        check_close("out", np.array([1.0, 2.5]), np.array([1.0, 2.0]))
    with pytest.raises(AssertionError, match="contains nan"):
        check_close("out", np.array([np.nan]), np.array([1.0]))
    with pytest.raises(AssertionError, match="expected a number, got an array of shape"):
        check_close("loss", np.zeros(2), 0.0)
    with pytest.raises(AssertionError, match="expected a number, got None"):
        check_close("loss", None, 0.0)
    with pytest.raises(AssertionError, match="got 1.5, expected 1.0"):
        check_close("loss", 1.5, 1.0)
    check_close("loss", np.array(1.0, dtype=np.float32), 1.0)
    check_close("loss", 1, 1.0)
    with pytest.raises(AssertionError, match="expected numbers, got dtype bool"):
        check_close("mask", np.ones(2, dtype=bool), np.ones(2))
    check_equal("q", np.array([1, 2], dtype=np.int8), np.array([1, 2]))
    with pytest.raises(AssertionError, match=r"1 of 2 values differ.*index \(1,\)"):
        check_equal("q", np.array([1, 3]), np.array([1, 2]))
    check_equal("nan", np.array([np.nan]), np.array([np.nan]))
    check_equal("n", np.array(3), 3)
    with pytest.raises(AssertionError, match="expected 'a', got 3"):
        check_equal("name", 3, "a")
    with pytest.raises(AssertionError, match="expected 2, got True"):
        check_equal("count", True, 2)
    with pytest.raises(AssertionError, match="x: must be in place"):
        check_true("x", False, "must be in place")
    with pytest.raises(TypeError, match="must be a bool"):
        check_true("x", np.zeros(2), "not a condition")


def test_check_messages_do_not_print_the_expected_array():
    expected = np.arange(100.0).reshape(10, 10)
    with pytest.raises(AssertionError) as info:
        check_close("out", expected + 1, expected)
    assert str(info.value).count("expected") == 2 and "98.0" not in str(info.value)


# -- the wire format ---------------------------------------------------------------------------

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.sampled_from([float("inf"), -float("inf")]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


def _round_trip(value):
    encoder = _wire.Encoder()
    data = _wire.pack({"v": encoder.encode(value)}, encoder.arrays)
    n_head, n_payload = _wire.parse_prefix(data[: _wire.PREFIX_SIZE], 2**30)
    body = data[_wire.PREFIX_SIZE :]
    header, arrays = _wire.parse_body(body[:n_head], body[n_head:], 2**30)
    assert len(body) == n_head + n_payload
    return _wire.decode(header["v"], arrays)


@settings(max_examples=80, deadline=None)
@given(plain)
def test_plain_data_round_trips_exactly(value):
    assert repr(_round_trip(value)) == repr(value)


def test_arrays_round_trip_with_dtype_and_order_and_scalars_become_0d():
    arrays = [
        np.arange(6, dtype=np.int8).reshape(2, 3),
        np.asfortranarray(np.ones((2, 3), np.float32)),
        np.zeros((0, 4)),
        np.array([True, False]),
        np.arange(10.0)[::3],
    ]
    back = _round_trip(arrays)
    for a, b in zip(arrays, back, strict=True):
        assert type(b) is np.ndarray and b.dtype == a.dtype and np.array_equal(a, b)
        assert b.flags.writeable
    scalar = _round_trip(np.float32(1.5))
    assert type(scalar) is np.ndarray and scalar.shape == () and scalar.dtype == np.float32
    same = np.ones(3)
    first, second = _round_trip([same, same])
    assert first is second  # one object sent once stays one object


def test_what_is_not_plain_data_is_refused_with_its_place():
    class Sub(np.ndarray):
        pass

    for value, words in [
        (np.ones(2).view(Sub), "subclass of numpy.ndarray"),
        ({1: 2}, "dict with a int key"),
        ([object()], r"value\[0\] is a object"),
        (np.array([None]), "dtype=object"),
        (b"bytes", "is a bytes"),
    ]:
        with pytest.raises(_wire.NotPlainData, match=words):
            _wire.Encoder().encode(value)


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: b"XXXX" + d[4:], "bad message start"),
        (lambda d: d[:4] + (2**31).to_bytes(4, "big") + d[8:], "too large"),
    ],
)
def test_corrupt_prefixes_are_refused(mutate, words):
    data = mutate(_wire.pack({"v": 1}))
    with pytest.raises(_wire.WireError, match=words):
        _wire.parse_prefix(data[: _wire.PREFIX_SIZE], 2**30)


def test_corrupt_arrays_are_refused_without_allocating_what_they_claim():
    import io
    import zipfile

    def npz(member: bytes, compress=zipfile.ZIP_STORED) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compress) as archive:
            archive.writestr("a0.npy", member)
        return buffer.getvalue()

    good = io.BytesIO()
    np.save(good, np.arange(4.0))
    header = good.getvalue()[:-32]
    lying = header.replace(b"(4,)", b"(9999999999,)".ljust(4))
    bad = {
        "not a zip": b"garbage",
        "compressed": npz(good.getvalue(), zipfile.ZIP_DEFLATED),
        "short body": npz(good.getvalue()[:-8]),
        "lying shape": npz(lying + b"\0" * 32),
        "object dtype": npz(good.getvalue().replace(b"'<f8'", b"'|O' ")),
    }
    for name, payload in bad.items():
        with pytest.raises(_wire.WireError):
            _wire.unpack_arrays(payload, 2**20)
        assert name
    with pytest.raises(_wire.WireError, match="not valid JSON"):
        _wire.parse_body(b"{nope", b"", 100)
    with pytest.raises(_wire.WireError, match="unknown tag"):
        _wire.decode({"t": "pickle"}, {})
    with pytest.raises(_wire.WireError, match="missing array"):
        _wire.decode({"t": "array", "k": "a9"}, {})


# -- the import closure and feedback -----------------------------------------------------------


def test_closure_of_tinyodl_nn_keeps_grading_and_denied_modules_out():
    modules = closure(("tinyodl.nn",))
    assert "tinyodl.nn.functional" in modules and "tinyodl.backend" in modules
    assert "tinyodl._kernels.conv" in modules  # named by a string in tinyodl.backend
    assert not any(m.startswith("tinyodl.grading") for m in modules)
    assert closure(()) == []
    with pytest.raises(ClosureError, match="tinyodl.nn -> .*tinyodl.ops"):
        closure(("tinyodl.nn",), deny=("tinyodl.ops",))
    with pytest.raises(ClosureError, match="may not import tinyodl.grading"):
        closure(("tinyodl.grading.checks",))
    with pytest.raises(ClosureError, match="not a tinyodl module"):
        closure(("numpy",))


def test_feedback_shows_only_the_students_lines():
    cells = {7: "def f(x):\n    return g(x)", 9: "def g(x):\n    return 1 / 0"}
    header = {
        "type": "ZeroDivisionError",
        "message": "division by zero in /work/secret/grader.py",
        "frames": [
            ["/tmp/tinyodl-grade-x/runtime/_tinyodl_runner.py", 300, "_serve"],
            ["<cell 7>", 2, "f"],
            ["<cell 9>", 2, "g"],
            ["/usr/lib/python3/site-packages/numpy/core.py", 10, "inner"],
        ],
    }
    text = format_error(header, cells)
    assert text.splitlines() == [
        "ZeroDivisionError: division by zero in .../grader.py",
        "  cell 7, line 2, in f: return g(x)",
        "  cell 9, line 2, in g: return 1 / 0",
    ]
    stuck = where_stuck([["<cell 9>", 2, "g"], ["<cell 7>", 2, "f"], ["/x/y.py", 1, "h"]], cells)
    assert stuck.splitlines() == [
        "it was at cell 9, line 2, in g: return 1 / 0",
        "  called from cell 7, line 2, in f: return g(x)",
    ]
    assert scrub("see /root/.pyenv/lib/python3.11/os.py line 3") == "see .../os.py line 3"


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


def test_grade_main_without_an_exercise_id_still_writes_results(tmp_path):
    (tmp_path / "homework.ipynb").write_text(to_ipynb(Notebook([Cell("code", "x = 1")])))
    out = tmp_path / "results.json"
    assert grade_main([str(tmp_path / "homework.ipynb"), "--json", str(out)]) == 1
    results = json.loads(out.read_text())
    assert results["score"] == 0 and results["tests"] == []
    assert "does not say which exercise" in results["output"]


def test_release_main_explains_missing_sources(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as after `pip install tinyodl`: no exercises/ folder here
    with pytest.raises(FileNotFoundError, match="instructors clone the repository"):
        release_main(["--out", str(tmp_path / "out")])
    (tmp_path / "exercises").mkdir()
    with pytest.raises(FileNotFoundError, match="no NN_"):
        release_main(["--out", str(tmp_path / "out")])
