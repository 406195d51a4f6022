"""Run student code in a child process with a time limit.

The parent writes a job file and starts ``python -m tinyodl.grading.runner JOB``. The child
executes the notebook's code cells one by one into a fresh module (a cell that raises is
recorded and skipped, like "Run All" that carries on after errors), then runs one graded task
and writes a JSON result. Before and after each cell it appends to a progress file, so when the
child hangs or dies (``os._exit``, segfault) the parent knows which cell did it.
"""

from __future__ import annotations

import faulthandler
import json
import linecache
import os
import re
import signal
import subprocess
import sys
import tempfile
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path

from tinyodl.grading.notebook import Notebook

SKIP_MARK = re.compile(r"\A\s*### grader: skip[ \t]*$", re.MULTILINE)
_KEEP_CELL_MAGICS = {"time", "timeit", "capture", "prun"}
_MAX_MESSAGE = 2000
_MAX_FILE_BYTES = 64 * 2**20


def grading_cells(notebook: Notebook) -> list[tuple[int, str]]:
    """The code the grader runs: ``(cell number, source)`` for each code cell.

    Cell numbers are 1-based positions among all cells. Cells whose first line is
    ``### grader: skip`` are left out (a pasted block that merely contains it is not).
    IPython line magics and shell escapes (``%...``, ``!...``) become ``pass``; a cell magic
    other than ``%%time``/``%%timeit``/``%%capture``/``%%prun`` drops the whole cell.
    """
    cells = []
    for number, cell in enumerate(notebook.cells, start=1):
        if cell.cell_type != "code" or SKIP_MARK.search(cell.source):
            continue
        lines = cell.source.split("\n")
        first = lines[0].strip()
        if first.startswith("%%"):
            if first[2:].split(" ")[0] not in _KEEP_CELL_MAGICS:
                continue
            lines = lines[1:]
        cleaned = []
        for line in lines:
            stripped = line.lstrip()
            if stripped.startswith(("%", "!")):
                line = line[: len(line) - len(stripped)] + "pass"
            cleaned.append(line)
        cells.append((number, "\n".join(cleaned)))
    return cells


def _short(text: str, limit: int = _MAX_MESSAGE) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return _short(text, 300)


def exec_cells(cells: list[tuple[int, str]], progress=None) -> tuple[types.ModuleType, list[str]]:
    """Execute cells into a new module ``student``; return it and the errors of failing cells.

    Cells that fail with ``NameError`` are run once more after all others, so a cell moved
    above the one defining what it uses still works.
    """
    module = types.ModuleType("student")
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["student"] = module
    errors: dict[int, str] = {}
    retry = []
    for number, source in cells:
        error = _exec_one(module, number, source, progress)
        if error is not None:
            errors[number] = f"cell {number}: {_describe(error)}"
            if isinstance(error, NameError):
                retry.append((number, source))
    for number, source in retry:
        if _exec_one(module, number, source, progress) is None:
            del errors[number]
    return module, [errors[k] for k in sorted(errors)]


def _exec_one(module: types.ModuleType, number: int, source: str, progress) -> BaseException | None:
    filename = f"<cell {number}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    if progress is not None:
        progress.write(f"start {number}\n")
        progress.flush()
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
        error = None
    except BaseException as exc:  # noqa: BLE001 - student code may raise SystemExit too
        error = exc
    if progress is not None:
        progress.write(f"done {number}\n")
        progress.flush()
    return error


def _limit_file_size(limit: int = _MAX_FILE_BYTES) -> None:
    """Cap the size of any file the child writes (a print loop must not fill the disk)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _child_main(job_path: str) -> None:
    """Entry point of the child process: load the cells, run one task, write the result."""
    _limit_file_size()
    faulthandler.enable()  # a segfault in student code prints which cell line did it
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    cells = [(n, src) for n, src in job["cells"] if n not in set(job["skip"])]
    with open(job["progress"], "a", encoding="utf-8") as progress:
        student, errors = exec_cells(cells, progress)
        progress.write("loaded\n")
        progress.flush()
    result = {"load_errors": errors, "passed": None, "message": ""}
    if job["task"] is not None:
        from tinyodl.grading.tasks import load_grader

        test = getattr(load_grader(job["grader"]), job["task"])
        try:
            test(student)
            result["passed"] = True
        except AssertionError as exc:
            result.update(passed=False, message=_short(str(exc) or "assertion failed"))
        except BaseException as exc:  # noqa: BLE001 - any failure of student code scores 0
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
            result.update(passed=False, message=_short(text))
    partial = job["result"] + ".part"
    Path(partial).write_text(json.dumps(result), encoding="utf-8")
    os.replace(partial, job["result"])
    sys.stderr.flush()
    os._exit(0)  # do not wait for threads or atexit handlers the student code left behind


@dataclass
class RunOutcome:
    """What happened to one child run.

    ``status`` is ``"ok"`` (``result`` holds the child's JSON), ``"timeout"`` or ``"crashed"``;
    ``last_cell`` is the cell being executed when the child hung or died (None if none was).
    """

    status: str
    result: dict = field(default_factory=dict)
    last_cell: int | None = None
    loaded: bool = False
    returncode: int | None = None
    stderr: str = ""


def _kill(process: subprocess.Popen) -> None:
    """Kill the child and, on POSIX, every process it started (its session); then reap it."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:  # pragma: no cover
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _read_progress(path: Path) -> tuple[int | None, bool]:
    last, loaded = None, False
    for line in path.read_text(encoding="utf-8").splitlines():
        kind, _, arg = line.partition(" ")
        if kind == "start":
            last = int(arg)
        elif kind == "done":
            last = None
        elif kind == "loaded":
            loaded = True
    return last, loaded


def run_child(
    cells: list[tuple[int, str]],
    skip: set[int],
    grader: str,
    task: str | None,
    timeout: float,
) -> RunOutcome:
    """Run one task (or, with ``task=None``, only load the cells) in a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="tinyodl-grade-") as tmp:
        tmp = Path(tmp)
        job = {
            "cells": cells,
            "skip": sorted(skip),
            "grader": grader,
            "task": task,
            "progress": str(tmp / "progress.txt"),
            "result": str(tmp / "result.json"),
        }
        (tmp / "job.json").write_text(json.dumps(job), encoding="utf-8")
        (tmp / "progress.txt").touch()
        env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"}
        env.setdefault("OMP_NUM_THREADS", "1")
        work = tmp / "work"
        work.mkdir()
        with open(tmp / "stderr.txt", "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "tinyodl.grading.runner", str(tmp / "job.json")],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=os.name == "posix",
            )
            try:
                process.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill(process)  # also ends processes the student code started
        last_cell, loaded = _read_progress(tmp / "progress.txt")
        stderr = (tmp / "stderr.txt").read_bytes()[-_MAX_MESSAGE:].decode("utf-8", "replace")
        outcome = RunOutcome("ok", {}, last_cell, loaded, process.returncode, stderr)
        if (tmp / "result.json").exists():
            outcome.result = json.loads((tmp / "result.json").read_text(encoding="utf-8"))
        else:
            outcome.status = "timeout" if timed_out else "crashed"
        return outcome


if __name__ == "__main__":
    _child_main(sys.argv[1])
