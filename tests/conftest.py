"""Shared pytest fixtures: backend parametrization and optional oracles."""

from __future__ import annotations

import importlib.util
import os

# One BLAS / OpenMP thread per test process: pytest-xdist already runs one worker per core,
# and a multi-threaded OpenBLAS on tiny GEMMs is 10-30x slower on a busy machine. Set before
# numpy loads its BLAS; inherited by the notebook kernels and grading processes the tests
# start. Tests that measure threading set their own thread counts.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gradcheck_utils import float_backend_params, load_float_kernels  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from tinyodl import backend  # noqa: E402

# In this process numpy may have been imported (with its BLAS) before this file ran, and the
# compiled kernels bring SciPy's own OpenBLAS: load them, then limit every BLAS to one thread.
backend.cython_available()
_BLAS_LIMITS = threadpool_limits(limits=1)

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _backend_params():
    params = [pytest.param("numpy", id="numpy")]
    marks = [] if backend.cython_available() else [pytest.mark.skip(reason="kernels not built")]
    params.append(pytest.param("cython", id="cython", marks=marks))
    return params


@pytest.fixture(params=_backend_params())
def backend_name(request):
    """Run the test once per backend, with that backend active."""
    with backend.use_backend(request.param):
        yield request.param


@pytest.fixture
def kernels(backend_name):
    """The kernel namespace of the backend under test."""
    return backend.implementation(backend_name)


@pytest.fixture(scope="module", params=float_backend_params())
def fk(request):
    """Float kernel namespace (conv, linear, pool) of the backend under test."""
    return load_float_kernels(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def executed_chapters(tmp_path_factory):
    """A cache of executed chapter notebooks (:mod:`tinyodl.course.execute`), shared by all
    pytest-xdist workers of the session: each chapter executes once
    (:func:`~tinyodl.course.execute.executed_once`), in the notebook test or in the site test
    (``tests/test_site.py``), whichever asks first."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # basetemp/popen-gwN: share their parent
        folder = tmp_path_factory.getbasetemp().parent / "executed-chapters"
        folder.mkdir(exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("executed-chapters")


def pytest_collection_modifyitems(config, items):
    skip_torch = pytest.mark.skip(reason="PyTorch is not installed (oracle tests)")
    for item in items:
        if "torch" in item.keywords and not HAS_TORCH:
            item.add_marker(skip_torch)


# The reference oracles of the test extra (GUIDE section 5). CI sets TINYODL_REQUIRE_ORACLES=1
# so that a missing oracle fails the run instead of silently skipping its tests.
ORACLES = (
    "torch",
    "sklearn",
    "opacus",
    "dp_accounting",
    "art",
    "flwr",
    "onnx",
    "onnxruntime",
    "ai_edge_litert",
    "river",
)


def pytest_sessionstart(session):
    if os.environ.get("TINYODL_REQUIRE_ORACLES") != "1":
        return
    missing = [name for name in ORACLES if importlib.util.find_spec(name) is None]
    if missing:
        raise pytest.UsageError(
            f"TINYODL_REQUIRE_ORACLES=1 but these oracles are not installed: {', '.join(missing)}"
        )
