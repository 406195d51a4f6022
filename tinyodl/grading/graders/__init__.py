"""Graders, one module per exercise: ``exNN.py`` grades ``exercises/NN_name.py``.

Each module defines ``EXERCISE`` (the exercise id), ``ALLOW`` (tinyodl modules student code
may import; usually none), optionally ``DENY`` (modules that must never be importable, e.g.
the chapter module the exercise asks students to write), and ``@task`` functions
(``docs/grading.md``). These modules run only in the grading process; the student's process
can neither import nor read them.
"""
