"""The teaching GEMM (kernels/gemm_steps.pyx): every step is the exact int8 product."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

steps = pytest.importorskip("tinyodl._kernels.gemm_steps", reason="compiled kernels not built")


def exact(a, b):
    return a.astype(np.int64) @ b.astype(np.int64)


@pytest.mark.parametrize("name", steps.STEPS)
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 0, 4), (4, 4, 16), (5, 7, 33), (65, 130, 70)])
def test_each_step_is_exact(name, m, k, n):
    rng = np.random.default_rng(m + k + n)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    got = getattr(steps, name)(a, b)
    assert got.dtype == np.int32 and np.array_equal(got, exact(a, b))


@given(m=st.integers(1, 12), k=st.integers(1, 70), n=st.integers(1, 40), seed=st.integers(0, 999))
@settings(max_examples=20, deadline=None)
def test_steps_agree_on_any_shape(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    want = exact(a, b)
    for name in steps.STEPS:
        assert np.array_equal(getattr(steps, name)(a, b), want), name


def test_extreme_values_and_threads():
    k = 2**31 // (128 * 128) - 1  # the longest K whose sums cannot overflow int32
    a = np.full((3, k), -128, np.int8)
    b = np.full((k, 5), -128, np.int8)
    b[:, 1] = 127
    steps.set_num_threads(2)
    try:
        for name in ("register_tiled", "widened", "threaded"):
            assert np.array_equal(getattr(steps, name)(a, b), exact(a, b)), name
    finally:
        steps.set_num_threads(1)
    with pytest.raises(ValueError, match="overflow"):
        steps.reference(np.zeros((1, k + 1), np.int8), np.zeros((k + 1, 1), np.int8))
    with pytest.raises(TypeError, match="int8"):
        steps.blocked(np.zeros((2, 2)), np.zeros((2, 2)))
