"""What the course is made of, read from a clone: chapters, modules, exercises, results.

Nothing here is written per chapter. A chapter is a file ``chapters/NN_name.py`` (with its
``.ipynb``); everything else about it is discovered:

* its **title** is the first ``#`` heading of the notebook;
* its **modules** are the ``tinyodl.*`` names in its row of the README's chapter table
  ("What is inside") that exist in the package, or, without a row, the chapter modules its
  code imports;
* its **exercise** is ``exercises/NN_*.py`` with the committed student notebook and the tasks
  and points of its grader (``tinyodl/grading/graders/exNN.py``);
* its **results** are the README section headed ``### NN ...`` or ``## Chapter NN ...``
  (:func:`readme_sections`) and every ``benchmarks/results/NAME.json`` that the chapter or
  that section names (by file or by ``tinyodl bench NAME``), with the command recorded in
  the JSON and its plot (``NAME.png``);
* its **commands** are the shell commands quoted in its text (``tinyodl ...``,
  ``python ...``, ``benchmarks/...``, ``scripts/...``);
* its **prerequisites** are the chapters whose modules its code imports, and the earlier
  chapters its text refers to ("chapter 03"), each with the reason;
* its **time** is estimated from its length (:data:`READING_WPM` words and
  :data:`CODE_LINES_PER_MINUTE` lines of code a minute) plus :data:`MINUTES_PER_TASK` per graded
  task of its exercise; the site adds the measured time to execute it.

:func:`discover` returns a :class:`Course`; the site (:mod:`tinyodl.course.site`), the
README's learning path and ``tinyodl exercises release`` read it.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from tinyodl.grading.notebook import read_notebook

#: Reading speed for the prose of a chapter (words per minute).
READING_WPM = 180
#: Reading speed for its code (lines a minute, read alongside the text).
CODE_LINES_PER_MINUTE = 15
#: Estimated time per graded task of an exercise (minutes).
MINUTES_PER_TASK = 20

_CHAPTER_FILE = "[0-9][0-9]_*.py"
_COMMAND = re.compile(
    r"`((?:(?:[A-Z_]+=\S*\s+)*)(?:tinyodl\s|python3?\s|benchmarks/\S+\.sh|scripts/\S+\.(?:py|sh))"
    r"[^`\n]*)`"
)
_CHAPTER_REF = re.compile(r"\b[Cc]hapters?\s+((?:\d{1,2})(?:\s*(?:,|and|-|–|or)\s*\d{1,2})*)")
_MODULE = re.compile(r"`(tinyodl(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")
_BENCH_JSON = re.compile(r"benchmarks/results/([A-Za-z0-9_\-]+)\.json")
_BENCH_CMD = re.compile(r"tinyodl bench ([A-Za-z0-9_]+)")


class CourseError(ValueError):
    """A clone that does not look like tinyodl's (the message says what is missing)."""


@dataclass(frozen=True)
class Task:
    """One graded task of an exercise, as its grader declares it."""

    id: str
    name: str
    points: float
    hidden: bool


@dataclass(frozen=True)
class Exercise:
    """``exercises/NN_name.py``, its student notebook and its grader's tasks."""

    name: str
    source: Path
    student: Path | None
    tasks: tuple[Task, ...]

    @property
    def number(self) -> str:
        return self.name[:2]

    @property
    def points(self) -> float:
        return sum(t.points for t in self.tasks)


@dataclass(frozen=True)
class Benchmark:
    """A committed result ``benchmarks/results/NAME.json`` (and its plot, when there is one)."""

    name: str
    path: Path
    command: str | None
    plot: Path | None
    machine: str | None


@dataclass(frozen=True)
class Prerequisite:
    """Chapter ``number`` is needed, and why ("imports tinyodl.quant", "refers to chapter 03")."""

    number: str
    reasons: tuple[str, ...]


@dataclass
class Chapter:
    """One chapter of the course and everything the repository says about it."""

    number: str
    name: str
    title: str
    source: Path
    notebook: Path
    summary: str = ""
    modules: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    exercise: Exercise | None = None
    results: str = ""
    benchmarks: tuple[Benchmark, ...] = ()
    commands: tuple[str, ...] = ()
    prerequisites: tuple[Prerequisite, ...] = ()
    words: int = 0
    code_lines: int = 0
    text: str = field(default="", repr=False)

    @property
    def reading_minutes(self) -> int:
        """Estimated minutes to read the chapter, code included."""
        return max(1, math.ceil(self.words / READING_WPM + self.code_lines / CODE_LINES_PER_MINUTE))

    @property
    def exercise_minutes(self) -> int:
        """Estimated minutes for the exercise (0 without one)."""
        return MINUTES_PER_TASK * len(self.exercise.tasks) if self.exercise else 0


@dataclass
class Course:
    """The chapters of a clone, in order, with the README they came from."""

    root: Path
    chapters: list[Chapter]
    readme: str
    module_owner: dict[str, str]

    def chapter(self, number: str) -> Chapter:
        for chapter in self.chapters:
            if chapter.number == number:
                return chapter
        raise KeyError(f"no chapter {number!r}; chapters: {[c.number for c in self.chapters]}")

    def order(self) -> list[Chapter]:
        """The chapters in an order that respects every prerequisite (number order otherwise)."""
        done: set[str] = set()
        ordered: list[Chapter] = []
        pending = list(self.chapters)
        while pending:
            ready = [c for c in pending if {p.number for p in c.prerequisites} <= done]
            chapter = ready[0] if ready else pending[0]  # a cycle: number order for the rest
            pending.remove(chapter)
            done.add(chapter.number)
            ordered.append(chapter)
        return ordered


# --------------------------------------------------------------------------- discovery


def find_root(start: str | Path = ".") -> Path:
    """The clone's root: ``start`` or the closest parent holding ``chapters/`` and ``tinyodl/``."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "chapters").is_dir() and (folder / "tinyodl").is_dir():
            return folder
    raise CourseError(
        f"{start} is not inside a clone of tinyodl (no chapters/ and tinyodl/ folders); "
        "the course's sources are in the repository, not the installed package: clone it and "
        "run the command from its root, or pass --root PATH"
    )


def discover(root: str | Path = ".") -> Course:
    """Read the course from the clone at ``root`` (see the module docstring for the rules)."""
    root = find_root(root)
    sources = sorted(p for p in (root / "chapters").glob(_CHAPTER_FILE) if p.is_file())
    if not sources:
        raise CourseError(f"no chapter sources chapters/NN_name.py in {root}")
    readme_path = root / "README.md"
    readme = readme_path.read_text(encoding="utf-8") if readme_path.exists() else ""
    table = readme_chapter_table(readme)
    sections = readme_sections(readme)
    chapters = [_chapter(root, path, table.get(path.name[:2], {})) for path in sources]
    owner = {}
    for chapter in chapters:
        for module in chapter.modules:
            owner.setdefault(module, chapter.number)
    for chapter in chapters:  # chapters without a README row: the chapter modules they import
        if not chapter.modules:
            mine = [m for m in chapter.imports if m not in owner and _is_chapter_module(root, m)]
            chapter.modules = tuple(mine)
            for module in mine:
                owner[module] = chapter.number
    results = _benchmarks(root)
    for chapter in chapters:
        chapter.results = sections.get(chapter.number, "")
        chapter.benchmarks = _benchmarks_of(chapter, results)
        commands = _COMMAND.findall(chapter.text + "\n" + chapter.results)
        commands += [b.command for b in chapter.benchmarks if b.command]
        # a command quoted across a line break of the text is one line
        chapter.commands = tuple(dict.fromkeys(re.sub(r"\s+", " ", c).strip() for c in commands))
        chapter.prerequisites = _prerequisites(chapter, owner, {c.number for c in chapters})
    return Course(root, chapters, readme, owner)


def _chapter(root: Path, source: Path, row: dict) -> Chapter:
    notebook = read_notebook(source)
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    title = source.stem
    for text in markdown:
        heading = re.search(r"^#\s+(.+)$", text, re.M)
        if heading:
            title = heading.group(1).strip()
            break
    modules = tuple(m for m in row.get("modules", ()) if _module_exists(root, m))
    text = "\n\n".join(markdown)
    return Chapter(
        number=source.name[:2],
        name=source.stem,
        title=title,
        source=source,
        notebook=source.with_suffix(".ipynb"),
        summary=row.get("summary", ""),
        modules=modules,
        imports=tuple(_imports("\n\n".join(code), root)),
        exercise=_exercise(root, source.name[:2]),
        words=len(re.findall(r"\w+", text)),
        code_lines=sum(1 for c in code for line in c.splitlines() if line.strip()),
        text=text,
    )


def _module_path(root: Path, module: str) -> Path | None:
    parts = module.split(".")
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_exists(root: Path, module: str) -> bool:
    return _module_path(root, module) is not None


def _is_chapter_module(root: Path, module: str) -> bool:
    """A public top-level module of tinyodl that is not infrastructure (GUIDE section 2)."""
    name = module.split(".")[1] if module.count(".") else ""
    return bool(name) and not name.startswith("_") and _module_exists(root, module)


def _imports(code: str, root: Path) -> list[str]:
    """The top-level ``tinyodl.X`` modules that ``code`` imports (in order, once each)."""
    found: list[str] = []
    try:
        tree = ast.parse(code)
    except SyntaxError:  # IPython magics; fall back to the lines that parse
        lines = [x for x in code.splitlines() if re.match(r"\s*(from|import)\s+tinyodl", x)]
        tree = ast.parse("\n".join(line.strip() for line in lines))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tinyodl":
                names = [f"tinyodl.{a.name}" for a in node.names]
            else:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tinyodl" and len(parts) > 1:
                top = "tinyodl." + parts[1]
                if _module_exists(root, top) and top not in found:
                    found.append(top)
    return found


def _exercise(root: Path, number: str) -> Exercise | None:
    sources = sorted((root / "exercises").glob(f"{number}_*.py"))
    if not sources:
        return None
    source = sources[0]
    student = root / "exercises" / "student" / f"{source.stem}.ipynb"
    return Exercise(source.stem, source, student if student.exists() else None, _tasks(number))


def _tasks(number: str) -> tuple[Task, ...]:
    """The tasks of ``tinyodl.grading.graders.exNN`` (none when there is no grader)."""
    import importlib.util

    from tinyodl.grading.api import collect_tasks

    name = f"tinyodl.grading.graders.ex{number}"
    if importlib.util.find_spec(name) is None:
        return ()
    module = importlib.import_module(name)
    return tuple(Task(t.id, t.name, float(t.points), bool(t.hidden)) for t in collect_tasks(module))


def readme_chapter_table(readme: str) -> dict[str, dict]:
    """Rows of the README's chapter table: ``{"03": {"summary", "modules"}}``.

    The table is the first markdown table whose header has a ``#`` column, a ``chapter``
    column and a ``module`` column.
    """
    rows: dict[str, dict] = {}
    header: list[str] | None = None
    for line in readme.splitlines():
        if not line.startswith("|"):
            if header is not None and rows:
                break
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            lowered = [c.lower() for c in cells]
            if "#" in lowered and any("chapter" in c for c in lowered):
                if any("module" in c for c in lowered):
                    header = lowered
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        row = dict(zip(header, cells, strict=False))
        number = row.get("#", "")
        if re.fullmatch(r"\d\d", number):
            module_col = next((v for k, v in row.items() if "module" in k), "")
            chapter_col = next((v for k, v in row.items() if "chapter" in k), "")
            rows[number] = {"summary": chapter_col, "modules": tuple(_MODULE.findall(module_col))}
    return rows


def readme_sections(readme: str) -> dict[str, str]:
    """README sections of chapter results, body without the heading: ``{"01": "..."}``.

    A ``###`` heading that starts with the chapter's number (``### 01 ...``, ``### Chapter 01
    ...``) opens one until the next heading; a ``##`` heading that starts with ``Chapter NN``
    opens one until the next ``##`` (its ``###`` subsections included).
    """
    sections: dict[str, str] = {}
    current: str | None = None
    level = 0
    lines: list[str] = []
    in_code = False
    for line in readme.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = None if in_code else re.match(r"^(#{1,3})\s+(.*)$", line)
        if heading and (current is None or len(heading.group(1)) <= level):
            if current is not None:
                sections[current] = "\n".join(lines).strip()
            level = len(heading.group(1))
            pattern = r"chapter\s+(\d\d)\b" if level == 2 else r"(?:chapter\s+)?(\d\d)\b"
            match = re.match(pattern, heading.group(2), re.I) if level >= 2 else None
            current = match.group(1) if match else None
            lines = []
        elif current is not None:
            lines.append(line)
    if current is not None:
        sections[current] = "\n".join(lines).strip()
    return sections


def _benchmarks(root: Path) -> dict[str, Benchmark]:
    found = {}
    for path in sorted((root / "benchmarks" / "results").glob("*.json")):
        command = machine = None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            command = data.get("command") if isinstance(data.get("command"), str) else None
            info = data.get("machine")
            if isinstance(info, dict) and info.get("cpu"):
                machine = f"{info['cpu']}, {info.get('cores', '?')} cores"
        plot = path.with_suffix(".png")
        found[path.stem] = Benchmark(
            path.stem, path, command, plot if plot.exists() else None, machine
        )
    return found


def _benchmarks_of(chapter: Chapter, results: dict[str, Benchmark]) -> tuple[Benchmark, ...]:
    text = chapter.text + "\n" + chapter.results
    names = _BENCH_JSON.findall(text) + _BENCH_CMD.findall(text)
    return tuple(results[n] for n in dict.fromkeys(names) if n in results)


def _referenced_chapters(text: str) -> list[str]:
    numbers: list[str] = []
    for match in _CHAPTER_REF.finditer(text):
        for number in re.findall(r"\d{1,2}", match.group(1)):
            numbers.append(f"{int(number):02d}")
    return numbers


def _prerequisites(chapter: Chapter, owner: dict[str, str], numbers: set[str]) -> tuple:
    reasons: dict[str, list[str]] = {}
    for module in chapter.imports:
        other = owner.get(module)
        if other is not None and other != chapter.number:
            reasons.setdefault(other, []).append(f"uses `{module}`")
    for number in _referenced_chapters(chapter.text):
        if number < chapter.number and number in numbers:
            why = f"refers to chapter {number}"
            if why not in reasons.setdefault(number, []):
                reasons[number].append(why)
    return tuple(Prerequisite(n, tuple(r)) for n, r in sorted(reasons.items()))
