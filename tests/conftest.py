"""Shared pytest fixtures: backend parametrization and optional oracles."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from gradcheck_utils import float_backend_params, load_float_kernels

from tinyodl import backend

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
    """A cache of executed chapter notebooks (:mod:`tinyodl.course.execute`): the notebook
    tests fill it, the site test (``tests/test_site.py``) builds the website from it."""
    return tmp_path_factory.mktemp("executed-chapters")


def pytest_collection_modifyitems(config, items):
    skip_torch = pytest.mark.skip(reason="PyTorch is not installed (oracle tests)")
    for item in items:
        if "torch" in item.keywords and not HAS_TORCH:
            item.add_marker(skip_torch)
