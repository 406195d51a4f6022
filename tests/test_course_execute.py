"""Executing chapter notebooks for the site (``tinyodl.course.execute``): figures kept as
outputs, the quick configuration, and a cache keyed by the notebook and the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyodl.course.execute import (
    ExecutionError,
    cache_key,
    cache_path,
    describe,
    error_summary,
    executed_notebook,
    executed_once,
    execution_info,
    store,
)
from tinyodl.grading.notebook import parse_percent, to_ipynb

CODE = """\
import os
import matplotlib.pyplot as plt

QUICK = os.environ.get("TINYODL_QUICK") == "1"
print("quick" if QUICK else "full")
plt.plot([0, 1], [1, 0])
plt.show()
"""


def _notebook(folder: Path, code: str, name: str = "00_demo.ipynb") -> Path:
    path = folder / name
    path.write_text(to_ipynb(parse_percent(f"# %% [markdown]\n# # Demo\n\n# %%\n{code}")))
    return path


def _outputs(node) -> list[dict]:
    return [o for cell in node.cells for o in cell.get("outputs", [])]


@pytest.mark.notebook
def test_execution_keeps_figures_and_is_cached(tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = _notebook(tmp_path, CODE)
    cache = tmp_path / "cache"
    logged: list[str] = []
    full = executed_notebook(notebook, cache, "full", log=logged.append)
    outputs = _outputs(full)
    assert any("full" in "".join(o.get("text", "")) for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figure is an output"
    info = execution_info(full)
    assert info["configuration"] == "full" and info["seconds"] > 0
    assert cache_path(cache, notebook, "full").exists()
    assert len(logged) == 2  # executing ..., executed ...

    again = executed_notebook(notebook, cache, "full", log=logged.append)
    assert len(logged) == 2 and execution_info(again) == info  # from the cache

    assert executed_notebook(notebook, cache, "quick", execute=False) is None
    quick = executed_notebook(notebook, cache, "quick", log=logged.append)
    assert any("quick" in "".join(o.get("text", "")) for o in _outputs(quick))
    assert "the quick configuration, in" in describe(execution_info(quick))
    assert info["kernels"] in ("compiled", "numpy reference")
    assert describe(info).endswith(f"{info['kernels']} kernels")
    assert describe({}) == "not executed in this build"


def test_cache_key_follows_the_bytes_and_the_configuration(tmp_path):
    a = _notebook(tmp_path, "x = 1", "a.ipynb")
    b = _notebook(tmp_path, "x = 2", "b.ipynb")
    assert cache_key(a, "full") != cache_key(a, "quick")
    assert cache_key(a, "full") != cache_key(b, "full")
    assert cache_key(a, "full") == cache_key(a, "full")
    with pytest.raises(ValueError, match="configuration must be"):
        cache_key(a, "medium")


@pytest.mark.notebook
def test_a_failing_chapter_names_itself(tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = _notebook(tmp_path, "assert 1 + 1 == 3, 'the claim'", "07_broken.ipynb")
    with pytest.raises(ExecutionError, match="07_broken.ipynb failed to execute") as err:
        executed_notebook(notebook, tmp_path / "cache", "quick", log=lambda *a: None)
    assert not list((tmp_path / "cache").glob("*.ipynb"))
    # the summary the build prints: the failing line and the exception, without colours
    summary = error_summary(str(err.value))
    assert "assert 1 + 1 == 3" in summary and "AssertionError: the claim" in summary
    assert "\x1b" not in summary


def test_executed_once_waits_for_the_process_that_claimed_it(tmp_path):
    """Another worker (here a thread) holds the claim and stores the result: it is read,
    nothing is executed."""
    import os
    import threading

    import nbformat

    notebook = _notebook(tmp_path, "x = 1")
    cache = tmp_path / "cache"
    cache.mkdir()
    entry = cache_path(cache, notebook, "quick")
    claim = entry.with_name(entry.name + ".claim")
    claim.write_text(str(os.getpid()))  # alive: this process

    def other_worker():
        executed = nbformat.read(notebook, as_version=4)
        executed.cells[-1]["outputs"] = [nbformat.v4.new_output("stream", text="from gw1")]
        store(cache, notebook, executed, "quick", 1.5)
        claim.unlink()

    timer = threading.Timer(0.5, other_worker)
    timer.start()
    logged: list[str] = []
    node = executed_once(notebook, cache, "quick", poll=0.1, log=logged.append)
    timer.join()
    assert logged == [] and "from gw1" in _outputs(node)[0]["text"]
    assert execution_info(node)["seconds"] == 1.5


def test_executed_once_reads_a_result_stored_between_its_check_and_its_claim(tmp_path, monkeypatch):
    """The other worker stores its result and drops its claim after this process found no
    result but before it claimed the notebook (a thread switch there made the test above fail
    in a clean-clone CI run, stop 21): the result is read, nothing is executed twice."""
    import os

    import nbformat

    from tinyodl.course import execute

    notebook = _notebook(tmp_path, "x = 1")
    cache = tmp_path / "cache"
    cache.mkdir()
    entry = cache_path(cache, notebook, "quick")
    real_open = os.open

    def open_after_the_other_worker_finished(path, *args):
        if str(path).endswith(".claim") and not entry.exists():
            executed = nbformat.read(notebook, as_version=4)
            executed.cells[-1]["outputs"] = [nbformat.v4.new_output("stream", text="from gw1")]
            store(cache, notebook, executed, "quick", 1.5)  # and its claim is already gone
        return real_open(path, *args)

    monkeypatch.setattr(execute.os, "open", open_after_the_other_worker_finished)
    logged: list[str] = []
    node = executed_once(notebook, cache, "quick", poll=0.1, log=logged.append)
    assert logged == [] and "from gw1" in _outputs(node)[0]["text"]
    assert not entry.with_name(entry.name + ".claim").exists()  # the claim was let go


@pytest.mark.notebook
def test_executed_once_takes_over_a_dead_claim_and_remembers_a_failure(tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import subprocess
    import sys

    notebook = _notebook(tmp_path, "assert False, 'the claim'", "05_broken.ipynb")
    cache = tmp_path / "cache"
    cache.mkdir()
    entry = cache_path(cache, notebook, "quick")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    entry.with_name(entry.name + ".claim").write_text(dead)
    logged: list[str] = []
    with pytest.raises(ExecutionError, match="05_broken.ipynb failed to execute"):
        executed_once(notebook, cache, "quick", poll=0.1, log=logged.append)
    assert len(logged) == 1  # executing ...
    assert not entry.with_name(entry.name + ".claim").exists()
    with pytest.raises(ExecutionError, match="the claim"):  # from the stored failure
        executed_once(notebook, cache, "quick", poll=0.1, log=logged.append)
    assert len(logged) == 1
