"""``tinyodl docs build``: the course as a static website (Sphinx + MyST-NB, offline).

The build has three steps, each timed in the :class:`BuildReport`:

1. **Execute** every chapter notebook, or read it from the cache
   (:mod:`tinyodl.course.execute`): the committed notebooks have no outputs.
2. **Stage** a Sphinx source folder: the landing page (learning path, self-check), each
   chapter notebook with a box under its title (what it needs, time, API links, exercise,
   the commands that reproduce its numbers) and the README's results at the end, each
   exercise's student notebook with its tasks and points, the README and the guides in
   ``docs/``, one API page per top-level module (autodoc + napoleon, numpydoc style), and a
   local copy of MathJax (from the ``sphinx-mathjax-offline`` package) so that math renders
   without a network.
3. **Build** HTML with ``python -m sphinx`` (theme: furo, which loads nothing from the
   network either). Sphinx's warnings go to ``DIR/.sphinx-warnings.txt``.

Run from a clone: ``tinyodl docs build --out site/``, then ``tinyodl docs serve site/``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinyodl.course import pages
from tinyodl.course.catalog import Course, discover
from tinyodl.course.execute import (
    ExecutionError,
    error_summary,
    executed_notebook,
    execution_info,
)

#: Markdown files of the repository that become pages (when they exist), besides ``docs/``.
GUIDES = ("exercises/README.md", "benchmarks/README.md", "tinyodl/datasets/README.md")
#: MathJax files the site needs (the CommonHTML build, its fonts and lazily loaded parts).
MATHJAX_PARTS = ("tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "ui", "a11y")
DEFAULT_CACHE = ".tinyodl-docs-cache"


class SiteError(RuntimeError):
    """The site could not be built (a missing tool, a failing notebook, Sphinx errors)."""


@dataclass
class BuildReport:
    """What a build did: the pages, where the executions came from, and how long it took."""

    out: Path
    chapters: list[str] = field(default_factory=list)
    executed: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        times = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        ran = sum(1 for i in self.executed.values() if i)
        failed = f", {len(self.failed)} FAILED ({', '.join(self.failed)})" if self.failed else ""
        return (
            f"built {self.out / 'index.html'}: {len(self.chapters)} chapters "
            f"({ran} executed{failed}), {len(self.warnings)} Sphinx warnings; {times}"
        )


def check_tools() -> None:
    """Raise :class:`SiteError` naming the missing packages of the ``docs`` extra."""
    needed = {
        "sphinx": "sphinx",
        "myst_nb": "myst-nb",
        "furo": "furo",
        "sphinx-mathjax-offline": "sphinx-mathjax-offline",
        "nbclient": "nbclient",
        "ipykernel": "ipykernel",
    }
    missing = [pip for mod, pip in needed.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise SiteError(
            f"missing packages for the site: {', '.join(missing)}; install the docs extra: "
            'python3 -m pip install -e ".[docs]"'
        )


def mathjax_source() -> Path:
    """The MathJax 3 folder shipped by the ``sphinx-mathjax-offline`` package."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        raise SiteError("sphinx-mathjax-offline is not installed (docs extra)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax"
    if not (folder / "tex-chtml.js").exists():
        raise SiteError(f"no MathJax in {folder}")
    return folder


def build_site(
    out: str | Path,
    root: str | Path = ".",
    configuration: str = "full",
    cache_dir: str | Path | None = None,
    execute: bool = True,
    force: bool = False,
    only: list[str] | None = None,
    api: bool = True,
    source_links: bool = True,
    jobs: int = 1,
    keep_going: bool = False,
    log=print,
) -> BuildReport:
    """Build the site into ``out``.

    Parameters
    ----------
    out : path
        Output folder; ``out/index.html`` is the landing page.
    root : path
        The clone (default: the current folder or a parent of it).
    configuration : {"full", "quick"}
        How chapters are executed when the cache does not have them.
    cache_dir : path, optional
        Executed notebooks (default ``ROOT/.tinyodl-docs-cache``).
    execute : bool
        When false, chapters missing from the cache are shown without outputs.
    force : bool
        Execute every chapter again.
    only : list of str, optional
        Chapter numbers to include (``["00", "03"]``); default all.
    api, source_links : bool
        Build the API reference; link each object to its highlighted source.
    jobs : int
        Parallel Sphinx processes.
    keep_going : bool
        When a chapter fails to execute, show it without outputs (with the error in
        ``report.failed``) and build the rest; by default the build stops with the error.
    """
    check_tools()
    started = time.perf_counter()
    course = discover(root)
    if execute:
        from tinyodl.backend import cython_available

        if not cython_available():
            log(
                "warning: the compiled kernels are not built, so chapters execute with the "
                "numpy reference backend (slower; a chapter that measures the compiled "
                "kernels' memory may fail): build them with pip install -e . from the clone"
            )
    if only:
        unknown = sorted(set(only) - {c.number for c in course.chapters})
        if unknown:
            raise SiteError(f"--only: no chapter {unknown}; chapters: {_numbers(course)}")
        course.chapters = [c for c in course.chapters if c.number in only]
    out = Path(out).resolve()
    cache = Path(cache_dir) if cache_dir else course.root / DEFAULT_CACHE
    report = BuildReport(out)

    t = time.perf_counter()
    executed = {}
    for chapter in course.chapters:
        try:
            node = executed_notebook(
                chapter.notebook, cache, configuration, force=force, execute=execute, log=log
            )
        except ExecutionError as err:
            if not keep_going:
                raise
            log(f"FAILED: {chapter.name} (shown without outputs)")
            report.failed[chapter.name] = str(err)
            node = None
        if node is None and configuration == "full":  # the test suite's quick runs
            node = executed_notebook(chapter.notebook, cache, "quick", execute=False)
        executed[chapter.name] = node
        report.executed[chapter.name] = execution_info(node) if node is not None else {}
    report.seconds["execute"] = time.perf_counter() - t

    t = time.perf_counter()
    src = cache / "site-source"  # kept between builds: Sphinx rebuilds only what changed
    with tempfile.TemporaryDirectory(prefix="tinyodl-site-") as fresh:
        stage(
            course, Path(fresh) / "src", executed, report.executed, api, source_links, report.failed
        )
        sync_tree(Path(fresh) / "src", src)
    report.chapters = [c.name for c in course.chapters]
    report.seconds["stage"] = time.perf_counter() - t

    t = time.perf_counter()
    report.warnings = run_sphinx(src, out, jobs=jobs)
    report.seconds["sphinx"] = time.perf_counter() - t
    report.seconds["total"] = time.perf_counter() - started
    (out / ".build-report.json").write_text(
        json.dumps(
            {
                "chapters": report.chapters,
                "executed": report.executed,
                "seconds": {k: round(v, 1) for k, v in report.seconds.items()},
                "warnings": len(report.warnings),
                "failed": {k: error_summary(v) for k, v in sorted(report.failed.items())},
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    return report


def _numbers(course: Course) -> list[str]:
    return [c.number for c in course.chapters]


# --------------------------------------------------------------------------- staging


def _intro(readme: str) -> str:
    """The README's opening paragraphs (between the title and the first ``##`` heading)."""
    body = readme.split("\n## ", 1)[0]
    return re.sub(r"^# .*\n", "", body, count=1).strip()


def _with_cells(node, prelude: str, after_title: bool, ending: str = ""):
    """A copy of ``node`` with a markdown cell inserted (after the title cell) and appended."""
    import copy

    import nbformat

    node = copy.deepcopy(node)
    at = 0
    if after_title:
        for i, cell in enumerate(node.cells):
            if cell.cell_type == "markdown" and re.search(r"^#\s", cell.source, re.M):
                at = i + 1
                break
    node.cells.insert(at, nbformat.v4.new_markdown_cell(prelude))
    if ending:
        node.cells.append(nbformat.v4.new_markdown_cell(ending))
    for i, cell in enumerate(node.cells):  # ids unique and stable
        cell["id"] = f"cell-{i}"
    return node


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def stage(
    course: Course,
    src: Path,
    executed: dict,
    infos: dict[str, dict],
    api: bool = True,
    source_links: bool = True,
    failed: dict[str, str] | None = None,
) -> None:
    """Write the Sphinx source folder ``src`` (see the module docstring)."""
    import nbformat

    root = course.root
    src.mkdir(parents=True)
    _write_text(src / "index.md", _index(course, infos, api))
    readme = re.sub(
        r"^# .*$", "# README: set-up, results, layout", course.readme, count=1, flags=re.M
    )
    _write_text(src / "README.md", readme)
    guides = [p.relative_to(root).as_posix() for p in sorted((root / "docs").glob("*.md"))]
    guides += [g for g in GUIDES if (root / g).exists()]
    for guide in guides:
        shutil.copyfile(root / guide, _mk(src / guide))
    for path in sorted((root / "benchmarks" / "results").glob("*")):
        if path.suffix in (".png", ".json", ".svg"):
            shutil.copyfile(path, _mk(src / "benchmarks" / "results" / path.name))
    _write_text(src / "guides.md", _guides_page(guides))

    for chapter in course.chapters:
        node = executed.get(chapter.name)
        if node is None:
            node = nbformat.read(chapter.notebook, as_version=4)
        prelude = pages.chapter_prelude(chapter, course, infos.get(chapter.name, {}), api)
        if failed and chapter.name in failed:
            why = error_summary(failed[chapter.name]).replace("`", "'")[:300]
            prelude = (
                ":::{warning}\nThis chapter failed to execute in this build, so it is shown "
                f"without outputs (`{why}`).\n:::\n\n" + prelude
            )
        page = _with_cells(node, prelude, True, pages.chapter_results(chapter))
        nbformat.write(page, _mk(src / "chapters" / f"{chapter.name}.ipynb"))
        exercise = chapter.exercise
        if exercise is not None and exercise.student is not None:
            shutil.copyfile(
                exercise.student, _mk(src / "exercises" / "student" / exercise.student.name)
            )
            student = nbformat.read(exercise.student, as_version=4)
            page = _with_cells(student, pages.exercise_prelude(exercise, chapter), True)
            nbformat.write(page, _mk(src / "exercises" / f"{exercise.name}.ipynb"))

    if api:
        names = pages.api_modules()
        _write_text(src / "api" / "index.md", pages.api_index(names, course))
        for name in names:
            _write_text(src / "api" / f"{name}.md", pages.api_page(name, course.chapters))

    mathjax = mathjax_source()
    for part in MATHJAX_PARTS:
        source = mathjax / part
        target = _mk(src / "_static" / "mathjax" / part)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
    _write_text(
        src / "_static" / "mathjax" / "NOTICE.txt",
        "MathJax 3 (c) The MathJax Consortium, Apache License 2.0; files from the "
        "sphinx-mathjax-offline package on PyPI, served locally so that math renders offline.\n",
    )
    _write_text(src / "conf.py", _conf(source_links))


def sync_tree(new: Path, target: Path) -> None:
    """Make ``target`` hold the files of ``new``, rewriting only files whose bytes changed
    (unchanged files keep their modification time, so Sphinx does not read them again) and
    deleting the others; Sphinx's ``.doctrees`` inside ``target`` is kept."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.relative_to(new) for p in new.rglob("*") if p.is_file()}
    for path in sorted(target.rglob("*")):
        relative = path.relative_to(target)
        if relative.parts[0] == ".doctrees" or not path.is_file():
            continue
        if relative not in wanted:
            path.unlink()
    for relative in sorted(wanted):
        source, dest = new / relative, target / relative
        data = source.read_bytes()
        if not dest.is_file() or dest.read_bytes() != data:
            _mk(dest).write_bytes(data)


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _index(course: Course, infos: dict, api: bool) -> str:
    text = pages.landing_page(course, infos, _intro(course.readme))
    chapters = [f"chapters/{c.name}" for c in course.order()]
    exercises = [
        f"exercises/{c.exercise.name}"
        for c in course.chapters
        if c.exercise is not None and c.exercise.student is not None
    ]
    tocs = [("Chapters", chapters), ("Exercises", exercises)]
    tocs.append(("Reference", ["README", *(["api/index"] if api else []), "guides"]))
    for caption, entries in tocs:
        if entries:
            text += "\n```{toctree}\n:maxdepth: 1\n:titlesonly:\n:caption: " + caption + "\n\n"
            text += "\n".join(entries) + "\n```\n"
    return text


def _guides_page(guides: list[str]) -> str:
    lines = ["# Guides", "", "The project's own documents, as in the repository.", ""]
    lines += ["```{toctree}", ":maxdepth: 1", ":titlesonly:", ""]
    lines += [g.removesuffix(".md") for g in guides]
    lines += ["```", ""]
    return "\n".join(lines)


def _conf(source_links: bool) -> str:
    extensions = [
        "myst_nb",
        "sphinx.ext.autodoc",
        "sphinx.ext.napoleon",
        "sphinx.ext.mathjax",
        "tinyodl.course._sphinx_ext",
    ]
    if source_links:
        extensions.append("sphinx.ext.viewcode")
    settings = {
        "project": "tinyodl",
        "author": "The tinyodl developers",
        "copyright": "The tinyodl developers (MIT)",
        "extensions": extensions,
        "html_theme": "furo",
        "html_title": "tinyodl: on-device learning, built by hand",
        "html_static_path": ["_static"],
        "html_last_updated_fmt": None,
        "html_show_sourcelink": False,
        "exclude_patterns": ["exercises/student/*", "_build", "**.ipynb_checkpoints"],
        # ref.python: a docstring's type "ndarray, shape (N, D)" makes Sphinx look up "shape",
        # which several classes define (an ambiguous link, not a broken one).
        "suppress_warnings": ["mystnb.unknown_mime_type", "myst.header", "ref.python"],
        "mathjax_path": "mathjax/tex-chtml.js",
        "myst_enable_extensions": ["dollarmath", "amsmath", "colon_fence"],
        "myst_heading_anchors": 3,
        "nb_execution_mode": "off",
        "nb_merge_streams": True,
        "nb_ipywidgets_js": {},
        "napoleon_google_docstring": False,
        "napoleon_numpy_docstring": True,
        "napoleon_use_rtype": False,
        "autodoc_member_order": "bysource",
        "autodoc_typehints": "signature",
        "add_module_names": False,
        # API objects out of the navigation tree: the sidebar of every page stays small (with
        # them, furo's per-page navigation dominates the build time).
        "toc_object_entries": False,
    }
    lines = ['"""Sphinx configuration written by tinyodl docs build (do not edit)."""', ""]
    lines += [f"{key} = {value!r}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- sphinx


def run_sphinx(src: Path, out: Path, jobs: int = 1) -> list[str]:
    """Run ``python -m sphinx -b html``; return its warnings (raise on failure)."""
    warnings = out / ".sphinx-warnings.txt"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-q",
        "-j",
        str(jobs),
        "-d",
        str(src / ".doctrees"),
        "-w",
        str(warnings),
        str(src),
        str(out),
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SiteError(f"sphinx failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    text = warnings.read_text(encoding="utf-8") if warnings.exists() else ""
    return [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line]
