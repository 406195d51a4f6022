"""The grading engine end to end: probes and partial credit, feedback that names the student's
lines, time limits that say where the code was stuck, notebooks that hang, crash or are not
notebooks at all, private tests that stay private. Attacks: test_grading_attacks.py."""

from __future__ import annotations

import json
import os
import re
import textwrap

import pytest
from grading_utils import (
    TIMEOUT,
    ex00,
    full,
    grade_ex00,
    grade_with,
    output,
    scores,
    shared_session,
    with_cells,
    write_notebook,
)

from tinyodl.grading import SandboxConfig, grade_main, grade_notebook
from tinyodl.grading.notebook import Cell, Notebook

SHORT = 2.0

PROBES = """
import numpy as np
from tinyodl.grading.api import Fn, task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

@task("Task 1: two functions", checks={"double": 1, "halve": 2})
def two_functions(t):
    x = np.arange(4.0)
    with t.check("double"):
        check_close("double(x)", t.call("double", x), 2 * x)
    with t.check("halve"):
        check_close("halve(x)", t.call("halve", x), x / 2)

@task("Task 2: objects", checks={"counter": 1, "state": 1, "module variable": 1})
def objects(t):
    with t.check("counter"):
        c = t.new("Counter", start=3)
        same = t.method(c, "add", np.int64(2))
        check_true("add", same.id == c.id, "add must return self")
        check_equal("Counter.total", t.attr(c, "total"), 5)
    with t.check("state"):
        kept = t.call("make_counter", keep=True)
        t.method(kept, "add", 1)
        check_equal("total of a kept counter", t.call("total_of", kept), 1)
    with t.check("module variable"):
        check_equal("LEARNING_RATE", t.attr("LEARNING_RATE"), 0.5)

@task("Task 3: functions and in place", checks={"fn": 1, "in place": 1, "def fn": 1})
def functions(t):
    a = np.array([1.0, 2.0])
    with t.check("fn"):
        check_close("apply", t.call("apply", Fn("lambda v: v * a", a=a), 3.0), 3.0 * a)
    with t.check("in place"):
        out = t.run("scale_in_place", np.ones(3), factor=2.0)
        check_true("scale_in_place", out.returned_arg("value", "args[0]"), "must return x")
        check_close("x after scale_in_place", out.args[0], 2 * np.ones(3))
    with t.check("def fn"):
        f = Fn("def f(v):\\n    return float(np.sum(v)) + k", k=1)
        check_close("apply", t.call("apply", f, np.ones(2)), 3.0)
"""

GOOD = """
import numpy as np
LEARNING_RATE = 0.5

def double(x):
    return 2 * x

def halve(x):
    return x / 2

class Counter:
    def __init__(self, start=0):
        self.total = start
    def add(self, k):
        self.total += int(k)
        return self

def make_counter():
    return Counter()

def total_of(counter):
    return counter.total

def apply(f, v):
    return f(v)

def scale_in_place(x, factor):
    x *= factor
    return x
"""


def test_probes_objects_functions_and_in_place_updates(tmp_path):
    results = grade_with(tmp_path, PROBES, [GOOD], jobs=2)
    assert results["score"] == 9, json.dumps(results["tests"], indent=1)
    assert results["extra_data"]["sandbox"]["packages"][0] == "numpy"


def test_partial_credit_inside_a_task(tmp_path):
    wrong = GOOD.replace("return x / 2", "return x / 3")
    results = grade_with(tmp_path, PROBES, [wrong], tasks=["two_functions"])
    assert results["score"] == 1 and results["tests"][0]["max_score"] == 3
    text = results["tests"][0]["output"]
    assert text.startswith("Failed: 1 / 3 points.")
    assert "[pass] double (1)" in text and "[FAIL] halve (0 / 2): halve(x):" in text
    assert "largest difference" in text


def test_tracebacks_show_the_students_cells_only(tmp_path):
    bad = GOOD.replace("return 2 * x", "return helper(x)") + "\ndef helper(x):\n    return x[9]\n"
    results = grade_with(tmp_path, PROBES, ["x = 1", bad], tasks=["two_functions"])
    text = results["tests"][0]["output"]
    assert "IndexError: index 9 is out of bounds" in text
    assert "cell 2, line 5, in double: return helper(x)" in text
    assert re.search(r"cell 2, line \d+, in helper: return x\[9\]", text)
    assert "/" not in text.split("IndexError")[1].replace(" / ", "")  # no paths
    assert "runner" not in text and "site-packages" not in text


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("del halve", "the notebook does not define a function called halve"),
        ("halve = 3", "halve is a int, not a function"),
        ("def halve(x):\n    yield x", "halve() returned a generator, which the grader cannot"),
        (
            "class A(np.ndarray): pass\ndef halve(x):\n    return (x / 2).view(A)",
            "halve() returned a A",
        ),
        ("def halve(x):\n    return [x, {1: 2}]", "returned (value[1]) a dict with a int key"),
    ],
)
def test_missing_or_unreadable_results_are_explained(tmp_path, code, words):
    results = grade_with(tmp_path, PROBES, [GOOD, code], tasks=["two_functions"])
    assert scores(results) == {"two_functions": 1}
    assert words in results["tests"][0]["output"]


def test_an_error_outside_any_check_fails_only_the_checks_not_reached(tmp_path):
    grader = PROBES + textwrap.dedent(
        """
        @task("Task 4: sequence", checks={"first": 1, "second": 1, "third": 1})
        def sequence(t):
            with t.check("first"):
                check_close("double", t.call("double", 1.0), 2.0)
            t.call("halve", "not a number")  # the student's function raises here
            with t.check("second"):
                pass
        """
    )
    results = grade_with(tmp_path, grader, [GOOD], tasks=["sequence"])
    checks = results["extra_data"]["checks"]["sequence"]
    assert checks == {"first": True, "second": False, "third": False}
    assert "TypeError" in results["tests"][0]["output"]


def test_a_grader_bug_is_an_internal_error_not_feedback(tmp_path, caplog):
    grader = PROBES + textwrap.dedent(
        """
        @task("Task 4: buggy", checks={"declared": 1})
        def buggy(t):
            with t.check("undeclared"):
                pass
        """
    )
    results = grade_with(tmp_path, grader, [GOOD], tasks=["buggy"])
    assert results["score"] == 0
    assert "internal error of the grader" in results["tests"][0]["output"]
    assert "undeclared" not in json.dumps(results["tests"])
    assert "not declared in @task" in caplog.text


def test_a_timeout_says_where_the_code_was_stuck(tmp_path):
    slow = GOOD.replace("return x / 2", "while True:\n        x = x + 0")
    results = grade_with(tmp_path, PROBES, [slow], tasks=["two_functions"], timeout=SHORT)
    text = results["tests"][0]["output"]
    assert "halve() did not finish within the task's 2 s" in text
    assert re.search(r"it was at cell 1, line \d+, in halve: x = x \+ 0", text), text
    assert results["extra_data"]["checks"]["two_functions"] == {"double": True, "halve": False}


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("def halve(x):\n    import os\n    os._exit(3)", "stopped (exit code 3)"),
        (
            "def halve(x):\n    import ctypes\n    return ctypes.string_at(0)",
            "crashed (Segmentation fault); it was at cell 2, line 3, in halve",
        ),
        ("def halve(x):\n    import sys\n    sys.exit(0)", "SystemExit"),
    ],
    ids=["os-exit", "segfault", "sys-exit"],
)
def test_a_crashing_task_scores_zero_and_grading_goes_on(tmp_path, code, words):
    tasks = ["two_functions", "objects"]
    results = grade_with(tmp_path, PROBES, [GOOD, code], timeout=SHORT, jobs=2, tasks=tasks)
    assert words in output(results, "two_functions"), output(results, "two_functions")
    assert scores(results) == {"two_functions": 1, "objects": 3}


@pytest.mark.parametrize(
    ("code", "note"),
    [
        ("while True:\n    pass", "did not finish within the task's 2 s"),
        ("import os\nos._exit(3)", "stopped (exit code 3)"),
        ("import ctypes\nctypes.string_at(0)", "crashed (Segmentation fault)"),
        ("raise RuntimeError('oops')", "RuntimeError: oops"),
        ("import sys\nsys.exit(1)", "SystemExit"),
        ("import matplotlib.pyplot as plt", "### grader: skip"),
    ],
    ids=["infinite-loop", "os-exit", "segfault", "exception", "sys-exit", "plot-import"],
)
def test_a_bad_top_level_cell_costs_nothing_else(tmp_path, code, note):
    cells = [GOOD, "x = 1", code, "y = 2"]
    results = grade_with(tmp_path, PROBES, cells, timeout=SHORT, tasks=["two_functions"])
    assert results["score"] == 3, results["output"]
    errors = results["extra_data"]["load_errors"]
    assert len(errors) == 1 and errors[0].startswith("cell 3: ") and note in errors[0], errors
    assert note in results["output"]


def test_cells_run_like_run_all_and_name_errors_are_retried(tmp_path):
    grader = textwrap.dedent(
        """
        from tinyodl.grading.api import task
        from tinyodl.grading.checks import check_equal

        @task("state", checks={"state": 1})
        def state(t):
            with t.check("state"):
                check_equal("y", t.attr("y"), 42)
                check_equal("f()", t.call("f"), 7)
                check_equal("after", t.attr("after"), True)
        """
    )
    cells = [
        "y = base + 1",  # uses a name defined by a later cell: retried at the end
        "def f():\n    return 7\n1 / 0",
        "base = 41",
        "import sys\nsys.exit(3)",
        "after = True",
    ]
    results = grade_with(tmp_path, grader, cells)
    assert results["score"] == 1, results["tests"][0]["output"]
    errors = results["extra_data"]["load_errors"]
    assert [e.split(":")[0] for e in errors] == ["cell 2", "cell 4"]
    assert "ZeroDivisionError: division by zero" in errors[0] and "SystemExit: 3" in errors[1]


def test_many_hanging_cells_are_bounded_by_the_notebook_budget(tmp_path):
    hangs = ["import time\ntime.sleep(60)"] * 6
    results = grade_with(tmp_path, PROBES, [GOOD, *hangs], timeout=1.0, budget=3.0)
    assert results["execution_time"] < 3.0 + 4.0, results["execution_time"]
    outputs = [t["output"] for t in results["tests"]]
    assert all("used up its total time budget" in text for text in outputs), outputs
    assert results["score"] == 0
    assert "time.sleep(60); it was skipped" in results["output"]


def test_cells_in_any_order_and_magics_still_load(tmp_path):
    """Reverse the code cells, split one per function, add junk: still full marks."""
    code = [c.source for c in ex00().cells if c.cell_type == "code"]
    pieces = [piece for source in reversed(code) for piece in re.split(r"\n+(?=def )", source)]
    assert len(pieces) > len(code)
    cells = [Cell("markdown", "my notes")]
    for i, piece in enumerate(pieces):
        cells += [Cell("code", piece), Cell("code", f"print('scratch {i}')\n%timeit 1 + 1")]
    path = write_notebook(tmp_path / "00_foundations.ipynb", Notebook(cells))
    tasks = ["linear_forward", "sgd_momentum_step"]
    results = grade_notebook(path, timeout=TIMEOUT, tasks=tasks, jobs=2, session=shared_session())
    assert results["score"] == sum(full(t) for t in tasks), results["output"]


def test_retyped_into_one_percent_file_without_metadata(tmp_path):
    code = "\n\n".join(c.source for c in ex00().cells if c.cell_type == "code")
    path = tmp_path / "homework.py"
    path.write_text("# %%\n" + code.replace("# tinyodl-exercise: 00_foundations", "") + "\n")
    results = grade_notebook(
        path, exercise="00_foundations", tasks=["linear_forward"], session=shared_session()
    )
    assert results["score"] == full("linear_forward"), results["output"]
    assert results["extra_data"]["exercise"] == "00_foundations"


def test_threads_left_running_do_not_block_grading(tmp_path):
    code = "import threading, time\nthreading.Thread(target=time.sleep, args=(1e6,)).start()"
    results = grade_ex00(tmp_path, with_cells(ex00(), code), ["linear_forward"], timeout=SHORT)
    assert results["score"] == full("linear_forward"), results["output"]


def test_a_memory_hog_gets_a_memory_error_and_grading_goes_on(tmp_path):
    hog = "def linear_forward(x, w, b):\n    return np.ones((2**31, 4))"
    results = grade_ex00(tmp_path, with_cells(ex00(), hog), ["linear_forward", "linear_backward"])
    assert scores(results) == {"linear_forward": 0, "linear_backward": full("linear_backward")}
    assert "MemoryError" in output(results, "linear_forward")


def test_an_answer_larger_than_the_limit_is_refused(tmp_path):
    big = "def linear_forward(x, w, b):\n    return np.zeros(2**18)"  # 2 MiB
    config = SandboxConfig(max_message_mb=1)
    results = grade_ex00(tmp_path, with_cells(ex00(), big), ["linear_forward"], sandbox=config)
    assert "a message the grader cannot read (message too large" in results["tests"][0]["output"]


# -- notebooks that are not (quite) notebooks --------------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not valid JSON"),
        ('{"metadata": {}}', "no 'cells' list"),
        ('{"cells": [], "nbformat": 3}', "format 3 is not supported"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_malformed_notebooks_get_zero_with_one_line_per_task(tmp_path, content, words):
    path = tmp_path / "submission.ipynb"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "results.json"
    code = grade_main([str(path), "--exercise", "00_foundations", "--json", str(out)])
    results = json.loads(out.read_text())
    assert code == 0 and results["score"] == 0 and len(results["tests"]) == 8
    for test in results["tests"]:
        if test["visibility"] == "visible":
            assert words in test["output"] and test["output"].count("\n") <= 4
    assert words in results["output"]


def test_a_notebook_without_cells_or_with_another_exercise_id(tmp_path):
    empty = write_notebook(tmp_path / "empty.ipynb", Notebook([]))
    results = grade_notebook(
        empty, exercise="00_foundations", tasks=["linear_forward"], session=shared_session()
    )
    assert results["score"] == 0
    assert "does not define a function called linear_forward" in results["tests"][0]["output"]
    other = Notebook(ex00().cells, {"tinyodl": {"exercise": "03_quantization"}})
    path = write_notebook(tmp_path / "other.ipynb", other)
    results = grade_notebook(
        path, exercise="00_foundations", tasks=["linear_forward"], session=shared_session()
    )
    assert (
        "says it is exercise 03_quantization, but it was graded as 00_foundations"
        in (results["output"])
    )
    assert results["score"] == full("linear_forward")


# -- tinyodl modules a task allows ------------------------------------------------------------

ALLOWING = """
import numpy as np
from tinyodl.grading.api import task
from tinyodl.grading.checks import check_close

ALLOW = ("tinyodl.nn",)

@task("Task 1: relu with tinyodl.nn", checks={"values": 1})
def relu_task(t):
    x = np.array([-1.0, 2.0])
    with t.check("values"):
        check_close("my_relu", t.call("my_relu", x), [0.0, 2.0])

@task("Task 2: no tinyodl here", checks={"values": 1}, allow=())
def strict_task(t):
    with t.check("values"):
        check_close("my_relu", t.call("my_relu", -1.0), 0.0)
"""


def test_an_allowed_module_is_importable_and_a_forbidden_one_scores_zero(tmp_path):
    cells = [
        "import numpy as np\nfrom tinyodl.nn import functional as F",
        "def my_relu(x):\n    return F.relu_forward(np.asarray(x, dtype=float))[0]",
    ]
    from tinyodl.nn import functional

    if not hasattr(functional, "relu_forward"):
        pytest.skip("tinyodl.nn.functional has no relu_forward")
    results = grade_with(tmp_path, ALLOWING, cells, jobs=2)
    assert scores(results) == {"relu_task": 1, "strict_task": 0}, results["tests"]
    assert "imports tinyodl, tinyodl.nn, which this task does not allow" in output(
        results, "strict_task"
    ) or "imports tinyodl" in output(results, "strict_task")
    grading = ["import tinyodl.grading.checks", *cells]
    results = grade_with(tmp_path, ALLOWING, grading, tasks=["relu_task"])
    assert results["score"] == 0
    assert "imports tinyodl.grading" in results["tests"][0]["output"]


# -- private tests -------------------------------------------------------------------------------

PRIVATE = """
import numpy as np
from tinyodl.grading.api import task
from tinyodl.grading.checks import check_close

SECRET_INPUT = 4.25  # the hidden input: never shown

@task("Secret task", checks={"label nobody may see": 3}, hidden=True)
def secret(t):
    with t.check("label nobody may see"):
        check_close("the secret check", t.call("double", SECRET_INPUT), 8.5)

@task("Broken hidden task", checks={"another private label": 1}, hidden=True)
def broken(t):
    with t.check("another private label"):
        1 / 0  # a grader bug in private tests

@task("Visible task", checks={"double": 1})
def visible(t):
    with t.check("double"):
        check_close("double(1)", t.call("double", 1.0), 2.0)
"""


def test_private_tests_stay_private(tmp_path):
    leaky = (
        "import numpy as np\ndef double(x):\n    raise ValueError(f'the grader gave me {x!r}')\n"
    )
    results = grade_with(tmp_path, PRIVATE, [leaky], jobs=2)
    visible = json.dumps({k: v for k, v in results.items() if k != "extra_data"})
    for secret in ["label nobody may see", "another private label", "4.25", "8.5", "SECRET"]:
        assert secret not in visible, secret
    hidden = [t for t in results["tests"] if t["name"] != "Visible task"]
    assert all(t["output"] == "Failed. (Hidden test: details are not shown.)" for t in hidden)
    assert all(t["visibility"] == "after_published" for t in hidden)
    assert "the grader gave me 1.0" in output(results, "visible")  # visible inputs are fine
    good = "def double(x):\n    return 2 * x"
    results = grade_with(tmp_path, PRIVATE, [good], jobs=2)
    assert scores(results) == {"secret": 3, "broken": 0, "visible": 1}
    assert "ZeroDivisionError" not in json.dumps(results["tests"])


def test_a_grader_that_does_not_load_still_gives_results(tmp_path, caplog):
    broken = "from tinyodl.grading.api import task\nSECRET = 'grader source'\ndef oops(:\n"
    results = grade_with(tmp_path, broken, [GOOD])
    assert results["tests"] == [] and results["score"] == 0
    assert "the grader could not be loaded" in results["output"]
    assert "SECRET" not in json.dumps(results)
    assert "SyntaxError" in caplog.text


# -- the command line -----------------------------------------------------------------------------


def test_grade_main_writes_results_atomically(tmp_path, capsys):
    path = write_notebook(tmp_path / "00_foundations.ipynb", ex00())
    out = tmp_path / "out" / "results.json"
    argv = [str(path), "--json", str(out), "--task", "linear_forward", "--timeout", "30"]
    assert grade_main(argv) == 0
    results = json.loads(out.read_text())
    assert [t["tags"][0] for t in results["tests"]] == ["linear_forward"]
    assert results["score"] == full("linear_forward")
    assert os.listdir(out.parent) == ["results.json"]  # no temporary file left behind
    assert "[PASS]" in capsys.readouterr().out


@pytest.mark.skipif(os.geteuid() != 0, reason="--sandbox-user needs root")
def test_sandbox_user_runs_student_code_as_that_user(tmp_path):
    code = "import os\nUID = os.getuid()\ndef linear_forward(x, w, b):\n    return x @ w.T + b"
    grader = textwrap.dedent(
        """
        from tinyodl.grading.api import task
        from tinyodl.grading.checks import check_equal

        @task("uid", checks={"uid": 1})
        def uid(t):
            with t.check("uid"):
                check_equal("UID", t.attr("UID"), 65534)
        """
    )
    config = SandboxConfig(user="nobody")
    results = grade_with(tmp_path, grader, ["import numpy as np", code], sandbox=config)
    assert results["score"] == 1, results["tests"][0]["output"]
    assert results["extra_data"]["sandbox"]["user"] == "nobody"
