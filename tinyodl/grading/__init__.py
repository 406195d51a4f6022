"""Exercise generator and autograder (``docs/grading.md``, ``docs/architecture.md``).

* :func:`release_exercise` / :func:`release_all` turn ``exercises/NN_name.py`` sources (with
  ``### BEGIN SOLUTION`` blocks) into student and solution notebooks.
* :func:`grade_notebook` grades a student notebook: every task in its own sandboxed student
  process that only computes, every check in the grading process; it returns a Gradescope
  ``results.json`` dictionary.
* :func:`grade_main` / :func:`release_main` are ``tinyodl grade`` and
  ``tinyodl exercises release``.

Graders live in ``tinyodl.grading.graders.exNN``, written with :mod:`tinyodl.grading.api`
and :mod:`tinyodl.grading.checks`.
"""

from tinyodl.grading.cli import (
    add_grade_arguments,
    add_release_arguments,
    grade_main,
    release_main,
)
from tinyodl.grading.engine import grade_notebook
from tinyodl.grading.release import (
    MarkerError,
    release_all,
    release_exercise,
    solution_source,
    student_source,
)
from tinyodl.grading.sandbox import SandboxConfig

__all__ = [
    "MarkerError",
    "SandboxConfig",
    "add_grade_arguments",
    "add_release_arguments",
    "grade_main",
    "grade_notebook",
    "release_all",
    "release_exercise",
    "release_main",
    "solution_source",
    "student_source",
]
