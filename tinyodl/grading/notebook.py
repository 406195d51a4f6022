"""Read and write notebooks: jupytext percent ``.py`` files and Jupyter ``.ipynb`` files.

Exercise sources are percent-format scripts (``# %%`` starts a code cell, ``# %% [markdown]``
a markdown cell whose lines are ``#``-commented). Students hand in either format. This module
turns both into a list of :class:`Cell`, and writes ``.ipynb`` files deterministically (same
input, same bytes) so generated student notebooks can be committed and checked for drift.

Only the small subset of jupytext's format that the exercises use is parsed here, so grading
needs neither jupytext nor nbformat at run time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

#: ``tinyodl-exercise: 00_foundations`` anywhere in a cell names the exercise.
EXERCISE_TAG = re.compile(r"tinyodl-exercise:\s*([A-Za-z0-9_\-]+)")
_CELL_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
_KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


@dataclass
class Cell:
    """One notebook cell.

    Attributes
    ----------
    cell_type : str
        ``"code"``, ``"markdown"`` or ``"raw"``.
    source : str
        Cell text without trailing newline.
    line : int
        1-based line of the cell's first source line in a percent file (0 for ``.ipynb``).
    """

    cell_type: str
    source: str
    line: int = 0
    metadata: dict = field(default_factory=dict)


@dataclass
class Notebook:
    """Cells plus notebook-level metadata (``metadata["tinyodl"]["exercise"]`` names it)."""

    cells: list[Cell]
    metadata: dict = field(default_factory=dict)


def split_percent_header(lines: list[str]) -> tuple[list[str], int]:
    """Return (header lines, index of the first body line) of a percent file.

    The header is jupytext's YAML block between two ``# ---`` lines at the top of the file.
    """
    if not lines or lines[0].rstrip() != "# ---":
        return [], 0
    for i in range(1, len(lines)):
        if lines[i].rstrip() == "# ---":
            return lines[: i + 1], i + 1
    raise ValueError("percent notebook: the '# ---' header block is never closed")


def _uncomment_markdown(line: str) -> str:
    if line.startswith("# "):
        return line[2:]
    return line[1:] if line.startswith("#") else line


def _strip_blank_edges(lines: list[str]) -> tuple[list[str], int]:
    """Drop leading and trailing blank lines; also return how many leading lines went."""
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    end = len(lines)
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end], start


def parse_percent(text: str) -> Notebook:
    """Parse jupytext percent-format text into a :class:`Notebook`.

    Parameters
    ----------
    text : str
        Contents of a ``.py`` file whose cells start with ``# %%`` lines.
    """
    lines = text.splitlines()
    header, body_start = split_percent_header(lines)
    chunks: list[tuple[str, int, list[str]]] = []  # (marker rest, first line index, lines)
    current: tuple[str, int, list[str]] | None = ("", body_start, [])
    for i in range(body_start, len(lines)):
        match = _CELL_MARKER.match(lines[i])
        if match:
            chunks.append(current)
            current = (match.group("rest"), i + 1, [])
        else:
            current[2].append(lines[i])
    chunks.append(current)

    cells = []
    for k, (rest, first, chunk) in enumerate(chunks):
        kept, skipped = _strip_blank_edges(chunk)
        if k == 0 and not kept:
            continue  # nothing between the header and the first marker
        rest = rest.strip()
        if rest.startswith("[markdown]") or rest.startswith("[md]"):
            source = "\n".join(_uncomment_markdown(x) for x in kept)
            cells.append(Cell("markdown", source, first + skipped + 1))
        elif rest.startswith("[raw]"):
            cells.append(Cell("raw", "\n".join(_uncomment_markdown(x) for x in kept), first + 1))
        else:
            cells.append(Cell("code", "\n".join(kept), first + skipped + 1))
    metadata = {}
    exercise = EXERCISE_TAG.search("\n".join(header))
    if exercise:
        metadata["tinyodl"] = {"exercise": exercise.group(1)}
    return Notebook(cells, metadata)


class NotebookError(ValueError):
    """A file that is not a notebook tinyodl can read; the message says why, in one line."""


MAX_NOTEBOOK_BYTES = 100 * 2**20


def parse_ipynb(text: str) -> Notebook:
    """Parse the JSON of a Jupyter notebook (nbformat 4) into a :class:`Notebook`.

    Raises
    ------
    NotebookError
        Not JSON, not a notebook (no ``cells`` list), another nbformat, malformed cells.
    """
    try:
        data = json.loads(text)
    except ValueError as err:
        raise NotebookError(f"the notebook is not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotebookError("not a Jupyter notebook: no 'cells' list in the JSON")
    version = data.get("nbformat", 4)
    if version != 4:
        raise NotebookError(
            f"notebook format {version!r} is not supported (expected 4); open and save it "
            "with a current Jupyter"
        )
    cells = []
    for number, raw in enumerate(data["cells"], start=1):
        if not isinstance(raw, dict):
            raise NotebookError(f"cell {number} is not a JSON object")
        source = raw.get("source", "")
        if isinstance(source, list) and all(isinstance(x, str) for x in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise NotebookError(f"cell {number}: its 'source' is not text")
        kind = raw.get("cell_type", "code")
        metadata = raw.get("metadata", {})
        cells.append(
            Cell(
                kind if isinstance(kind, str) else "code",
                source,
                0,
                metadata if isinstance(metadata, dict) else {},
            )
        )
    metadata = data.get("metadata", {})
    return Notebook(cells, metadata if isinstance(metadata, dict) else {})


def read_notebook(path: str | Path) -> Notebook:
    """Read a ``.ipynb`` or percent-format ``.py`` notebook (:class:`NotebookError` if bad)."""
    path = Path(path)
    if path.suffix not in (".ipynb", ".py"):
        raise NotebookError(f"expected a .ipynb or .py file, got {path.name!r}")
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise NotebookError(f"the notebook is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise NotebookError(f"the notebook is not UTF-8 text ({err.reason})") from None
    if path.suffix == ".ipynb":
        return parse_ipynb(text)
    return parse_percent(text)


def _source_lines(source: str) -> list[str]:
    lines = source.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]] if source else []


def to_ipynb(notebook: Notebook) -> str:
    """Serialise a notebook as nbformat 4.5 JSON, without outputs, with stable cell ids."""
    cells = []
    for i, cell in enumerate(notebook.cells):
        raw = {
            "cell_type": cell.cell_type,
            "id": f"cell-{i:03d}",
            "metadata": dict(cell.metadata),
            "source": _source_lines(cell.source),
        }
        if cell.cell_type == "code":
            raw["execution_count"] = None
            raw["outputs"] = []
        cells.append(raw)
    metadata = {
        "kernelspec": dict(_KERNELSPEC),
        "language_info": {"name": "python"},
        **notebook.metadata,
    }
    data = {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def exercise_id(notebook: Notebook, path: str | Path | None = None) -> str | None:
    """Name of the exercise a notebook belongs to, or None when it cannot be told.

    Looked up in order: notebook metadata ``tinyodl.exercise``, a ``tinyodl-exercise: ID``
    tag in any cell, and finally the file name when it starts with the exercise number ``NN_``.
    """
    tagged = notebook.metadata.get("tinyodl", {})
    if isinstance(tagged, dict) and tagged.get("exercise"):
        return str(tagged["exercise"])
    for cell in notebook.cells:
        match = EXERCISE_TAG.search(cell.source)
        if match:
            return match.group(1)
    if path is not None:
        stem = Path(path).stem
        if re.match(r"\d\d(_|$)", stem):
            return stem
    return None


SKIP_MARK = re.compile(r"\A\s*### grader: skip[ \t]*$", re.MULTILINE)
_KEEP_CELL_MAGICS = {"time", "timeit", "capture", "prun"}


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
