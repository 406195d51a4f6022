"""Command-line front ends: ``tinyodl grade`` and ``tinyodl exercises release``.

``tinyodl.cli`` adds the sub-commands (:func:`add_grade_arguments`, :func:`add_release_arguments`
describe the full set of options) and calls :func:`grade_main` / :func:`release_main` with the
parsed namespace; options missing from the namespace take their defaults. Both also accept a
list of strings, ``grade_main(["nb.ipynb", "--json", "r.json"])``, and return an exit code.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from tinyodl.grading.grader import DEFAULT_TIMEOUT, grade_notebook
from tinyodl.grading.release import release_all, release_exercise


def add_grade_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``tinyodl grade`` to ``parser``."""
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
    parser.add_argument("--exercise", help="exercise id, e.g. 00_foundations (default: detect)")
    parser.add_argument(
        "--tests", metavar="MODULE_OR_PY", help="grader module or .py file (default: built in)"
    )
    parser.add_argument("--task", action="append", help="grade only this task (repeatable)")
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="tasks graded in parallel (default 1)"
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
            lines.extend("    " + line for line in detail[0].splitlines()[-12:])
    return "\n".join(lines)


def grade_main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """``tinyodl grade NOTEBOOK [--json PATH] [--timeout S] [--exercise ID]``; returns 0."""
    args = _namespace(args, add_grade_arguments, "tinyodl grade")
    results = grade_notebook(
        args.notebook,
        exercise=getattr(args, "exercise", None),
        timeout=getattr(args, "timeout", DEFAULT_TIMEOUT),
        grader=getattr(args, "tests", None),
        tasks=getattr(args, "task", None),
        jobs=getattr(args, "jobs", 1),
    )
    print(format_report(results))
    json_path = getattr(args, "json_path", None)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {json_path}")
    return 0


def release_main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """``tinyodl exercises release --out DIR [--source PATH] [--no-solutions]``; returns 0."""
    args = _namespace(args, add_release_arguments, "tinyodl exercises release")
    source = Path(args.source) if args.source else Path("exercises")
    if not source.exists():
        raise FileNotFoundError(
            f"tinyodl exercises release: {source} does not exist; run it from a tinyodl "
            "checkout or pass --source exercises/"
        )
    solutions = not getattr(args, "no_solutions", False)
    if source.is_dir():
        written = release_all(source, args.out, solutions)
    else:
        written = [release_exercise(source, args.out, solutions)]
    for paths in written:
        for path in paths.values():
            if path is not None:
                print(f"wrote {path}")
    return 0
