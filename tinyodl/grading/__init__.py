"""Exercise generator and autograder (GUIDE section 6).

* :func:`release_exercise` / :func:`release_all` turn ``exercises/NN_name.py`` sources (with
  ``### BEGIN SOLUTION`` blocks) into student and solution notebooks.
* :func:`grade_notebook` grades a student notebook task by task, each in a time-limited
  subprocess, and returns a Gradescope ``results.json`` dictionary.
* :func:`grade_main` / :func:`release_main` are the ``tinyodl grade`` and
  ``tinyodl exercises release`` commands.

Graders live in ``tinyodl.grading.tests_exNN`` as ``@graded`` pytest test functions.
"""

from tinyodl.grading.cli import (
    add_grade_arguments,
    add_release_arguments,
    grade_main,
    release_main,
)
from tinyodl.grading.grader import grade_notebook
from tinyodl.grading.release import (
    MarkerError,
    release_all,
    release_exercise,
    solution_source,
    student_source,
)
from tinyodl.grading.tasks import graded

__all__ = [
    "MarkerError",
    "add_grade_arguments",
    "add_release_arguments",
    "grade_main",
    "grade_notebook",
    "graded",
    "release_all",
    "release_exercise",
    "release_main",
    "solution_source",
    "student_source",
]
