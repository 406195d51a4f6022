"""Course delivery: the chapters as a website, autograder bundles, the learning path.

* :mod:`tinyodl.course.catalog` reads the course from a clone (chapters, modules,
  exercises, results, prerequisites, time estimates); nothing is written per chapter.
* :mod:`tinyodl.course.site` builds the static website (``tinyodl docs build``) from the
  chapter notebooks, executed with a cache (:mod:`tinyodl.course.execute`), the README's
  results and an API reference generated from the docstrings;
  :mod:`tinyodl.course.browser` checks it in headless Chromium (``tinyodl docs check``).
* :mod:`tinyodl.course.gradescope` writes a Gradescope autograder zip
  (``tinyodl exercises gradescope``); :mod:`tinyodl.course.nbgrader` the nbgrader source
  notebooks of a release; :mod:`tinyodl.course.release_check` proves every grader before a
  release (``tinyodl exercises release --check``); :mod:`tinyodl.course.selfcheck` grades a
  saved notebook from a Jupyter cell.

Everything here reads the repository (the exercise sources and chapters are not in the
installed package); run the commands from a clone.
"""
