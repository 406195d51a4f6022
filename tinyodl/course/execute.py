"""Execute chapter notebooks for the site, with a cache keyed by their content.

The committed ``chapters/NN_name.ipynb`` have no outputs (the ``.py`` is the source; the tests
keep them stripped). The site shows them *executed*: :func:`executed_notebook` runs one in a
fresh kernel (nbclient, figures embedded by matplotlib's inline backend) in a temporary
folder, and stores the result in a cache folder under a key made of the notebook's bytes and
the configuration (``"full"``, or ``"quick"`` for ``TINYODL_QUICK=1``, the smaller runs of
``docs/contributing.md``). A later build with the same notebook and configuration reads the
cache and executes nothing; an edited notebook gets a new key. The library's code is *not*
part of the key: after changing ``tinyodl`` itself, rebuild with ``--force`` (or delete the
cache folder).

The test suite executes every chapter once (``tests/test_notebooks.py``) and stores it here
with :func:`store`, so the site test reuses those runs instead of executing them again.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path

#: The two configurations a chapter can run in (docs/contributing.md).
CONFIGURATIONS = ("full", "quick")
#: Seconds a single cell may take before the execution is abandoned.
CELL_TIMEOUT = 1800
#: Notebook metadata key where the execution's facts are recorded.
META_KEY = "tinyodl_execution"
#: matplotlib's inline backend: figures become ``image/png`` outputs of the notebook.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


class ExecutionError(RuntimeError):
    """A chapter notebook failed to execute; the message names it and the failing cell."""


def cache_key(notebook: str | Path, configuration: str) -> str:
    """Hex key of ``notebook``'s bytes in ``configuration`` ("full" or "quick")."""
    if configuration not in CONFIGURATIONS:
        raise ValueError(f"configuration must be one of {CONFIGURATIONS}, got {configuration!r}")
    digest = hashlib.sha256(Path(notebook).read_bytes())
    digest.update(configuration.encode())
    return digest.hexdigest()[:20]


def cache_path(cache_dir: str | Path, notebook: str | Path, configuration: str) -> Path:
    """Where the executed ``notebook`` is (or would be) stored in ``cache_dir``."""
    stem = Path(notebook).stem
    return Path(cache_dir) / f"{stem}.{configuration}.{cache_key(notebook, configuration)}.ipynb"


def kernel_environment(configuration: str) -> dict[str, str]:
    """The environment of the kernel: inline figures, one BLAS thread, quick runs if asked."""
    env = dict(os.environ)
    env["MPLBACKEND"] = INLINE_BACKEND
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("TINYODL_QUICK", None)
    if configuration == "quick":
        env["TINYODL_QUICK"] = "1"
    return env


def store(cache_dir: str | Path, notebook: str | Path, executed, configuration: str, seconds):
    """Put an already executed notebook (an ``nbformat`` node) into the cache; return its path.

    Parameters
    ----------
    cache_dir : path
        The cache folder (created if needed).
    notebook : path
        The committed ``.ipynb`` that was executed (its bytes make the key).
    executed : nbformat.NotebookNode
        The executed notebook.
    configuration : {"full", "quick"}
        How it ran.
    seconds : float
        Wall-clock execution time, recorded in its metadata.
    """
    import nbformat

    from tinyodl import __version__
    from tinyodl.backend import cython_available
    from tinyodl.bench._common import cpu_model_and_flags

    executed.metadata[META_KEY] = {
        "configuration": configuration,
        "seconds": round(float(seconds), 1),
        "cpu": cpu_model_and_flags()[0],
        "cores": os.cpu_count(),
        "tinyodl": __version__,
        "kernels": "compiled" if cython_available() else "numpy reference",
    }
    target = cache_path(cache_dir, notebook, configuration)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        nbformat.write(executed, f)
    os.replace(tmp, target)
    return target


def execution_info(executed) -> dict:
    """What :func:`store` recorded about an executed notebook (empty if nothing)."""
    return dict(executed.metadata.get(META_KEY, {}))


def executed_notebook(
    notebook: str | Path,
    cache_dir: str | Path,
    configuration: str = "full",
    force: bool = False,
    execute: bool = True,
    log=print,
):
    """The executed notebook of ``notebook``, from the cache or by running it.

    Parameters
    ----------
    notebook : path
        A chapter's ``.ipynb``.
    cache_dir : path
        The cache folder.
    configuration : {"full", "quick"}
        ``"quick"`` sets ``TINYODL_QUICK=1``: the chapters' smaller runs.
    force : bool
        Execute even when the cache has it.
    execute : bool
        When false, never execute: return ``None`` if the cache does not have it.

    Returns
    -------
    nbformat.NotebookNode or None

    Raises
    ------
    ExecutionError
        If a cell raises (the chapters assert their claims, so this is a real failure).
    """
    import nbformat

    cached = cache_path(cache_dir, notebook, configuration)
    if cached.exists() and not force:
        return nbformat.read(cached, as_version=4)
    if not execute:
        return None
    import nbclient

    node = nbformat.read(notebook, as_version=4)
    log(f"executing {Path(notebook).name} ({configuration} configuration) ...")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinyodl-exec-") as cwd:
        client = nbclient.NotebookClient(
            node,
            timeout=CELL_TIMEOUT,
            kernel_name="python3",
            resources={"metadata": {"path": cwd}},
        )
        try:
            client.execute(env=kernel_environment(configuration))
        except nbclient.exceptions.CellExecutionError as err:
            raise ExecutionError(f"{Path(notebook).name} failed to execute:\n{err}") from None
    seconds = time.perf_counter() - start
    log(f"executed {Path(notebook).name} in {seconds:.0f} s")
    store(cache_dir, notebook, node, configuration, seconds)
    return node


def describe(info: dict) -> str:
    """One line about an execution: "the full configuration, in 16 s on <cpu> (2 cores)"."""
    if not info:
        return "not executed in this build"
    where = f" on {info['cpu']} ({info.get('cores', '?')} cores)" if info.get("cpu") else ""
    kernels = f", {info['kernels']} kernels" if info.get("kernels") else ""
    return (
        f"the {info.get('configuration', '?')} configuration, in {info['seconds']:g} s"
        f"{where}{kernels}"
    )


def error_summary(error: str) -> str:
    """The failing line and the exception of an :class:`ExecutionError`'s message, on one
    line, without the terminal colours of the traceback."""
    lines = [line.rstrip() for line in re.sub(r"\x1b\[[0-9;]*m", "", error).splitlines()]
    lines = [line for line in lines if line.strip()]
    arrow = [line.strip() for line in lines if re.match(r"\s*-+>\s", line)]
    last = lines[-1].strip() if lines else ""
    return " | ".join([*arrow[-1:], last]) if last else ""


def executed_once(
    notebook: str | Path,
    cache_dir: str | Path,
    configuration: str = "quick",
    poll: float = 1.0,
    log=print,
):
    """Like :func:`executed_notebook`, for several processes sharing ``cache_dir`` (the test
    suite's pytest-xdist workers): the first to ask executes the notebook, the others wait
    for its result, so each notebook runs once whoever needs it first.

    A process claims a notebook by creating ``<cache entry>.claim`` (exclusively, with its
    pid); a failure is stored as ``<cache entry>.failed.txt`` and raised again, as an
    :class:`ExecutionError`, for every process that asks. A claim whose process is gone is
    taken over.
    """
    target = cache_path(cache_dir, notebook, configuration)
    failed = target.with_name(target.name + ".failed.txt")
    claim = target.with_name(target.name + ".claim")
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        if target.exists():
            return executed_notebook(notebook, cache_dir, configuration, execute=False)
        if failed.exists():
            raise ExecutionError(failed.read_text(encoding="utf-8"))
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _claim_alive(claim):
                claim.unlink(missing_ok=True)
            else:
                time.sleep(poll)
            continue
        try:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            if target.exists():  # stored (and its claim let go) since the check above
                return executed_notebook(notebook, cache_dir, configuration, execute=False)
            try:
                return executed_notebook(notebook, cache_dir, configuration, force=True, log=log)
            except ExecutionError as err:
                failed.write_text(str(err), encoding="utf-8")
                raise
        finally:
            claim.unlink(missing_ok=True)


def _claim_alive(claim: Path) -> bool:
    """Whether the process that wrote ``claim`` still runs (a claim being written is alive)."""
    try:
        pid = int(claim.read_text(encoding="utf-8") or 0)
    except (OSError, ValueError):
        return claim.exists()
    if not pid:
        return claim.exists()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
