"""Batch-normalisation kernels (kernels/norm.pyx) against the numpy reference, both modes."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl.reference import norm as ref

fast = pytest.importorskip("tinyodl._kernels.norm", reason="compiled kernels not built")


@pytest.mark.parametrize("shape", [(5, 3), (4, 6, 7), (2, 5, 3, 4), (3, 16, 14, 14), (1, 2, 1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_matches_reference(shape, dtype, train):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    c = shape[1]
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    rm, rv = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    got = fast.batchnorm_forward(x, gamma, beta, 1e-5, train, rm, rv)
    want = ref.batchnorm_forward(x, gamma, beta, 1e-5, train, rm, rv)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g, w, **tol)
    dout = rng.standard_normal(shape).astype(dtype)
    for x_hat in (want[1], None if not train else want[1]):
        got = fast.batchnorm_backward(dout, x_hat, gamma, want[2], train)
        want_b = ref.batchnorm_backward(dout, x_hat, gamma, want[2], train)
        for g, w in zip(got, want_b, strict=True):
            if w is None:
                assert g is None
            else:
                np.testing.assert_allclose(g, w, **tol)


def test_frozen_gamma_in_eval_needs_no_x_hat_and_errors_match():
    x = np.ones((2, 3, 2, 2), np.float32)
    g, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    dx, dgamma, dbeta = fast.batchnorm_backward(x, None, g, np.ones(3, np.float32), False)
    assert dgamma is None and np.array_equal(dbeta, np.full(3, 8, np.float32))
    for mod in (fast, ref):
        with pytest.raises(ValueError, match="evaluation mode needs running_mean"):
            mod.batchnorm_forward(x, g, b, train=False)
        with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
            mod.batchnorm_forward(x, g[:2], b)
        with pytest.raises(ValueError, match="training mode needs x_hat"):
            mod.batchnorm_backward(x, None, g, np.ones(3, np.float32), True)
