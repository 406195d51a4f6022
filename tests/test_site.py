"""The course website (``tinyodl docs build``), built from this clone and opened in a browser.

The site is built once for this module, from the chapter notebooks of the session's notebook
tests (``tests/test_notebooks.py``, quick configuration), shared through the
``executed_chapters`` cache by every pytest-xdist worker: each chapter executes once, in its
notebook test or here, whichever comes first. When those tests are not selected, chapter 00
is executed here and the other chapters are rendered without outputs. To keep
the suite's budget, the test build leaves out the highlighted source pages
(``sphinx.ext.viewcode``); ``tinyodl docs build`` includes them.

The browser test needs the ``docs`` extra (Playwright) and Debian's ``chromium`` (``.ci/run``
installs both); it is skipped without them. Set ``TINYODL_SCREENSHOTS=DIR`` to keep the
screenshots somewhere else than the test's temporary folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tinyodl.course.catalog import discover
from tinyodl.course.site import SiteError, build_site, check_tools

REPO = Path(__file__).resolve().parents[1]
COURSE = discover(REPO)


def _quiet(*args) -> None:
    pass


def _selected_chapters(session) -> list:
    """The chapters whose notebook test is part of this session (after ``-k`` and the like;
    every pytest-xdist worker collects the same items)."""
    names = {
        item.callspec.id
        for item in session.items
        if item.originalname == "test_notebook_runs_top_to_bottom" and hasattr(item, "callspec")
    }
    return [c for c in COURSE.chapters if c.name in names]


@pytest.fixture(scope="module")
def site(request, executed_chapters):
    """The built site: ``(report, folder)``, built once per session: pytest-xdist workers
    that run tests of this module share one build (the first builds, the others wait)."""
    try:
        check_tools()
    except SiteError as err:
        pytest.skip(str(err))
    import fcntl
    import pickle

    from tinyodl.course.execute import ExecutionError, executed_once

    folder = executed_chapters / "site-test"
    folder.mkdir(exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / "report.pickle"
        if done.exists():
            return pickle.loads(done.read_bytes()), folder / "html"
        # The chapters the notebook tests execute in this session: take their runs (waiting
        # for those under way in another worker, or running them first). Without those
        # tests, the first chapter runs here and the others are shown without outputs.
        for chapter in _selected_chapters(request.session) or COURSE.chapters[:1]:
            try:
                executed_once(chapter.notebook, executed_chapters, "quick", log=_quiet)
            except ExecutionError:
                pass  # its notebook test reports it; the page is shown without outputs
        report = build_site(
            folder / "html",
            root=REPO,
            configuration="quick",
            cache_dir=executed_chapters,
            execute=False,
            source_links=False,
            jobs=1,
            log=_quiet,
        )
        done.write_bytes(pickle.dumps(report))
    return report, folder / "html"


def _html(out: Path, page: str) -> str:
    return (out / page).read_text(encoding="utf-8")


def test_every_chapter_and_exercise_has_a_page(site):
    report, out = site
    assert report.chapters == [c.name for c in COURSE.chapters]
    for chapter in COURSE.chapters:
        assert (out / "chapters" / f"{chapter.name}.html").is_file()
        if chapter.exercise is not None:
            assert (out / "exercises" / f"{chapter.exercise.name}.html").is_file()
            assert list((out / "_downloads").rglob(f"{chapter.exercise.name}.ipynb"))
    for module in {m.split(".")[1] for c in COURSE.chapters for m in c.modules}:
        assert (out / "api" / f"tinyodl.{module}.html").is_file()


def test_landing_page_gives_the_learning_path(site):
    _, out = site
    index = _html(out, "index.html")
    assert "The learning path" in index and "Studying on your own" in index
    assert "tinyodl grade 00_foundations.ipynb" in _plain(index)
    for chapter in COURSE.chapters:
        assert f'href="chapters/{chapter.name}.html"' in index
        if chapter.exercise is not None and chapter.exercise.tasks:
            ex = chapter.exercise
            assert f"{len(ex.tasks)} tasks, {ex.points:g} points" in index


def test_chapter_pages_link_api_exercise_and_commands(site, executed_chapters):
    report, out = site
    for chapter in COURSE.chapters:
        page = _html(out, f"chapters/{chapter.name}.html")
        for module in chapter.modules:
            top = ".".join(module.split(".")[:2])
            assert f'href="../api/{top}.html"' in page, (chapter.name, module)
        if chapter.exercise is not None:
            assert f'href="../exercises/{chapter.exercise.name}.html"' in page
        text = _plain(page)
        assert f"--execute chapters/{chapter.name}.ipynb" in text
        for command in chapter.commands:
            assert re.sub(r"\s+", " ", command) in text, command
        info = report.executed[chapter.name]
        if info:  # executed: every figure of the notebook is an image of the page
            assert info["configuration"] == "quick"
            assert f"in {info['seconds']:g} s" in text
            assert len(re.findall(r"<img ", page)) >= _figures(chapter, executed_chapters)


def _figures(chapter, cache) -> int:
    """How many figures (PNG outputs) the executed notebook of ``chapter`` has."""
    from tinyodl.course.execute import executed_notebook

    node = executed_notebook(chapter.notebook, cache, "quick", execute=False)
    return sum(
        1
        for cell in node.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    )


def _plain(page: str) -> str:
    """The text of an HTML page: tags removed, entities decoded, spaces collapsed."""
    import html

    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", page)))


def test_internal_links_resolve_everywhere(site):
    from tinyodl.course.browser import check_links

    _, out = site
    assert check_links(out) == {}


def test_nothing_is_loaded_from_the_network(site):
    from tinyodl.course.browser import external_references

    _, out = site
    pages = sorted(out.rglob("*.html"))
    assert pages
    leaks = {p.name: external_references(p) for p in pages if external_references(p)}
    assert leaks == {}
    assert (out / "_static" / "mathjax" / "tex-chtml.js").is_file()
    # Sphinx adds MathJax only to the pages that have math; they load the local copy.
    loaders = {}
    for page in pages:
        srcs = re.findall(r'<script[^>]*src="([^"?]*mathjax[^"?]*)', page.read_text("utf-8"))
        if srcs:
            loaders[page.relative_to(out).as_posix()] = srcs
    assert f"chapters/{COURSE.chapters[0].name}.html" in loaders
    for page, srcs in loaders.items():
        assert srcs == ["../" * page.count("/") + "_static/mathjax/tex-chtml.js"], page


def test_in_headless_chromium(site, tmp_path, executed_chapters):
    """The index and every chapter page: links, images (non-zero size), math. (The exercise
    pages are not opened, to keep the test short: their links are checked statically.)"""
    pytest.importorskip("playwright.sync_api")
    from tinyodl.course.browser import check_pages, find_chromium

    if find_chromium() is None:
        pytest.skip("no chromium (apt-get install chromium)")
    report, out = site
    shots = Path(os.environ.get("TINYODL_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    executed = [c for c in COURSE.chapters if report.executed[c.name]]
    shown = executed[0]
    screenshots = {
        "index.html": shots / "index.png",
        f"chapters/{shown.name}.html": shots / f"{shown.name}.png",
    }
    pages = ["index.html", *(f"chapters/{c.name}.html" for c in COURSE.chapters)]
    checks = check_pages(out, pages, screenshots)
    problems = [c.problems() for c in checks if not c.ok]
    assert not problems, "\n".join(problems)
    by_page = {c.page: c for c in checks}
    for chapter in executed:  # every figure of the notebook loads on its page
        figures = _figures(chapter, executed_chapters)
        assert by_page[f"chapters/{chapter.name}.html"].images >= figures, chapter.name
    assert sum(by_page[f"chapters/{c.name}.html"].images for c in executed) > 0
    assert sum(c.math_rendered for c in checks) > 0, "no page rendered any math"
    for path in screenshots.values():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path
    print("screenshots:", *screenshots.values())
