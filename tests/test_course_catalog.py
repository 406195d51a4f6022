"""The course catalog (``tinyodl.course.catalog``): chapters, modules, exercises, results and
the learning path are discovered from a clone, on a synthetic repository and on this one."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tinyodl.course.catalog import (
    CourseError,
    Prerequisite,
    discover,
    find_root,
    readme_chapter_table,
    readme_sections,
)
from tinyodl.grading.release import exercise_sources

REPO = Path(__file__).resolve().parents[1]

README = """\
# demo

Intro paragraph.

## What is inside

| # | chapter | module(s) | notebook | exercise | status |
|---|---|---|---|---|---|
| 00 | basics: layers | `tinyodl.alpha`, `tinyodl.missing` | | | ready |
| 01 | second | `tinyodl.beta` | | | ready |

## Chapter results

### 01 — second

`tinyodl bench beta --json benchmarks/results/beta.json`: 97.5%.

```bash
### 02 not a heading inside code
```

### Chapter 02 results: third

Text of two.

## Chapter 03, measured

Text of three.

### A table of three

| a | b |

## 04 is not a chapter heading at this level

## Other
"""


def _chapter(root: Path, name: str, markdown: str, code: str) -> None:
    (root / "chapters" / f"{name}.py").write_text(
        "# %% [markdown]\n"
        + "".join(f"# {line}".rstrip() + "\n" for line in markdown.splitlines())
        + f"\n# %%\n{code}\n",
        encoding="utf-8",
    )


@pytest.fixture
def repo(tmp_path):
    """A clone-shaped folder with three chapters, two chapter modules and one benchmark."""
    for folder in ("chapters", "tinyodl/gamma", "exercises/student", "benchmarks/results"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "tinyodl" / "__init__.py").write_text("")
    (tmp_path / "tinyodl" / "alpha.py").write_text("")
    (tmp_path / "tinyodl" / "beta.py").write_text("")
    (tmp_path / "tinyodl" / "gamma" / "__init__.py").write_text("")
    (tmp_path / "README.md").write_text(README, encoding="utf-8")
    _chapter(tmp_path, "00_basics", "# Chapter 00 — Basics\n\nWords here.", "import numpy")
    _chapter(
        tmp_path,
        "01_second",
        "# Chapter 01 — Second: more\n\nAs chapter 00 showed; chapter 02 will say more.\n"
        "Run `tinyodl bench beta --json benchmarks/results/beta.json` and\n"
        "`TINYODL_QUICK=1 python\nscripts/run.py`; the variable `TINYODL_QUICK=1` alone is not "
        "a command.",
        "from tinyodl import alpha, beta\nimport tinyodl.nn\n%matplotlib inline",
    )
    _chapter(
        tmp_path,
        "02_third",
        "# Third\n\nNo reference to others.",
        "from tinyodl.gamma import thing\nfrom tinyodl.beta import f",
    )
    (tmp_path / "exercises" / "00_basics.py").write_text("# %%\nx = 1\n")
    (tmp_path / "exercises" / "student" / "00_basics.ipynb").write_text("{}")
    (tmp_path / "benchmarks" / "results" / "beta.json").write_text(
        json.dumps(
            {"command": "tinyodl bench beta --json x", "machine": {"cpu": "CPU", "cores": 2}}
        )
    )
    (tmp_path / "benchmarks" / "results" / "beta.png").write_bytes(b"\x89PNG")
    return tmp_path


def test_chapters_titles_and_modules(repo):
    course = discover(repo)
    assert [c.number for c in course.chapters] == ["00", "01", "02"]
    zero, one, two = course.chapters
    assert zero.title == "Chapter 00 — Basics"
    assert zero.modules == ("tinyodl.alpha",)  # tinyodl.missing does not exist
    assert one.modules == ("tinyodl.beta",)
    assert one.summary == "second"
    # Chapter 02 has no README row: the chapter modules it imports that nobody owns.
    assert two.modules == ("tinyodl.gamma",)
    assert one.imports == ("tinyodl.alpha", "tinyodl.beta")  # tinyodl.nn is not in this repo
    assert course.module_owner == {
        "tinyodl.alpha": "00",
        "tinyodl.beta": "01",
        "tinyodl.gamma": "02",
    }


def test_prerequisites_come_from_imports_and_references(repo):
    course = discover(repo)
    one, two = course.chapter("01"), course.chapter("02")
    assert [(p.number, p.reasons) for p in one.prerequisites] == [
        ("00", ("uses `tinyodl.alpha`", "refers to chapter 00"))
    ]  # the forward reference to chapter 02 is not a prerequisite
    assert [(p.number, p.reasons) for p in two.prerequisites] == [("01", ("uses `tinyodl.beta`",))]
    assert course.chapter("00").prerequisites == ()
    assert [c.number for c in course.order()] == ["00", "01", "02"]


def test_order_respects_prerequisites_before_numbers(repo):
    course = discover(repo)
    course.chapter("01").prerequisites = (Prerequisite("02", ("test",)),)
    course.chapter("02").prerequisites = ()
    assert [c.number for c in course.order()] == ["00", "02", "01"]


def test_commands_results_and_benchmarks(repo):
    one = discover(repo).chapter("01")
    assert one.commands == (
        "tinyodl bench beta --json benchmarks/results/beta.json",
        "TINYODL_QUICK=1 python scripts/run.py",
        "tinyodl bench beta --json x",
    )
    assert "97.5%" in one.results
    assert [b.name for b in one.benchmarks] == ["beta"]
    bench = one.benchmarks[0]
    assert bench.command == "tinyodl bench beta --json x"
    assert bench.machine == "CPU, 2 cores"
    assert bench.plot is not None and bench.plot.name == "beta.png"


def test_exercises_and_time_estimates(repo):
    course = discover(repo)
    zero = course.chapter("00")
    assert zero.exercise is not None and zero.exercise.name == "00_basics"
    assert zero.exercise.student == repo / "exercises" / "student" / "00_basics.ipynb"
    # The tasks come from the grader of exercise 00 that ships with tinyodl.
    assert zero.exercise.tasks and zero.exercise.points > 0
    assert zero.exercise_minutes > 0 and zero.reading_minutes >= 1
    assert course.chapter("01").exercise is None
    assert course.chapter("01").exercise_minutes == 0


def test_readme_parsers():
    table = readme_chapter_table(README)
    assert table["00"]["modules"] == ("tinyodl.alpha", "tinyodl.missing")
    assert table["01"]["summary"] == "second"
    sections = readme_sections(README)
    assert set(sections) == {"01", "02", "03"}  # the heading inside the code block is not one
    assert "97.5%" in sections["01"] and "### 02" in sections["01"]
    assert sections["02"] == "Text of two."
    # a "## Chapter NN" section keeps its ### subsections, up to the next ## heading
    assert sections["03"] == "Text of three.\n\n### A table of three\n\n| a | b |"


def test_not_a_clone(tmp_path):
    with pytest.raises(CourseError, match="not inside a clone"):
        find_root(tmp_path)
    (tmp_path / "chapters").mkdir()
    (tmp_path / "tinyodl").mkdir()
    with pytest.raises(CourseError, match="no chapter sources"):
        discover(tmp_path)


def test_this_repository():
    """Every chapter and exercise of the clone is found, with what the site links to."""
    course = discover(REPO)
    sources = sorted((REPO / "chapters").glob("[0-9][0-9]_*.py"))
    assert [c.source for c in course.chapters] == sources
    for chapter in course.chapters:
        assert chapter.notebook.exists()
        assert chapter.title and chapter.modules, chapter.name
        for module in chapter.modules:
            assert module.startswith("tinyodl."), module
        for prerequisite in chapter.prerequisites:
            assert prerequisite.number != chapter.number and prerequisite.reasons
    assert course.chapter("00").prerequisites == ()
    with_exercise = {c.exercise.name for c in course.chapters if c.exercise}
    assert with_exercise == {p.stem for p in exercise_sources(REPO / "exercises")}
    for chapter in course.chapters:
        if chapter.exercise is not None:
            assert chapter.exercise.student is not None and chapter.exercise.points > 0
    text = textwrap.dedent(course.readme)
    assert "## What is inside" in text


def test_readme_learning_path_is_current():
    from tinyodl.course.pages import PATH_BEGIN, with_learning_path

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert PATH_BEGIN in readme
    fresh = with_learning_path(readme, discover(REPO))
    assert fresh == readme, (
        "the README's learning path is stale: tinyodl docs path --write README.md"
    )
    for chapter in discover(REPO).chapters:
        assert f"| {chapter.number} " in readme


def test_learning_path_block_is_replaced(repo):
    from tinyodl.course.pages import PATH_BEGIN, PATH_END, with_learning_path

    readme = f"# x\n\nbefore\n{PATH_BEGIN}\nold table\n{PATH_END}\nafter\n"
    fresh = with_learning_path(readme, discover(repo))
    assert fresh.startswith("# x\n\nbefore\n") and fresh.endswith("\nafter\n")
    assert "old table" not in fresh
    assert "| 01 Second: more | 00 |" in fresh and "| 02 Third | 01 |" in fresh
    with pytest.raises(ValueError, match="no learning-path block"):
        with_learning_path("# no block\n", discover(repo))
