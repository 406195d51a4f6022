"""Attacks on the grader: each is a real student notebook graded by the real engine, and each
must fail to gain a point (issue 5, section 1). The notebooks start from exercise 00's
student version (every function a stub scoring 0) and add the attack's cells; the task
attacked must still score 0, and grading must finish with honest results.

The protections exercised: the comparison runs in the grading process (never in the
student's), answers are parsed as plain data, tinyodl and the graders are neither importable
nor readable (Landlock), the student's process cannot signal the grader or the supervisor
(Landlock scope, or another user), cannot start processes (seccomp), and whatever it starts
anyway is killed before results are written (subreaper supervisor). See exercises/README.md.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time

import pytest
from grading_utils import (
    REPO,
    ex00,
    full,
    grade_ex00,
    output,
    scores,
    with_cells,
    write_notebook,
)

from tinyodl.grading import SandboxConfig, grade_main, grade_notebook
from tinyodl.grading._confine import landlock_abi, seccomp_supported
from tinyodl.grading.cli import write_results

LANDLOCK = landlock_abi()
needs_landlock = pytest.mark.skipif(LANDLOCK < 6, reason="needs Landlock ABI >= 6")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (--sandbox-user)")
needs_seccomp = pytest.mark.skipif(not seccomp_supported(), reason="needs x86_64/aarch64")
GRADERS = REPO / "tinyodl" / "grading" / "graders"


def _attack(tmp_path, *cells, task="linear_forward", **kwargs) -> dict:
    """Grade the student version plus ``cells``; the attacked task must score 0."""
    results = grade_ex00(tmp_path, with_cells(ex00("student"), *cells), [task], **kwargs)
    assert scores(results) == {task: 0}, output(results, task)
    return results


def test_writing_a_result_file_and_exiting(tmp_path):
    cell = """
    def linear_forward(x, w, b):
        import json, os
        verdict = json.dumps({"passed": True, "score": 1, "message": "", "load_errors": []})
        for folder in [".", "..", "/tmp", os.environ.get("HOME", ".")]:
            for name in ["result.json", "results.json"]:
                try:
                    with open(os.path.join(folder, name), "w") as f:
                        f.write(verdict)
                except OSError:
                    pass
        os._exit(0)
    """
    results = _attack(tmp_path, cell)
    assert "stopped (exit code 0)" in output(results, "linear_forward")


def test_forging_answers_on_the_grader_pipe(tmp_path):
    verdict = """
    import os
    import _tinyodl_wire as wire

    def linear_forward(x, w, b):
        # claim a pass, then answer honestly: the grader reads the claim as the return value
        os.write(4, wire.pack({"op": "result", "value": {"t": "dict", "v": [["passed", True]]}}))
        return np.zeros((x.shape[0], w.shape[0]), x.dtype)
    """
    results = _attack(tmp_path, verdict)
    assert "expected a numpy array, got a dict" in output(results, "linear_forward")
    garbage = """
    def linear_forward(x, w, b):
        import os
        os.write(4, b"PASSED " * 100)
        return None
    """
    results = _attack(tmp_path, garbage)
    assert "a message the grader cannot read (bad message start" in output(
        results, "linear_forward"
    )


def test_replacing_the_graders_helpers_json_and_builtins(tmp_path):
    cell = """
    import builtins, json, sys, types
    fake = types.ModuleType("tinyodl.grading.checks")
    fake.check_close = fake.check_array = fake.check_equal = lambda *a, **k: None
    sys.modules["tinyodl.grading.checks"] = fake
    sys.modules["tinyodl.grading.api"] = fake
    builtins.AssertionError = type("NeverRaised", (Exception,), {})

    def linear_forward(x, w, b):
        json.dumps = lambda *a, **k: '{"passed": true, "score": 1}'
        return np.zeros((x.shape[0], w.shape[0]), x.dtype)
    """
    results = _attack(tmp_path, cell)
    assert "a message the grader cannot read" in output(results, "linear_forward")


def test_monkeypatching_numpy_comparisons(tmp_path):
    cell = """
    np.allclose = lambda *a, **k: True
    np.array_equal = lambda *a, **k: True
    np.isclose = lambda *a, **k: np.True_
    np.testing.assert_allclose = lambda *a, **k: None

    def linear_forward(x, w, b):
        return np.zeros((x.shape[0], w.shape[0]), x.dtype)  # right shape, wrong values
    """
    results = grade_ex00(tmp_path, with_cells(ex00("student"), cell), ["linear_forward"])
    checks = results["extra_data"]["checks"]["linear_forward"]
    assert checks == {"shape and dtype (float32 in, float32 out)": True, "values": False}
    assert results["score"] == 0.5  # what honest zeros earn: the shape, not the values


def test_an_ndarray_subclass_that_lies(tmp_path):
    liar = """
    class Liar(np.ndarray):
        def __eq__(self, other):
            return True
        def __array_function__(self, func, types, args, kwargs):
            return True
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            return np.zeros(())

    def linear_forward(x, w, b):
        return np.zeros(1).view(Liar)  # equal to anything, it claims
    """
    results = _attack(tmp_path, liar)
    assert "returned a Liar" in output(results, "linear_forward")
    # the student's side is theirs to patch: force a subclass through; only its bytes arrive
    patched = """
    class Liar(np.ndarray):
        def __eq__(self, other):
            return True
        __ne__ = lambda self, other: False

    def linear_forward(x, w, b):
        return np.zeros(1).view(Liar)  # equal to anything, it claims

    import _tinyodl_wire as wire
    _encode = wire.Encoder.encode
    def encode(self, value, where="value", depth=0):
        if isinstance(value, np.ndarray):
            return self.array(value)
        return _encode(self, value, where, depth)
    wire.Encoder.encode = encode
    """
    results = _attack(tmp_path, patched)
    assert "expected shape (4, 3), got (1,)" in output(results, "linear_forward")


def test_reading_expected_values_from_frames_and_memory(tmp_path):
    cell = """
    import gc, sys

    def linear_forward(x, w, b):
        shape = (x.shape[0], w.shape[0])
        found = []
        for frame in sys._current_frames().values():
            while frame is not None:
                found += [v for v in frame.f_locals.values()
                          if isinstance(v, np.ndarray) and v.shape == shape]
                frame = frame.f_back
        found += [o for o in gc.get_objects() if isinstance(o, np.ndarray) and o.shape == shape]
        return found[0] if found else "nothing found"
    """
    results = _attack(tmp_path, cell)
    assert "expected a numpy array, got a str" in output(results, "linear_forward")


def _borrow(function: str, attempts: list[str]) -> str:
    """A student function that returns the first borrowed implementation that works."""
    body = "\n".join(
        f"    try:\n        return ({attempt})(*args, **kwargs)\n"
        f"    except Exception as err:\n        errors.append(type(err).__name__)"
        for attempt in attempts
    )
    return (
        f"def {function}(*args, **kwargs):\n    errors = []\n{body}\n"
        f"    raise RuntimeError('borrowing failed: ' + ' '.join(errors))\n"
    )


@needs_landlock
def test_importing_tinyodl_or_the_graders_oracles(tmp_path):
    attempts = [
        "__import__('tinyodl.ops', fromlist=['im2col']).im2col",
        "__import__('tinyodl.grading.graders.ex00', fromlist=['x']).oracle_im2col",
        # put the repository (or site-packages) on sys.path first
        f"(__import__('sys').path.insert(0, {str(REPO)!r}) or "
        "__import__('tinyodl.reference.conv', fromlist=['x']).im2col)",
    ]
    results = _attack(tmp_path, "from tinyodl.ops import im2col", task="im2col")
    assert "your notebook imports tinyodl, which this task does not allow" in output(
        results, "im2col"
    )
    results = _attack(tmp_path, _borrow("im2col", attempts), task="im2col")
    assert "imports tinyodl" in output(results, "im2col")


@needs_landlock
def test_the_files_stay_unreadable_by_path(tmp_path):
    """Reading, exec'ing or importing the grader or tinyodl's sources by path fails."""
    grader, ops = str(GRADERS / "ex00.py"), str(REPO / "tinyodl" / "ops.py")
    attempts = [
        f"(lambda *a: open({grader!r}).read())",
        f"(lambda *a: exec(open({ops!r}).read(), {{}}))",
        "(lambda *a: (lambda s: s.loader.exec_module(__import__('importlib.util').util"
        f".module_from_spec(s)))(__import__('importlib.util').util.spec_from_file_location("
        f"'g', {grader!r})))",
        "(lambda *a: __import__('importlib.machinery').machinery.SourceFileLoader("
        f"'g', {grader!r}).get_data({grader!r}))",
    ]
    results = _attack(tmp_path, _borrow("im2col", attempts), task="im2col")
    assert "borrowing failed: " + " ".join(["PermissionError"] * 4) in output(results, "im2col")


def test_without_landlock_the_path_trick_is_not_stopped(tmp_path):
    """What is lost without Landlock (documented in exercises/README.md): reading by path."""
    cell = f"""
    def linear_forward(x, w, b):
        text = open({str(GRADERS / "ex00.py")!r}).read()
        raise RuntimeError("read " + str(len(text)) + " characters")
    """
    results = _attack(tmp_path, cell, sandbox=SandboxConfig(landlock=False))
    assert "read " in output(results, "linear_forward")


@pytest.fixture
def usr2_received():
    """Record SIGUSR2 delivered to this (the grading) process."""
    received = []
    previous = signal.signal(signal.SIGUSR2, lambda *_: received.append(True))
    yield received
    signal.signal(signal.SIGUSR2, previous)


SIGNALS = """
import os, signal

def linear_forward(x, w, b):
    results = []
    for attempt in [
        lambda: os.kill({grader}, signal.SIGUSR2),
        lambda: os.killpg(os.getpgid({grader}), signal.SIGUSR2),
        lambda: os.kill(os.getppid(), signal.SIGSTOP),
        lambda: os.kill(os.getppid(), signal.SIGKILL),
        lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL),
    ]:
        try:
            attempt()
            results.append("SENT")
        except OSError as err:
            results.append(type(err).__name__)
    raise RuntimeError("signals: " + " ".join(results))
"""


@needs_landlock
def test_killing_or_stopping_the_grader(tmp_path, usr2_received):
    cell = SIGNALS.format(grader=os.getpid())
    results = _attack(tmp_path, cell, task="linear_forward")
    assert "signals: " + " ".join(["PermissionError"] * 5) in output(results, "linear_forward")
    assert not usr2_received


@needs_root
def test_as_another_user_signals_and_writes_fail_even_without_landlock(tmp_path, usr2_received):
    """The sandbox user alone (no Landlock) stops signals and writes to the grader's files;
    it does not stop reading world-readable files (see exercises/README.md)."""
    target = tmp_path / "results.json"
    target.write_text("{}")
    cell = SIGNALS.format(grader=os.getpid()) + textwrap.dedent(
        f"""
        _signals = linear_forward

        def linear_forward(x, w, b):
            try:
                open({str(target)!r}, "w").write("rewritten")
                written = "WRITTEN"
            except OSError as err:
                written = type(err).__name__
            try:
                _signals(x, w, b)
            except RuntimeError as err:
                raise RuntimeError(str(err) + " write: " + written) from None
        """
    )
    config = SandboxConfig(user="nobody", landlock=False)
    results = _attack(tmp_path, cell, sandbox=config)
    text = output(results, "linear_forward")
    assert "signals: " + " ".join(["PermissionError"] * 5) + " write: PermissionError" in text
    assert not usr2_received and target.read_text() == "{}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


DAEMON = """
import os, time

def linear_forward(x, w, b):
    if os.fork() == 0:          # first fork
        os.setsid()             # leave the session and process group
        if os.fork() == 0:      # second fork: orphaned, re-parented
            with open({pidfile!r}, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(1.5)     # outlive the grading, then rewrite the results
            with open({results!r}, "w") as f:
                f.write('{{"score": 1000}}')
            os._exit(0)
        os._exit(0)
    time.sleep(0.5)
    return "the daemon will fix the score"
"""


@needs_seccomp
def test_a_setsid_daemon_cannot_even_start(tmp_path):
    cell = DAEMON.format(pidfile=str(tmp_path / "pid"), results=str(tmp_path / "results.json"))
    results = _attack(tmp_path, cell)
    assert "PermissionError" in output(results, "linear_forward")  # seccomp: no fork
    assert not (tmp_path / "pid").exists()


@pytest.mark.slow
def test_a_setsid_daemon_is_killed_before_results_are_written(tmp_path):
    """With processes allowed and no Landlock (the weakest setting), the supervisor still
    finds the double-forked setsid daemon and kills it before results.json is written."""
    pidfile, out = tmp_path / "pid", tmp_path / "results.json"
    notebook = with_cells(ex00("student"), DAEMON.format(pidfile=str(pidfile), results=str(out)))
    path = write_notebook(tmp_path / "00_foundations.ipynb", notebook)
    config = SandboxConfig(landlock=False, subprocesses=True)
    results = grade_notebook(path, tasks=["linear_forward"], sandbox=config)
    write_results(out, results)
    pid = int(pidfile.read_text())
    assert not _alive(pid), f"the daemon {pid} survived grading"
    time.sleep(2.0)
    assert json.loads(out.read_text())["score"] == 0


@needs_seccomp
def test_a_fork_bomb_fails_at_the_first_fork(tmp_path):
    cell = """
    import os
    def linear_forward(x, w, b):
        while True:
            os.fork()
    """
    results = _attack(tmp_path, cell)
    assert "PermissionError: [Errno 1] Operation not permitted" in output(results, "linear_forward")


@needs_root
@pytest.mark.slow
def test_a_fork_bomb_with_processes_allowed_is_capped_and_killed(tmp_path):
    cell = """
    import os, time
    def linear_forward(x, w, b):
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.05)
    """
    config = SandboxConfig(user="nobody", subprocesses=True, max_processes=40)
    start = time.monotonic()
    results = _attack(tmp_path, cell, sandbox=config, timeout=3.0)
    assert time.monotonic() - start < 30
    assert "did not finish within the task's 3 s" in output(results, "linear_forward")
    leftovers = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == 65534:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if b"_tinyodl_runner" in f.read():
                        leftovers.append(name)
        except OSError:
            pass
    assert not leftovers


@needs_seccomp
def test_no_sockets_no_ptrace(tmp_path):
    """No network, no local services, no reading other processes' memory (seccomp)."""
    cell = """
    import ctypes, os, socket

    def linear_forward(x, w, b):
        results = []
        for attempt in [
            lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
            lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
            lambda: socket.socketpair(),
        ]:
            try:
                attempt()
                results.append("OPENED")
            except OSError as err:
                results.append(type(err).__name__)
        libc = ctypes.CDLL(None, use_errno=True)
        results.append("ptrace:%d" % ctypes.get_errno() if libc.ptrace(16, os.getppid(), 0, 0)
                       else "ATTACHED")  # PTRACE_ATTACH to the supervisor
        raise RuntimeError("attempts: " + " ".join(results))
    """
    results = _attack(tmp_path, cell)
    assert "attempts: PermissionError PermissionError PermissionError ptrace:1" in output(
        results, "linear_forward"
    )


@needs_root
def test_root_without_a_sandbox_user_keeps_no_capabilities(tmp_path):
    cell = """
    import os

    def linear_forward(x, w, b):
        results = []
        for attempt in [lambda: os.nice(-5), lambda: os.setuid(1234), lambda: os.chroot(".")]:
            try:
                attempt()
                results.append("DONE")
            except OSError as err:
                results.append(type(err).__name__)
        raise RuntimeError(f"uid {os.getuid()}: " + " ".join(results))
    """
    results = _attack(tmp_path, cell, sandbox=SandboxConfig(landlock=False))
    assert "uid 0: PermissionError PermissionError PermissionError" in output(
        results, "linear_forward"
    )


def test_a_memory_bomb(tmp_path):
    top_level = "hoard = []\nwhile True:\n    hoard.append(bytearray(2**25))"
    in_function = "def linear_forward(x, w, b):\n    return bytearray(2**40)"
    config = SandboxConfig(memory_mb=320)
    notebook = with_cells(ex00("solution"), top_level, in_function)
    results = grade_ex00(
        tmp_path, notebook, ["linear_forward", "linear_backward"], sandbox=config, jobs=2
    )
    assert scores(results) == {"linear_forward": 0, "linear_backward": full("linear_backward")}
    assert "MemoryError" in output(results, "linear_forward")
    assert any("MemoryError" in e for e in results["extra_data"]["load_errors"])


PRIVATE = """
import numpy as np
from tinyodl.grading.api import task
from tinyodl.grading.checks import check_close

MARKER = "PRIVATE-SOURCE-MARKER"

@task("Private task", checks={"linear_forward on a private input": 1})
def private(t):
    with t.check("linear_forward on a private input"):
        out = t.call("linear_forward", np.ones((1, 2)), np.ones((3, 2)), np.zeros(3))
        check_close("linear_forward", out, np.full((1, 3), 2.0))
"""


@needs_landlock
def test_printing_a_private_tests_source(tmp_path, capsys):
    private = tmp_path / "private_tests.py"
    private.write_text(textwrap.dedent(PRIVATE))
    cell = f"""
    import gc, sys

    def linear_forward(x, w, b):
        found = []
        try:
            found.append(open({str(private)!r}).read())
        except OSError as err:
            found.append(type(err).__name__)
        found += [name for name in sys.modules if "private" in name]
        found += [str(o) for o in gc.get_objects() if isinstance(o, str) and "MARKER" in o]
        print(found)
        raise RuntimeError(" | ".join(found))
    """
    path = write_notebook(tmp_path / "00_foundations.ipynb", with_cells(ex00("student"), cell))
    out = tmp_path / "results.json"
    assert grade_main([str(path), "--tests", str(private), "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["score"] == 0
    visible = out.read_text() + capsys.readouterr().out
    assert "PRIVATE-SOURCE-MARKER" not in visible and "np.full((1, 3), 2.0)" not in visible
    assert "RuntimeError: PermissionError" in results["tests"][0]["output"]


def test_stack_dumps_and_tracebacks_name_no_grader_paths(tmp_path):
    cell = """
    def linear_forward(x, w, b):
        import numpy
        return numpy.linalg.inv(np.zeros((2, 2)))
    """
    results = _attack(tmp_path, cell)
    text = output(results, "linear_forward")
    assert "LinAlgError: Singular matrix" in text
    for path in [str(REPO), "site-packages", "/tmp/", "_tinyodl_runner"]:
        assert path not in json.dumps(results), path


@needs_landlock
def test_an_attack_in_one_function_leaves_other_tasks_alone(tmp_path):
    notebook = with_cells(ex00("solution"), SIGNALS.format(grader=os.getpid()))
    results = grade_ex00(tmp_path, notebook, ["linear_forward", "linear_backward"], jobs=2)
    assert scores(results) == {"linear_forward": 0, "linear_backward": full("linear_backward")}
