"""Run a grader module with plain pytest against one notebook.

::

    pytest -p tinyodl.grading.pytest_plugin --notebook my.ipynb \
        --pyargs tinyodl.grading.tests_ex00

The ``student`` fixture is the module built from the notebook's code cells (in this process,
no time limit: use pytest-timeout's ``--timeout``). ``tinyodl grade`` is the isolated,
time-limited way to grade; this plugin is for instructors debugging a grader.
"""

from __future__ import annotations

import pytest

from tinyodl.grading.notebook import read_notebook
from tinyodl.grading.runner import exec_cells, grading_cells


def pytest_addoption(parser):
    parser.addoption("--notebook", help="student notebook to grade (.ipynb or percent .py)")


def pytest_configure(config):
    config.addinivalue_line("markers", "graded(points, hidden): a graded exercise task")


def pytest_collection_modifyitems(config, items):
    """Mark each ``@graded`` test with ``graded(points=..., hidden=...)`` (select with -m)."""
    for item in items:
        task = getattr(getattr(item, "obj", None), "_tinyodl_task", None)
        if task is not None:
            item.add_marker(pytest.mark.graded(points=task.points, hidden=task.hidden))


@pytest.fixture(scope="session")
def student(request):
    """The student's notebook as a module (functions looked up by name)."""
    path = request.config.getoption("--notebook")
    if not path:
        pytest.skip("no --notebook given")
    module, _errors = exec_cells(grading_cells(read_notebook(path)))
    return module
