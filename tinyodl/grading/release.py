"""Generate student notebooks from exercise sources (nbgrader's markers, GUIDE section 6).

An exercise source ``exercises/NN_name.py`` (jupytext percent format) holds the solution::

    def relu(x):
        ### BEGIN SOLUTION
        return np.maximum(x, 0)
        ### END SOLUTION

The student version replaces each solution block by a stub at the same indentation::

    def relu(x):
        # YOUR CODE HERE
        raise NotImplementedError("relu: replace this line with your code")

and deletes ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` blocks entirely.
Everything else is copied byte for byte, so a diff of two releases shows only real changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tinyodl.grading.notebook import Notebook, parse_percent, split_percent_header, to_ipynb

_MARKER = re.compile(
    r"^(?P<indent>[ \t]*)### (?P<kind>BEGIN|END) (?P<what>SOLUTION|HIDDEN TESTS)\s*$"
)
_DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async\s+)?def\s+(?P<name>\w+)\s*\(")
_CELL_START = re.compile(r"^# %%")


class MarkerError(ValueError):
    """Unbalanced or misplaced ``### BEGIN/END`` markers; the message names file and line."""


@dataclass(frozen=True)
class Block:
    """One marked region: ``kind`` is ``"SOLUTION"`` or ``"HIDDEN TESTS"``; lines are 1-based."""

    kind: str
    begin: int
    end: int
    indent: str


def find_blocks(text: str, filename: str = "<source>") -> list[Block]:
    """Locate the marked blocks of an exercise source and check they are well formed.

    Raises
    ------
    MarkerError
        For a nested BEGIN, an END without BEGIN or of the other kind, a block left open at
        the end of the file, or a block that spans a ``# %%`` cell boundary.
    """
    blocks = []
    open_kind, open_line, open_indent = None, 0, ""
    for number, line in enumerate(text.splitlines(), start=1):
        if open_kind is not None and _CELL_START.match(line):
            raise MarkerError(
                f"{filename}:{number}: new cell starts inside the '### BEGIN {open_kind}' "
                f"block opened on line {open_line}; close it with '### END {open_kind}' first"
            )
        match = _MARKER.match(line)
        if match is None:
            if "### BEGIN" in line or "### END" in line:
                raise MarkerError(
                    f"{filename}:{number}: malformed marker {line.strip()!r}; expected a line "
                    "holding only '### BEGIN SOLUTION', '### END SOLUTION', "
                    "'### BEGIN HIDDEN TESTS' or '### END HIDDEN TESTS'"
                )
            continue
        kind, what = match.group("kind"), match.group("what")
        if kind == "BEGIN":
            if open_kind is not None:
                raise MarkerError(
                    f"{filename}:{number}: '### BEGIN {what}' inside the '### BEGIN {open_kind}' "
                    f"block opened on line {open_line}; blocks cannot nest"
                )
            open_kind, open_line, open_indent = what, number, match.group("indent")
        else:
            if open_kind is None:
                raise MarkerError(f"{filename}:{number}: '### END {what}' without a matching BEGIN")
            if what != open_kind:
                raise MarkerError(
                    f"{filename}:{number}: '### END {what}' closes the '### BEGIN {open_kind}' "
                    f"block opened on line {open_line}; expected '### END {open_kind}'"
                )
            blocks.append(Block(what, open_line, number, open_indent))
            open_kind = None
    if open_kind is not None:
        raise MarkerError(
            f"{filename}:{open_line}: '### BEGIN {open_kind}' is never closed "
            f"(expected '### END {open_kind}' before the end of the file)"
        )
    return blocks


def _enclosing_function(lines: list[str], begin: int, indent: str) -> str | None:
    """Name of the innermost ``def`` above line ``begin`` (1-based) that contains it."""
    for i in range(begin - 2, -1, -1):
        match = _DEF.match(lines[i])
        if match and len(match.group("indent")) < len(indent):
            return match.group("name")
    return None


def student_source(text: str, filename: str = "<source>") -> str:
    """Return the student version of an exercise source (solutions stubbed, hidden tests cut)."""
    lines = text.splitlines()
    blocks = find_blocks(text, filename)
    out: list[str] = []
    position = 0  # 0-based index of the next line to copy
    for block in blocks:
        out.extend(lines[position : block.begin - 1])
        if block.kind == "SOLUTION":
            name = _enclosing_function(lines, block.begin, block.indent)
            where = f"{name}: " if name else ""
            out.append(f"{block.indent}# YOUR CODE HERE")
            message = f"{where}replace this line with your code"
            out.append(f'{block.indent}raise NotImplementedError("{message}")')
        position = block.end
    out.extend(lines[position:])
    return _join(out, text.endswith("\n"))


def solution_source(text: str, filename: str = "<source>") -> str:
    """Return the instructor version: markers removed, solutions and hidden tests kept."""
    find_blocks(text, filename)  # validate
    return _join([x for x in text.splitlines() if not _MARKER.match(x)], text.endswith("\n"))


def _join(lines: list[str], trailing_newline: bool) -> str:
    if trailing_newline:
        return "".join(line + "\n" for line in lines)
    return "\n".join(lines)


def _notebook(text: str, exercise: str) -> Notebook:
    notebook = parse_percent(text)
    notebook.metadata["tinyodl"] = {"exercise": exercise}
    return notebook


def exercise_sources(directory: str | Path) -> list[Path]:
    """The exercise sources ``NN_*.py`` of a directory, sorted by number."""
    return sorted(Path(directory).glob("[0-9][0-9]_*.py"))


def release_exercise(source: str | Path, out_dir: str | Path, solutions: bool = True) -> dict:
    """Write the student (and instructor) notebooks of one exercise.

    Parameters
    ----------
    source : path
        Percent-format exercise source, e.g. ``exercises/00_foundations.py``.
    out_dir : path
        Gets ``student/<name>.ipynb`` and, with ``solutions``, ``solution/<name>.ipynb``.

    Returns
    -------
    dict
        ``{"student": path, "solution": path or None}``.
    """
    source = Path(source)
    text = source.read_text(encoding="utf-8")
    header, _ = split_percent_header(text.splitlines())
    if any("formats:" in line for line in header):
        raise MarkerError(
            f"{source}:1: the jupytext header pairs this source with other formats; remove the "
            "'formats:' line so Jupyter never writes the solutions into a paired .ipynb"
        )
    exercise = source.stem
    out_dir = Path(out_dir)
    paths = {"student": out_dir / "student" / f"{exercise}.ipynb", "solution": None}
    paths["student"].parent.mkdir(parents=True, exist_ok=True)
    student = _notebook(student_source(text, str(source)), exercise)
    paths["student"].write_text(to_ipynb(student), encoding="utf-8")
    if solutions:
        paths["solution"] = out_dir / "solution" / f"{exercise}.ipynb"
        paths["solution"].parent.mkdir(parents=True, exist_ok=True)
        solution = _notebook(solution_source(text, str(source)), exercise)
        paths["solution"].write_text(to_ipynb(solution), encoding="utf-8")
    return paths


def release_all(source_dir: str | Path, out_dir: str | Path, solutions: bool = True) -> list[dict]:
    """Release every ``NN_*.py`` exercise of ``source_dir`` into ``out_dir``."""
    sources = exercise_sources(source_dir)
    if not sources:
        raise FileNotFoundError(f"release_all: no NN_*.py exercise sources in {source_dir}")
    return [release_exercise(path, out_dir, solutions) for path in sources]
