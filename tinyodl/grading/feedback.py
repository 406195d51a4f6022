"""Feedback text: the student's own lines, never the grader's files or absolute paths.

Errors and stack dumps arrive from the student's process as frames ``(file, line, name)``.
Only frames of the notebook's cells (``<cell 7>``) are shown, as ``cell 7, line 3, in f:``
followed by that line of the student's cell; frames of a function the grader passed (``Fn``)
are named as such; numpy's, the runner's and the standard library's are dropped.
"""

from __future__ import annotations

import re

_CELL = re.compile(r"<cell (\d+)>")
_PATH = re.compile(r"(?<![\w<])/(?:[\w.+-]+/)+[\w.+-]*")
MAX_MESSAGE = 1500


def scrub(text: str) -> str:
    """Replace absolute paths in a message by ``...`` (student-facing text only)."""
    return _PATH.sub(lambda m: "..." + m.group(0)[m.group(0).rfind("/") :], text)


def _cell_line(cells: dict[int, str], number: int, line: int) -> str:
    lines = cells.get(number, "").splitlines()
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def student_frames(frames, cells: dict[int, str]) -> list[str]:
    """Human-readable frames of the student's cells (and grader functions), in the order
    given."""
    shown = []
    for frame in frames:
        if not isinstance(frame, list | tuple) or len(frame) != 3:
            continue
        file, line, name = frame
        if not isinstance(file, str) or not isinstance(line, int):
            continue
        match = _CELL.fullmatch(file)
        if match:
            number = int(match.group(1))
            where = f"cell {number}, line {line}"
            if isinstance(name, str) and name != "<module>":
                where += f", in {name}"
            text = _cell_line(cells, number, line)
            shown.append(f"{where}: {text}" if text else where)
        elif file == "<grader function>":
            shown.append("in the function the grader passed to your code")
    return shown


def format_error(header: dict, cells: dict[int, str], packages: list[str] | None = None) -> str:
    """``Type: message`` plus the student's frames (most recent call last); a missing module
    gets a hint naming what can be imported while grading (``packages``)."""
    kind = str(header.get("type", "Error"))[:100]
    message = scrub(str(header.get("message", "")))[:MAX_MESSAGE]
    if kind == "ModuleNotFoundError" and message.startswith("No module named") and packages:
        message += (
            f" (while grading, your code can import the standard library and "
            f"{', '.join(packages)} only; start cells that need other packages, such as "
            "plots, with the line '### grader: skip')"
        )
    text = f"{kind}: {message}" if message else kind
    if header.get("kind") in ("missing", "not_plain"):
        return message
    frames = student_frames(header.get("frames") or [], cells)
    if frames:
        text += "\n" + "\n".join("  " + f for f in frames[-8:])
    return text


def where_stuck(frames, cells: dict[int, str]) -> str:
    """``cell 7, line 3, in im2col: <line>`` (called from ...) from an innermost-first dump."""
    shown = student_frames(frames, cells)
    if not shown:
        return ""
    text = f"it was at {shown[0]}"
    if len(shown) > 1:
        text += "\n  called from " + "\n  called from ".join(shown[1:4])
    return text


def signal_name(status: int | None) -> str:
    """``exit code 3`` or ``killed by SIGSEGV`` for a process exit status."""
    if status is None:
        return "unknown exit status"
    if status < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit code {status}"
