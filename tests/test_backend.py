"""The backend switch: both backends expose the same kernels with the same signatures."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

from tinyodl import backend, ops


def test_compiled_kernels_are_built_when_required():
    # .ci/run sets TINYODL_REQUIRE_CYTHON=1 so CI cannot pass on the numpy fallback alone.
    if not os.environ.get("TINYODL_REQUIRE_CYTHON"):
        pytest.skip("TINYODL_REQUIRE_CYTHON not set")
    assert backend.cython_available(), "compiled kernels missing; run `pip install -e .`"
    assert backend.get_backend() == "cython"


@pytest.mark.parametrize("module_name", sorted(backend.KERNELS))
def test_backends_share_signatures(module_name):
    if not backend.cython_available():
        pytest.skip("kernels not built")
    ref = backend.implementation("numpy")
    fast = backend.implementation("cython")
    for name in backend.KERNELS[module_name]:
        sig_ref = inspect.signature(getattr(ref, name))
        sig_fast = inspect.signature(getattr(fast, name))
        assert list(sig_ref.parameters) == list(sig_fast.parameters), name
        for p_ref, p_fast in zip(
            sig_ref.parameters.values(), sig_fast.parameters.values(), strict=True
        ):
            assert p_ref.default == p_fast.default, f"{name}({p_ref.name}=...)"


def test_ops_follows_the_active_backend():
    with backend.use_backend("numpy"):
        assert ops.conv2d_forward is backend.implementation("numpy").conv2d_forward
    if backend.cython_available():
        with backend.use_backend("cython"):
            assert ops.conv2d_forward is backend.implementation("cython").conv2d_forward


def test_use_backend_restores_previous_choice():
    before = backend.get_backend()
    with backend.use_backend("numpy"):
        assert backend.get_backend() == "numpy"
    assert backend.get_backend() == before


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(backend.BackendError, match="unknown backend 'fortran'"):
        backend.set_backend("fortran")
    with pytest.raises(AttributeError, match="no attribute 'conv3d_forward'"):
        ops.conv3d_forward  # noqa: B018


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    full_env.pop("TINYODL_BACKEND", None)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_environment_variable_selects_backend():
    res = _run("import tinyodl; print(tinyodl.get_backend())", TINYODL_BACKEND="numpy")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "numpy"
    res = _run("import tinyodl; tinyodl.get_backend()", TINYODL_BACKEND="fortran")
    assert res.returncode != 0
    assert "TINYODL_BACKEND='fortran'" in res.stderr


def test_missing_extension_falls_back_once_with_a_hint():
    # Hide the compiled modules as if they had never been built.
    code = (
        "import sys, warnings\n"
        "for m in ['conv','linear','pool','int8','int8_backward']:\n"
        "    sys.modules['tinyodl._kernels.' + m] = None\n"
        "warnings.simplefilter('always')\n"
        "import tinyodl\n"
        "from tinyodl import ops\n"
        "print(tinyodl.get_backend())\n"
        "ops.linear_forward\n"
        "print(tinyodl.get_backend())\n"
    )
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["numpy", "numpy"]
    assert res.stderr.count("pip install -e .") == 1
