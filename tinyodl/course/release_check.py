"""``tinyodl exercises release --check``: prove each grader works before students see it.

For every released exercise: the solution notebook scores full marks with every check
passing and every cell loading; the student notebook scores 0 with **every** check failing
(a check that passes on a blank stub grades nothing); no line of a ``### BEGIN HIDDEN TESTS``
block reaches the student notebook; and the nbgrader notebook's points add up to the
grader's. The release is written to ``--out`` only when every exercise passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tinyodl.grading.release import find_blocks


@dataclass
class ExerciseCheck:
    """The verdict on one exercise."""

    exercise: str
    solution_score: float = 0.0
    student_score: float = 0.0
    max_score: float = 0.0
    checks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (
            f"{self.exercise}: {verdict}: solution {self.solution_score:g}/{self.max_score:g}, "
            f"student {self.student_score:g}/{self.max_score:g}, {self.checks} checks"
        )


def hidden_lines(source_text: str) -> list[str]:
    """The non-trivial lines inside ``### BEGIN HIDDEN TESTS`` blocks of a source."""
    lines = source_text.splitlines()
    found = []
    for block in find_blocks(source_text):
        if block.kind == "HIDDEN TESTS":
            for line in lines[block.begin : block.end - 1]:
                stripped = line.strip()
                if len(stripped) > 8 and not stripped.startswith("#"):
                    found.append(stripped)
    return found


def check_exercise(
    source: str | Path,
    paths: dict,
    timeout: float = 60.0,
    jobs: int = 2,
    nbgrader_path: Path | None = None,
) -> ExerciseCheck:
    """Grade the released solution and student notebooks of one exercise and judge them."""
    from tinyodl.grading import grade_notebook

    source = Path(source)
    result = ExerciseCheck(source.stem)
    kwargs = {"exercise": source.stem, "timeout": timeout, "jobs": jobs, "details": True}
    solution = grade_notebook(paths["solution"], **kwargs)
    student = grade_notebook(paths["student"], **kwargs)
    result.max_score = float(solution["extra_data"].get("max_score", 0.0))
    result.solution_score = float(solution["score"])
    result.student_score = float(student["score"])
    checks = solution["extra_data"].get("checks", {})
    result.checks = sum(len(c) for c in checks.values())
    if not solution["tests"]:
        result.problems.append(f"solution not graded: {solution['output']}")
    failing = [f"{t}: {label}" for t, c in checks.items() for label, ok in c.items() if not ok]
    if failing:
        result.problems.append(f"checks that fail on the solution: {failing}")
    if solution["extra_data"].get("load_errors"):
        result.problems.append(f"solution cells that fail: {solution['extra_data']['load_errors']}")
    passing = [
        f"{t}: {label}"
        for t, c in student["extra_data"].get("checks", {}).items()
        for label, ok in c.items()
        if ok
    ]
    if passing:
        result.problems.append(f"checks that pass on the student version: {passing}")
    if result.student_score != 0:
        result.problems.append(f"the student version scores {result.student_score:g}")
    student_text = Path(paths["student"]).read_text(encoding="utf-8")
    leaked = [x for x in hidden_lines(source.read_text(encoding="utf-8")) if x in student_text]
    if leaked:
        result.problems.append(f"hidden test lines in the student notebook: {leaked[:3]}")
    if nbgrader_path is not None:
        from tinyodl.course.nbgrader import points_of

        points = points_of(nbgrader_path)
        if points != result.max_score:
            result.problems.append(
                f"the nbgrader notebook has {points:g} points, the grader {result.max_score:g}"
            )
    return result
