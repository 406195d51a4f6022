"""The compiled element-wise kernels (kernels/elementwise.pyx) against the numpy reference.

Bit-exact for every element-wise function, on one and on two OpenMP threads, on sizes that
stay on one thread and sizes cut into blocks with a remainder; the bias gradient (a sum in
another order) to float tolerance, and the same bits for any thread count.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tinyodl.reference import elementwise as ref

fast = pytest.importorskip("tinyodl._kernels.elementwise")

# -inf * 0 (ReLU of -inf, as numpy computes it) is a NaN with an "invalid value" warning
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

BLOCK = fast.BLOCK
SIZES = [0, 1, 7, BLOCK - 1, 2 * BLOCK + 5, 5 * BLOCK + 333]
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    fast.set_num_threads(request.param)
    yield request.param
    fast.set_num_threads(1)


def _data(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(dtype)
    if n > 4:  # the special values: zeros of both signs, a NaN, an infinity
        x[:4] = [0.0, -0.0, np.nan, -np.inf]
    return x


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_forward_and_backward_are_bit_exact(n, dtype, threads):
    x = _data(n, dtype).reshape(-1, 1) if n else _data(n, dtype)
    y, mask = fast.relu_forward(x)
    y_ref, mask_ref = ref.relu_forward(x)
    _same_bits(y, y_ref)
    _same_bits(mask, mask_ref)
    dout = _data(x.size, dtype, seed=1).reshape(x.shape)
    _same_bits(fast.relu_backward(dout, mask), ref.relu_backward(dout, mask_ref))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_into_and_fill_zeros_are_bit_exact(n, dtype, threads):
    a, b = _data(n, dtype), _data(n, dtype, seed=2)
    a_ref = a.copy()
    fast.add_into(a, b)
    ref.add_into(a_ref, b)
    _same_bits(a, a_ref)
    fast.fill_zeros(a)
    assert not a.any() and not np.signbit(a).any()


@pytest.mark.parametrize("n", [1, 2 * BLOCK + 5])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "momentum, weight_decay, nesterov",
    [
        (0.0, 0.0, False),
        (0.9, 0.0, False),
        (0.9, 5e-4, False),
        (0.5, 1e-2, True),
        (0.0, 0.1, False),
    ],
)
def test_sgd_update_is_bit_exact_over_steps(n, dtype, momentum, weight_decay, nesterov, threads):
    rng = np.random.default_rng(3)
    w = rng.standard_normal(n).astype(dtype)
    w_ref = w.copy()
    buf = np.empty_like(w) if momentum else None
    buf_ref = np.empty_like(w) if momentum else None
    for step in range(3):
        g = rng.standard_normal(n).astype(dtype)
        args = (0.0137, momentum, weight_decay, nesterov, step == 0)
        fast.sgd_update(w, g, buf, *args)
        ref.sgd_update(w_ref, g, buf_ref, *args)
        _same_bits(w, w_ref)
        if momentum:
            _same_bits(buf, buf_ref)


def test_sgd_update_matches_the_optimizer_rule_written_out():
    # the reference is PyTorch's rule; check it once against the formula, in float64
    rng = np.random.default_rng(4)
    w, g1, g2 = (rng.standard_normal(10) for _ in range(3))
    lr, m, wd = 0.1, 0.9, 0.01
    w_ref, buf = w.copy(), np.empty(10)
    ref.sgd_update(w_ref, g1, buf, lr, m, wd, True, True)
    ref.sgd_update(w_ref, g2, buf, lr, m, wd, True, False)
    b = g1 + wd * w
    w1 = w - lr * (g1 + wd * w + m * b)
    b2 = m * b + g2 + wd * w1
    w2 = w1 - lr * (g2 + wd * w1 + m * b2)
    np.testing.assert_allclose(w_ref, w2, rtol=1e-12)


def test_sgd_update_without_a_buffer_for_momentum_is_refused():
    w = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="needs a buffer"):
        fast.sgd_update(w, w.copy(), None, 0.1, 0.9)


@pytest.mark.parametrize(
    "shape", [(5, 3), (32, 10), (4, 3, 5, 7), (32, 32, 28, 28), (2, 1, 1, 1), (0, 4), (3, 0)]
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_grad_matches_to_tolerance_and_not_the_thread_count(shape, dtype):
    dout = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    results = []
    for t in (1, 2):
        fast.set_num_threads(t)
        results.append(fast.bias_grad(dout))
    fast.set_num_threads(1)
    _same_bits(results[0], results[1])
    want = ref.bias_grad(dout)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(results[0], want, rtol=tol, atol=tol * np.sqrt(dout.size + 1))


def test_other_layouts_go_to_the_reference():
    # non-contiguous, mixed dtypes, numpy scalars: same results as the reference
    x = np.random.default_rng(6).standard_normal((6, 8)).astype(np.float32)[:, ::2]
    for (y, m), (yr, mr) in [(fast.relu_forward(x), ref.relu_forward(x))]:
        _same_bits(y, yr)
        _same_bits(m, mr)
    _same_bits(fast.bias_grad(x), ref.bias_grad(x))
    w, w_ref = np.ones(4, np.float32), np.ones(4, np.float32)
    g = np.full(4, 0.3, np.float32)
    fast.sgd_update(w, g, None, np.float64(0.1))  # a float64 scalar: numpy promotes
    ref.sgd_update(w_ref, g, None, np.float64(0.1))
    _same_bits(w, w_ref)
    with pytest.raises(ValueError, match="mask has shape"):
        fast.relu_backward(np.zeros(3), np.zeros(4, bool))
    with pytest.raises(ValueError, match="at least 2 dims"):
        fast.bias_grad(np.zeros(3))


def test_threads_are_validated():
    with pytest.raises(ValueError, match=">= 1"):
        fast.set_num_threads(0)


def test_every_combination_of_flags_runs_on_two_threads():
    # a smoke check that no flag combination takes a different code path on two threads
    n = 2 * BLOCK + 1
    for m, wd, nes, first in itertools.product((0.0, 0.9), (0.0, 0.1), (False, True), (0, 1)):
        if nes and not m:
            continue
        w = np.linspace(-1, 1, n, dtype=np.float32)
        outs = []
        for t in (1, 2):
            fast.set_num_threads(t)
            wt, buf = w.copy(), (np.full(n, 0.5, np.float32) if m else None)
            fast.sgd_update(wt, w[::-1].copy(), buf, 0.05, m, wd, nes, bool(first))
            outs.append(wt)
        fast.set_num_threads(1)
        _same_bits(outs[0], outs[1])
