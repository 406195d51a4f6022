"""Chapter notebooks: each generated ``.ipynb`` matches its ``.py`` source and runs cleanly.

The ``.py`` (jupytext percent format) is the source of truth; ``scripts/sync_notebooks.py``
regenerates the ``.ipynb``. Executing a notebook is slow (a kernel per notebook, real
training), so those tests carry the ``notebook`` marker: ``pytest -m "not notebook"`` skips
them. The notebooks contain their own ``assert`` statements on the facts they compute
(gradient checks pass, backends agree, training reaches a stated accuracy, the analytic
memory model matches the measurement), so "runs without error" is a real check.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tinyodl.grading.notebook import read_notebook

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = REPO / "chapters"
SYNC_SCRIPT = REPO / "scripts" / "sync_notebooks.py"
CELL_TIMEOUT = 300  # seconds per cell; the whole chapter is meant to run in about a minute


def _load_sync_module():
    spec = importlib.util.spec_from_file_location("sync_notebooks", SYNC_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_notebooks = _load_sync_module()
SOURCES = sync_notebooks.chapter_sources(CHAPTERS)
IDS = [p.stem for p in SOURCES]


def test_chapters_exist():
    assert SOURCES, f"no chapter sources NN_*.py in {CHAPTERS}"


# ----------------------------------------------------------------------------- source <-> ipynb


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_ipynb_has_the_cells_of_its_source(source):
    target = source.with_suffix(".ipynb")
    assert target.exists(), f"{target.name} is missing; run python scripts/sync_notebooks.py"
    want = [(c.cell_type, c.source) for c in read_notebook(source).cells]
    have = [(c.cell_type, c.source) for c in read_notebook(target).cells]
    for i, (w, h) in enumerate(zip(want, have, strict=False)):
        assert h == w, (
            f"{target.name}: cell {i} differs from {source.name}; run python "
            f"scripts/sync_notebooks.py\n--- .py:\n{w[1][:300]}\n--- .ipynb:\n{h[1][:300]}"
        )
    assert len(have) == len(want), (
        f"{target.name} has {len(have)} cells, {source.name} has {len(want)}; "
        "run python scripts/sync_notebooks.py"
    )


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_ipynb_is_byte_identical_to_a_fresh_sync(source):
    """No outputs, execution counts or editor metadata were committed."""
    assert not sync_notebooks.is_stale(source), (
        f"{source.with_suffix('.ipynb').name} is not what scripts/sync_notebooks.py writes "
        "(saved outputs or metadata?); run python scripts/sync_notebooks.py"
    )


def _make_chapter(folder: Path, stem: str, code: str) -> Path:
    source = folder / f"{stem}.py"
    source.write_text(
        "# ---\n# jupyter:\n#   kernelspec:\n#     name: python3\n# ---\n\n"
        f"# %% [markdown]\n# # Title\n\n# %%\n{code}\n",
        encoding="utf-8",
    )
    return source


def test_sync_writes_missing_and_stale_notebooks_only(tmp_path):
    a = _make_chapter(tmp_path, "00_a", "x = 1")
    b = _make_chapter(tmp_path, "01_b", "y = 2")
    assert sync_notebooks.stale_notebooks(tmp_path) == [
        a.with_suffix(".ipynb"),
        b.with_suffix(".ipynb"),
    ]
    assert sync_notebooks.sync(tmp_path) == [a.with_suffix(".ipynb"), b.with_suffix(".ipynb")]
    assert sync_notebooks.stale_notebooks(tmp_path) == []
    first = b.with_suffix(".ipynb").read_bytes()
    assert sync_notebooks.sync(tmp_path) == []  # idempotent
    _make_chapter(tmp_path, "00_a", "x = 3")  # edit one source
    assert sync_notebooks.stale_notebooks(tmp_path) == [a.with_suffix(".ipynb")]
    assert sync_notebooks.sync(tmp_path) == [a.with_suffix(".ipynb")]
    assert b.with_suffix(".ipynb").read_bytes() == first
    assert "x = 3" in a.with_suffix(".ipynb").read_text(encoding="utf-8")


def test_sync_output_is_stripped_and_deterministic(tmp_path):
    import json

    source = _make_chapter(tmp_path, "00_a", "print('hi')")
    sync_notebooks.sync(tmp_path)
    text = source.with_suffix(".ipynb").read_text(encoding="utf-8")
    data = json.loads(text)
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert data["metadata"]["kernelspec"]["name"] == "python3"
    assert text == json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    assert sync_notebooks.expected_ipynb(source) == text


def test_check_mode_exit_status_lists_stale_files(tmp_path):
    source = _make_chapter(tmp_path, "00_a", "x = 1")
    cmd = [sys.executable, str(SYNC_SCRIPT), "--check", str(tmp_path)]
    stale = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert stale.returncode == 1
    assert "00_a.ipynb" in stale.stdout
    assert not source.with_suffix(".ipynb").exists()  # --check writes nothing
    sync_notebooks.sync(tmp_path)
    fresh = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert fresh.stdout == ""


# ----------------------------------------------------------------------------- execution


def execute_notebook(path: Path, cwd: Path):
    """Run the ``.ipynb`` at ``path`` top to bottom in a fresh ``python3`` kernel started in
    ``cwd`` and return the executed notebook; raise
    ``nbclient.exceptions.CellExecutionError`` at the first failing cell.

    The caller sets ``MPLBACKEND`` in the environment, which the kernel inherits.
    """
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},  # cwd: files it writes land here
    )
    client.execute()
    return notebook


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_notebook_runs_top_to_bottom(source, executed_chapters):
    """In the quick configuration (``TINYODL_QUICK=1``, docs/contributing.md): smaller runs,
    the same code paths and the same asserts, in a fresh kernel and a temporary folder.
    Figures stay in the outputs (the inline backend) and the executed notebook is kept for
    the site test (``tests/test_site.py``), which may have asked for it first: each chapter
    executes once per session (``tinyodl.course.execute.executed_once``)."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from tinyodl.course.execute import ExecutionError, executed_once

    try:
        executed_once(source.with_suffix(".ipynb"), executed_chapters, "quick", log=_quiet)
    except ExecutionError as err:
        pytest.fail(str(err), pytrace=False)


def _quiet(*args) -> None:
    pass


@pytest.mark.notebook
def test_execution_harness_reports_failures_and_runs_in_cwd(tmp_path, monkeypatch):
    """The harness itself: a failing assert is an error, files land in the given folder."""
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    good = _make_chapter(
        tmp_path,
        "00_good",
        "import os\nimport matplotlib\nassert matplotlib.get_backend().lower() == 'agg'\n"
        "open('written.txt', 'w').write(os.getcwd())",
    )
    bad = _make_chapter(tmp_path, "01_bad", "facts = [1, 2]\nassert sum(facts) == 4, 'claim'")
    sync_notebooks.sync(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    execute_notebook(good.with_suffix(".ipynb"), run_dir)
    assert Path((run_dir / "written.txt").read_text()).resolve() == run_dir.resolve()
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="claim"):
        execute_notebook(bad.with_suffix(".ipynb"), run_dir)
