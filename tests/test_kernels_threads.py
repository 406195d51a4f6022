"""Two OpenMP threads give the same float32 results as one, bit for bit (issue 8, target 5).

Every compiled float kernel of a ``cnn_mcmahan`` training step splits its work so that each
output element is computed by one thread in the same order whatever the thread count:
panels of pixels (implicit-GEMM conv), whole images (first-layer conv: im2col + register
tiles), blocks of rows x panels of columns (linear layers, conv weight gradient), planes
(pooling). So the step is bit-identical on 1 and 2 threads; each kernel is also held to the
numpy reference within float32 rounding.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from tinyodl import backend

pytestmark = pytest.mark.skipif(not backend.cython_available(), reason="compiled kernels not built")


def _on_threads(n, fn):
    backend.set_num_threads(n)
    try:
        return fn()
    finally:
        backend.set_num_threads(1)


def _kernel_cases(rng):
    from tinyodl._kernels import conv, linear, pool

    def r(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    x1, w1, b1, d1 = r(5, 1, 28, 28), r(32, 1, 5, 5), r(32), r(5, 32, 28, 28)
    x2, w2, d2 = r(5, 32, 14, 14), r(64, 32, 5, 5), r(5, 64, 14, 14)
    xl, wl, dl = r(5, 3136), r(512, 3136), r(5, 512)
    return {
        "conv1 forward": ("conv", conv.conv2d_forward, (x1, w1, b1, 1, 2)),
        "conv1 backward_input": ("conv", conv.conv2d_backward_input, (d1, w1, x1.shape, 1, 2)),
        "conv1 backward_weight": ("conv", conv.conv2d_backward_weight, (d1, x1, w1.shape, 1, 2)),
        "conv2 forward": ("conv", conv.conv2d_forward, (x2, w2, None, 1, 2)),
        "conv2 backward_input": ("conv", conv.conv2d_backward_input, (d2, w2, x2.shape, 1, 2)),
        "conv2 backward_weight": ("conv", conv.conv2d_backward_weight, (d2, x2, w2.shape, 1, 2)),
        "linear forward": ("linear", linear.linear_forward, (xl, wl, None)),
        "linear backward_input": ("linear", linear.linear_backward_input, (dl, wl)),
        "linear backward_weight": ("linear", linear.linear_backward_weight, (dl, xl)),
        "maxpool forward": ("pool", pool.maxpool2d_forward, (d2, 2, 2, 0, False)),
    }


def test_float_kernels_two_threads_bit_equal_and_close_to_reference():
    rng = np.random.default_rng(0)
    for name, (module, fn, args) in _kernel_cases(rng).items():
        one = _on_threads(1, lambda fn=fn, args=args: fn(*args))
        two = _on_threads(2, lambda fn=fn, args=args: fn(*args))
        one, two = (r if isinstance(r, tuple) else (r,) for r in (one, two))
        for a, b in zip(one, two, strict=True):
            assert np.array_equal(a, b), name
        ref_module = importlib.import_module(f"tinyodl.reference.{module}")
        want = getattr(ref_module, fn.__name__)(*args)
        want = want if isinstance(want, tuple) else (want,)
        np.testing.assert_allclose(one[0], want[0], rtol=1e-4, atol=1e-3, err_msg=name)


def test_cnn_mcmahan_step_two_threads_bit_equal():
    """Two SGD-momentum steps of cnn_mcmahan reach the same parameters on 1 and 2 threads."""
    from tinyodl import models
    from tinyodl.bench.train import batch_of
    from tinyodl.nn import SGD, softmax_cross_entropy

    x, y = batch_of(6, 0)
    params = []
    for threads in (1, 2):
        model = models.cnn_mcmahan(seed=0)
        opt = SGD(model, lr=0.01, momentum=0.9)

        def steps(model=model, opt=opt):
            for _ in range(2):
                opt.zero_grad()
                _, dlogits = softmax_cross_entropy(model.forward(x, train=True), y)
                model.backward(dlogits)
                opt.step()

        with backend.use_backend("cython"):
            _on_threads(threads, steps)
        params.append([p.data.copy() for p in model.parameters()])
    for a, b in zip(*params, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("path", ["portable", "avx2", "avx512_vnni"])
def test_linear_s8_threads_edge_cases_every_path(path):
    """linear_s8 on two threads (one OpenMP region: packing, sums and folded biases per panel,
    then the tiles): bit-exact with the reference when a folded bias leaves int32 (no fused
    tile) and when it leaves no room for the accumulator (saturating add); the weights'
    range is checked while packing, with the reference's error."""
    k8 = importlib.import_module("tinyodl._kernels.int8")
    ref = importlib.import_module("tinyodl.reference.int8")
    if path not in k8.simd_paths():
        pytest.skip(f"this CPU cannot run {path}")
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (70, 203), dtype=np.int8)
    w = rng.integers(-127, 128, (67, 203), dtype=np.int8)
    m0 = rng.integers(2**30, 2**31 - 1, 67).astype(np.int32)
    shift = rng.integers(-20, -8, 67).astype(np.int32)
    for bias_abs in (10**3, 2**31 - 2**20, 2**31 - 1):
        bias = (rng.choice([-1, 1], 67) * bias_abs).astype(np.int32)
        for rounding in ("double", "single"):
            args = (x, w, bias, 127, -5, m0, shift, -128, 127, rounding)
            want = ref.linear_s8(*args)
            old = k8.get_simd_path()
            try:
                k8.set_simd_path(path)
                backend.set_num_threads(2)
                got = k8.linear_s8(*args)
            finally:
                backend.set_num_threads(1)
                k8.set_simd_path(old)
            assert np.array_equal(got, want), (path, bias_abs, rounding)
    bad = w.copy()
    bad[66, 202] = -128  # in the last panel, at the last k
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        _on_threads(2, lambda: k8.linear_s8(x, bad, None, 0, 0, m0, shift))


def test_maxpool_backward_checks_argmax_range_on_threads():
    """The argmax range is checked inside the threaded loop (no serial min/max pass): an
    index below 0 or past the plane is refused with the reference's error, never written."""
    from tinyodl._kernels import pool

    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 6, 8, 8)).astype(np.float32)
    out, argmax = pool.maxpool2d_forward(x, 2)
    for bad_value in (-1, 64):
        bad = argmax.copy()
        bad[3, 5, 3, 3] = bad_value
        with pytest.raises(ValueError, match=r"argmax entries must lie in \[0, 64\)"):
            _on_threads(2, lambda bad=bad: pool.maxpool2d_backward(out, bad, x.shape))
    want = importlib.import_module("tinyodl.reference.pool").maxpool2d_backward(
        out, argmax, x.shape
    )
    assert np.array_equal(
        _on_threads(2, lambda: pool.maxpool2d_backward(out, argmax, x.shape)), want
    )
