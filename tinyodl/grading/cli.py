"""Command-line front ends: ``tinyodl grade`` and ``tinyodl exercises release``.

``tinyodl.cli`` adds the sub-commands (:func:`add_grade_arguments`, :func:`add_release_arguments`
describe the full set of options) and calls :func:`grade_main` / :func:`release_main` with the
parsed namespace; options missing from the namespace take their defaults. Both also accept a
list of strings, ``grade_main(["nb.ipynb", "--json", "r.json"])``, and return an exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tinyodl.grading.engine import DEFAULT_BUDGET, DEFAULT_TIMEOUT, grade_notebook
from tinyodl.grading.release import exercise_sources, release_exercise
from tinyodl.grading.sandbox import SandboxConfig

SOURCES_MISSING = (
    "the exercise sources (exercises/NN_*.py, with solutions) are not part of the installed "
    "package: students `pip install tinyodl`, instructors clone the repository and run "
    "`tinyodl exercises release` from its root, or pass --source PATH"
)


def add_grade_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``tinyodl grade`` to ``parser``."""
    defaults = SandboxConfig()
    parser.add_argument("notebook", help="student notebook (.ipynb or percent-format .py)")
    parser.add_argument(
        "--json", dest="json_path", metavar="PATH", help="write Gradescope results.json here"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds per task, loading included (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET,
        metavar="S",
        help=f"seconds for the whole notebook (default {DEFAULT_BUDGET:g})",
    )
    parser.add_argument("--exercise", help="exercise id, e.g. 00_foundations (default: detect)")
    parser.add_argument(
        "--tests", metavar="MODULE_OR_PY", help="grader module or .py file (default: built in)"
    )
    parser.add_argument("--task", action="append", help="grade only this task (repeatable)")
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="tasks graded in parallel (default 1)"
    )
    parser.add_argument(
        "--sandbox-user",
        metavar="NAME",
        help="run student code as this unprivileged user (the grader must run as root)",
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=defaults.memory_mb,
        metavar="MB",
        help=f"address-space limit of student code (default {defaults.memory_mb})",
    )
    parser.add_argument(
        "--allow-package",
        action="append",
        metavar="NAME",
        help="third-party package student code may import (repeatable; default numpy, scipy)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the grader's internal errors with tracebacks (instructors only)",
    )
    return parser


def add_release_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``tinyodl exercises release`` to ``parser``."""
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--source",
        default=None,
        metavar="PATH",
        help="exercise source .py or a directory of NN_*.py (default: ./exercises)",
    )
    parser.add_argument(
        "--no-solutions", action="store_true", help="write only the student notebooks"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NN",
        help="release only these exercises (numbers or names; repeatable or comma-separated)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="grade the solution (full marks) and student version (every check fails) of "
        "each exercise first; write nothing unless all pass",
    )
    parser.add_argument(
        "--no-nbgrader",
        action="store_true",
        help="do not write the nbgrader source notebooks (nbgrader/source/NN_name/)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"with --check: seconds per task (default {DEFAULT_TIMEOUT:g})",
    )
    return parser


def _namespace(args, add_arguments, prog: str) -> argparse.Namespace:
    if isinstance(args, argparse.Namespace):
        return args
    return add_arguments(argparse.ArgumentParser(prog=prog)).parse_args(args)


def format_report(results: dict) -> str:
    """Human-readable summary of a results dictionary (what ``tinyodl grade`` prints)."""
    lines = [results["output"], ""]
    for test in results["tests"]:
        mark = "PASS" if test["status"] == "passed" else "FAIL"
        lines.append(f"[{mark}] {test['name']}: {test['score']:g}/{test['max_score']:g}")
        if test["status"] != "passed":
            detail = test["output"].split("\n", 1)[1:] or [""]
            lines.extend("    " + line for line in detail[0].splitlines()[-16:])
    return "\n".join(lines)


def write_results(path: str | Path, results: dict) -> None:
    """Write ``results.json`` atomically (a temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(results, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def grade_main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """``tinyodl grade NOTEBOOK [--json PATH] ...``: always writes results; 0 if graded."""
    args = _namespace(args, add_grade_arguments, "tinyodl grade")
    debug = getattr(args, "debug", False)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tinyodl grade: %(levelname)s: %(message)s"))
    logger = logging.getLogger("tinyodl.grading")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        handler.addFilter(_no_tracebacks)
    try:
        packages = getattr(args, "allow_package", None)
        sandbox = SandboxConfig(
            packages=("numpy", "scipy") if not packages else ("numpy", *packages),
            memory_mb=getattr(args, "memory_mb", SandboxConfig.memory_mb),
            user=getattr(args, "sandbox_user", None),
        )
        results = grade_notebook(
            args.notebook,
            exercise=getattr(args, "exercise", None),
            timeout=getattr(args, "timeout", DEFAULT_TIMEOUT),
            grader=getattr(args, "tests", None),
            tasks=getattr(args, "task", None),
            jobs=getattr(args, "jobs", 1),
            budget=getattr(args, "budget", DEFAULT_BUDGET),
            sandbox=sandbox,
        )
    except Exception as err:  # noqa: BLE001 - results.json is written whatever happens
        logger.error("internal error: %r", err, exc_info=True)
        results = {
            "score": 0.0,
            "output": "Could not grade this notebook: internal error of the grader.",
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": [],
            "extra_data": {"error": f"{type(err).__name__}: {err}"},
        }
    finally:
        logger.removeHandler(handler)
    print(format_report(results))
    json_path = getattr(args, "json_path", None)
    if json_path:
        write_results(json_path, results)
        print(f"\nwrote {json_path}")
    return 0 if results["tests"] else 1


def _no_tracebacks(record: logging.LogRecord) -> bool:
    record.exc_info = None
    record.exc_text = None
    return True


def _selected(sources: list[Path], only: list[str] | None) -> list[Path]:
    """The sources named by ``--only`` ("03", "03_quantization", "00,03"), in number order."""
    if not only:
        return sources
    wanted = [w.strip() for item in only for w in item.split(",") if w.strip()]
    chosen = []
    for want in wanted:
        matches = [p for p in sources if p.stem == want or p.stem[:2] == want.zfill(2)[:2]]
        if not want[:2].isdigit() or not matches:
            names = ", ".join(p.stem for p in sources)
            raise FileNotFoundError(f"--only {want}: no such exercise (have: {names})")
        chosen += [p for p in matches if p not in chosen]
    return sorted(chosen)


def release_main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """``tinyodl exercises release --out DIR [--source PATH] [--only NN] [--check] ...``.

    Writes ``DIR/student/`` (to hand out), and unless ``--no-solutions`` ``DIR/solution/`` and
    ``DIR/nbgrader/source/NN_name/`` (staff only: they hold the solutions). With ``--check``
    the release is staged in a temporary folder, every grader is run on the solution and on
    the student version (:mod:`tinyodl.course.release_check`), and ``DIR`` is written only
    if every exercise passes. Returns 0, or 1 when the check fails.
    """
    import shutil

    args = _namespace(args, add_release_arguments, "tinyodl exercises release")
    source = Path(args.source) if args.source else Path("exercises")
    if not source.exists():
        raise FileNotFoundError(
            f"tinyodl exercises release: {source} does not exist; {SOURCES_MISSING}"
        )
    solutions = not getattr(args, "no_solutions", False)
    if source.is_dir():
        sources = exercise_sources(source)
        if not sources:
            raise FileNotFoundError(
                f"tinyodl exercises release: no NN_*.py sources in {source}; {SOURCES_MISSING}"
            )
    else:
        sources = [source]
    sources = _selected(sources, getattr(args, "only", None))
    check = getattr(args, "check", False)
    nbgrader = solutions and not getattr(args, "no_nbgrader", False)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="tinyodl-release-") as staging:
        target = Path(staging) if check else out
        written = _release(sources, target, solutions or check, nbgrader)
        if check:
            if not _check_release(written, getattr(args, "timeout", DEFAULT_TIMEOUT)):
                print(f"release check failed: nothing written to {out}", file=sys.stderr)
                return 1
            if not solutions:
                shutil.rmtree(target / "solution", ignore_errors=True)
            out.mkdir(parents=True, exist_ok=True)
            shutil.copytree(target, out, dirs_exist_ok=True)
            for paths in written:
                for key in ("student", "solution", "nbgrader"):
                    if paths.get(key) is not None:
                        paths[key] = out / Path(paths[key]).relative_to(target)
    for paths in written:
        for key in ("student", "solution", "nbgrader"):
            if paths.get(key) is not None and (key != "solution" or solutions):
                print(f"wrote {paths[key]}")
    return 0


def _release(sources: list[Path], out: Path, solutions: bool, nbgrader: bool) -> list[dict]:
    written = []
    for path in sources:
        paths = release_exercise(path, out, solutions)
        paths["source"] = path
        paths["nbgrader"] = None
        if nbgrader:
            from tinyodl.course.nbgrader import write_nbgrader_source
            from tinyodl.grading.api import collect_tasks
            from tinyodl.grading.engine import grader_module_name, load_grader

            tasks = collect_tasks(load_grader(grader_module_name(path.stem)))
            paths["nbgrader"] = write_nbgrader_source(path, tasks, out)
        written.append(paths)
    return written


def _check_release(written: list[dict], timeout: float) -> bool:
    from tinyodl.course.release_check import check_exercise

    ok = True
    for paths in written:
        result = check_exercise(
            paths["source"], paths, timeout=timeout, nbgrader_path=paths.get("nbgrader")
        )
        print(result.line())
        for problem in result.problems:
            print(f"    {problem}")
        ok = ok and result.ok
    return ok
