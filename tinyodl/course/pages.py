"""The site's generated pages, as MyST markdown: landing page, chapter and exercise preludes,
API pages. Everything comes from a :class:`~tinyodl.course.catalog.Course`; nothing here is
written per chapter.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterable

from tinyodl.course.catalog import (
    CODE_LINES_PER_MINUTE,
    MINUTES_PER_TASK,
    READING_WPM,
    Chapter,
    Course,
    Exercise,
)
from tinyodl.course.execute import describe

#: Top-level modules that are not documented as API (the command line, data files, graders).
API_SKIP = ("tinyodl.cli", "tinyodl.__main__", "tinyodl.datasets", "tinyodl.grading.graders")


def chapter_doc(chapter: Chapter) -> str:
    return f"/chapters/{chapter.name}"


def exercise_doc(exercise: Exercise) -> str:
    return f"/exercises/{exercise.name}"


def api_doc(module: str) -> str:
    """The API page of ``module`` (the page of its top-level module: ``tinyodl.nn``)."""
    return "/api/" + ".".join(module.split(".")[:2])


def _doc(target: str, text: str) -> str:
    return f"{{doc}}`{_escape_role(text)} <{target}>`"


def _escape_role(text: str) -> str:
    return text.replace("<", "\\<").replace("`", "")


def minutes(total: float) -> str:
    """``95`` -> ``"1 h 35 min"``."""
    total = int(round(total))
    if total < 60:
        return f"{total} min"
    hours, rest = divmod(total, 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def short_title(chapter: Chapter) -> str:
    """ "Chapter 02 — Pruning: fewer weights" -> "Pruning: fewer weights"."""
    title = chapter.title
    for sep in (" — ", " - ", ": "):
        head, _, tail = title.partition(sep)
        if tail and head.lower().startswith("chapter"):
            return tail
    return title


def _self_check(exercise: Exercise) -> str:
    return f"tinyodl grade {exercise.name}.ipynb"


# --------------------------------------------------------------------------- landing page


def landing_page(course: Course, infos: dict[str, dict], intro: str) -> str:
    """The site's index: what tinyodl is, the learning path, how to check an exercise."""
    lines = [
        "# tinyodl: learn on-device learning by building it",
        "",
        intro.strip(),
        "",
        "## The learning path",
        "",
        "Start with chapter 00: every other chapter builds on its training core. After it, "
        "follow the chapters in any order that respects the **needs** column, which is read "
        "from the code (a chapter that imports another chapter's module needs it) and from the "
        "text (a chapter that refers to an earlier one). The order below respects it.",
        "",
        "| chapter | needs | reading | exercise | runs in |",
        "|---|---|---|---|---|",
    ]
    total_read = total_ex = 0
    for chapter in course.order():
        needs = ", ".join(
            _doc(chapter_doc(course.chapter(p.number)), p.number) for p in chapter.prerequisites
        )
        exercise = "-"
        if chapter.exercise and chapter.exercise.tasks:
            ex = chapter.exercise
            exercise = (
                f"{_doc(exercise_doc(ex), f'{len(ex.tasks)} tasks, {ex.points:g} points')}"
                f", ~{minutes(chapter.exercise_minutes)}"
            )
        info = infos.get(chapter.name, {})
        run = f"{seconds(info['seconds'])} ({info['configuration']})" if info else "-"
        lines.append(
            f"| {_doc(chapter_doc(chapter), chapter.number + ' ' + short_title(chapter))} "
            f"| {needs or '-'} | ~{minutes(chapter.reading_minutes)} | {exercise} | {run} |"
        )
        total_read += chapter.reading_minutes
        total_ex += chapter.exercise_minutes
    lines += [
        "",
        f"In all: about {minutes(total_read)} of reading and {minutes(total_ex)} of exercises. "
        f"Times are estimates from each chapter's length ({READING_WPM} words and "
        f"{CODE_LINES_PER_MINUTE} lines of code a minute) and {MINUTES_PER_TASK} minutes per "
        "graded task; *runs in* is the measured time this build took to execute the chapter "
        "(full configuration: the numbers the text discusses; quick: the smaller runs of the "
        "test suite, `TINYODL_QUICK=1`).",
        "",
        "## Studying on your own",
        "",
        "1. Install tinyodl in a virtual environment (Python 3.10 or newer, a C compiler):",
        "",
        "   ```bash",
        "   python3 -m venv .venv && . .venv/bin/activate",
        '   python3 -m pip install -e ".[notebooks]"   # from a clone of the repository',
        "   ```",
        "",
        "2. Read a chapter here, or run it yourself: `jupyter lab chapters/00_foundations.ipynb`.",
        "3. Download the chapter's exercise (the student notebook on its exercise page), fill "
        "in every `raise NotImplementedError(...)`, then check your work locally:",
        "",
        "   ```bash",
        "   tinyodl grade 00_foundations.ipynb",
        "   ```",
        "",
        "   This runs the **public tests** (the grader that ships with tinyodl) on your saved "
        "notebook: each task's checks, with partial credit and a message saying what is wrong. "
        "Your code runs in a separate sandboxed process; it may use numpy and scipy, not "
        "tinyodl itself. A course may also grade with hidden tests, so full marks here is a "
        "good sign, not a guarantee. `tinyodl grade NOTEBOOK --task ID` checks one task.",
        "",
        f"Instructors: {_doc('/exercises/README', 'releasing and grading the exercises')} "
        "(student notebooks, Gradescope bundles, nbgrader).",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- README

#: The README's learning path sits between these two lines (``tinyodl docs path --write``).
PATH_BEGIN = "<!-- learning-path:begin (generated by: tinyodl docs path --write README.md) -->"
PATH_END = "<!-- learning-path:end -->"


def quarter_hours(total: float) -> str:
    """Minutes rounded to the quarter hour (so small edits do not change the README)."""
    return minutes(max(15, 15 * round(total / 15)))


def learning_path_markdown(course: Course) -> str:
    """The README's learning path: chapters in a valid order, what each needs, time."""
    lines = [
        "| chapter | needs | reading | exercise |",
        "|---|---|---|---|",
    ]
    total_read = total_ex = 0
    for chapter in course.order():
        needs = ", ".join(p.number for p in chapter.prerequisites) or "-"
        exercise = "-"
        if chapter.exercise and chapter.exercise.tasks:
            ex = chapter.exercise
            exercise = (
                f"`{ex.name}`: {len(ex.tasks)} tasks, {ex.points:g} points, "
                f"~{quarter_hours(chapter.exercise_minutes)}"
            )
        lines.append(
            f"| {chapter.number} {short_title(chapter)} | {needs} "
            f"| ~{quarter_hours(chapter.reading_minutes)} | {exercise} |"
        )
        total_read += chapter.reading_minutes
        total_ex += chapter.exercise_minutes
    lines += [
        "",
        f"About {quarter_hours(total_read)} of reading and {quarter_hours(total_ex)} of "
        f"exercises in all (estimates: {READING_WPM} words and {CODE_LINES_PER_MINUTE} lines "
        f"of code a minute, {MINUTES_PER_TASK} minutes per graded task). A chapter *needs* "
        "another when its code imports that chapter's module or its text builds on it.",
    ]
    return "\n".join([PATH_BEGIN, *lines, PATH_END])


def with_learning_path(readme: str, course: Course) -> str:
    """``readme`` with its learning-path block replaced by a fresh one."""
    start, end = readme.find(PATH_BEGIN), readme.find(PATH_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no learning-path block ({PATH_BEGIN} ... {PATH_END})")
    return readme[:start] + learning_path_markdown(course) + readme[end + len(PATH_END) :]


# --------------------------------------------------------------------------- chapter pages


def reproduce_notebook(chapter: Chapter) -> list[str]:
    path = f"chapters/{chapter.name}.ipynb"
    run = f"jupyter nbconvert --to notebook --execute {path} --output-dir /tmp"
    return [run, f"TINYODL_QUICK=1 {run}"]


def chapter_prelude(chapter: Chapter, course: Course, info: dict, api: bool = True) -> str:
    """The box under a chapter's title: needs, time, modules, exercise, commands."""
    lines = [":::{admonition} About this chapter", ":class: tip", ""]
    if chapter.prerequisites:
        needs = "; ".join(
            f"{_doc(chapter_doc(course.chapter(p.number)), 'chapter ' + p.number)} "
            f"({', '.join(p.reasons)})"
            for p in chapter.prerequisites
        )
        lines.append(f"**Needs:** {needs}.")
    else:
        lines.append("**Needs:** nothing but Python and numpy: start here.")
    time = f"**Time:** about {minutes(chapter.reading_minutes)} of reading"
    if chapter.exercise and chapter.exercise.tasks:
        time += f", {minutes(chapter.exercise_minutes)} for the exercise"
    lines += ["", time + "."]
    if chapter.modules:
        if api:
            links = ", ".join(_doc(api_doc(m), f"`{m}`") for m in chapter.modules)
            lines += ["", f"**Modules (API):** {links}."]
        else:
            lines += ["", f"**Modules:** {', '.join(f'`{m}`' for m in chapter.modules)}."]
    if chapter.exercise:
        ex = chapter.exercise
        what = f"{len(ex.tasks)} graded tasks, {ex.points:g} points" if ex.tasks else "ungraded"
        lines += [
            "",
            f"**Exercise:** {_doc(exercise_doc(ex), ex.name)} ({what}); check your notebook "
            f"with `{_self_check(ex)}`.",
        ]
    lines += [
        "",
        "**Reproduce the numbers.** Everything printed below was computed by executing this "
        f"notebook ({describe(info)}); to run it yourself:",
        "",
        "```bash",
        *reproduce_notebook(chapter),
        "```",
    ]
    if chapter.commands:
        lines += [
            "",
            "The headline figures quoted in the text come from:",
            "",
            "```bash",
            *chapter.commands,
            "```",
        ]
    lines.append(":::")
    return "\n".join(lines)


def chapter_results(chapter: Chapter) -> str:
    """The end of a chapter page: the README's results and the committed benchmark plots."""
    if not chapter.results and not chapter.benchmarks:
        return ""
    lines = ["## Results of the full runs", ""]
    if chapter.results:
        lines += [
            "From the README (each figure names the command that produced it):",
            "",
            chapter.results,
            "",
        ]
    for bench in chapter.benchmarks:
        lines.append(f"**`benchmarks/results/{bench.name}.json`**")
        if bench.command:
            lines += ["", f"produced by `{bench.command}`"]
        if bench.machine:
            lines[-1] += f" on {bench.machine}"
        lines.append("")
        if bench.plot is not None:
            lines += [f"![{bench.name}](../benchmarks/results/{bench.plot.name})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- exercise pages


def exercise_prelude(exercise: Exercise, chapter: Chapter | None) -> str:
    lines = [":::{admonition} How this exercise is graded", ":class: note", ""]
    if chapter is not None:
        lines.append(f"Read {_doc(chapter_doc(chapter), 'chapter ' + chapter.number)} first.")
    lines += [
        f"Download the {{download}}`student notebook </exercises/student/{exercise.name}.ipynb>`"
        ", open it in Jupyter and fill in every `raise NotImplementedError(...)` (keep the "
        "function names and signatures). Then check it locally with the public tests:",
        "",
        "```bash",
        _self_check(exercise),
        "```",
        "",
    ]
    if exercise.tasks:
        lines += ["| task | points |", "|---|---|"]
        for task in exercise.tasks:
            hidden = " (hidden: only passed/failed is shown)" if task.hidden else ""
            lines.append(f"| {task.name}{hidden} | {task.points:g} |")
        lines += [f"| **total** | **{exercise.points:g}** |", ""]
    lines.append(":::")
    return "\n".join(lines)


# --------------------------------------------------------------------------- API pages


def api_modules() -> list[str]:
    """The documented top-level modules: every public module and package of tinyodl."""
    import tinyodl

    names = [
        f"tinyodl.{info.name}"
        for info in pkgutil.iter_modules(tinyodl.__path__)
        if not info.name.startswith("_")
    ]
    return [n for n in sorted(names) if n not in API_SKIP]


def _submodules(package) -> list[str]:
    if not hasattr(package, "__path__"):
        return []
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        name = f"{package.__name__}.{info.name}"
        if info.name.startswith("_") or name in API_SKIP:
            continue
        found.append(name)
        if info.ispkg:
            found += _submodules(importlib.import_module(name))
    return found


def _automodule(name: str, members: bool, noindex: bool = False) -> list[str]:
    lines = ["```{eval-rst}", f".. automodule:: {name}"]
    if members:
        lines += ["   :members:", "   :ignore-module-all:", "   :show-inheritance:"]
    if noindex:
        lines.append("   :no-index:")
    return [*lines, "```", ""]


def _exported(package) -> Iterable[tuple[str, str]]:
    """``(name, where it is defined)`` for a package's ``__all__``."""
    for name in getattr(package, "__all__", ()):
        obj = getattr(package, name, None)
        module = getattr(obj, "__module__", None)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and module:
            yield name, f"{module}.{obj.__qualname__}"


def api_page(name: str, chapters: list[Chapter]) -> str:
    """The page of one top-level module: its docstring, its exports, every public submodule."""
    module = importlib.import_module(name)
    lines = [f"# `{name}`", ""]
    owners = [c for c in chapters if name in c.modules]
    if owners:
        taught = ", ".join(_doc(chapter_doc(c), f"chapter {c.number}") for c in owners)
        lines += [f"Taught in {taught}.", ""]
    submodules = _submodules(module)
    lines += _automodule(name, members=not submodules)
    exported = list(_exported(module)) if submodules else []
    if exported:
        lines += [f"Exported by `{name}` (`from {name} import ...`):", ""]
        lines += [", ".join(f"{{py:obj}}`{n} <{target}>`" for n, target in exported), ""]
    for sub in submodules:
        lines += [f"## `{sub}`", ""]
        try:
            importlib.import_module(sub)
        except ImportError as err:  # a module of an optional extra (tinyodl[fl], ...)
            lines += [f"Not documented in this build: importing it failed ({err}).", ""]
            continue
        lines += _automodule(sub, members=True)
    return "\n".join(lines)


def api_index(names: list[str], course: Course) -> str:
    owned = [n for n in names if n in course.module_owner]
    owned.sort(key=lambda n: course.module_owner[n])
    other = [n for n in names if n not in course.module_owner]
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings (numpydoc style: shapes, dtypes, the paper and the "
        "chapter). Every object links to its source (*[source]*), the readable numpy code "
        "the chapters explain.",
        "",
        "## Chapter modules",
        "",
    ]
    for name in owned:
        chapter = course.chapter(course.module_owner[name])
        lines.append(f"* {_doc(api_doc(name), name)}: chapter {chapter.number}")
    lines += ["", "## Infrastructure", ""]
    lines += [f"* {_doc(api_doc(n), n)}" for n in other]
    lines += ["", "```{toctree}", ":hidden:", ":titlesonly:", ""]
    lines += [f"{n}" for n in owned + other]
    lines += ["```", ""]
    return "\n".join(lines)
