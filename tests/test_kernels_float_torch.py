"""Float kernels against PyTorch as an independent oracle (skipped without torch)."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck_utils import assert_close

pytestmark = pytest.mark.torch

DTYPES = [np.float32, np.float64]

CONV_CASES = [  # (N, C, H, W, F, (KH, KW), stride, padding, groups)
    (2, 4, 7, 6, 6, (3, 2), 1, 0, 1),
    (2, 4, 9, 8, 6, (3, 3), 2, 1, 2),
    (1, 3, 9, 9, 5, (3, 3), 3, (2, 1), 1),
    (2, 8, 8, 8, 8, (3, 3), 1, 1, 8),  # depthwise
    (1, 8, 9, 9, 8, (5, 5), 2, 2, 8),  # depthwise 5x5 stride 2 (MobileNet/MCUNet)
    (2, 16, 5, 5, 8, (1, 1), 1, 0, 1),  # pointwise
]
POOL_CASES = [
    ((2, 3, 7, 6), 3, 2, 1),
    ((1, 2, 6, 6), 2, None, 0),
    ((2, 2, 8, 7), (3, 2), (1, 2), (1, 1)),
]


def _tensor(a):
    import torch

    return torch.tensor(a, requires_grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_against_torch(fk, case, dtype):
    torch = pytest.importorskip("torch")
    n, c, h, w, f, k, stride, padding, groups = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c // groups, *k)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    xt, wtt, bt = _tensor(x), _tensor(wt), _tensor(b)
    out_t = torch.nn.functional.conv2d(xt, wtt, bt, stride=stride, padding=padding, groups=groups)
    dout = rng.standard_normal(tuple(out_t.shape)).astype(dtype)
    out_t.backward(torch.tensor(dout))
    kw = dict(stride=stride, padding=padding, groups=groups)
    assert_close(fk.conv2d_forward(x, wt, b, **kw), out_t.detach().numpy(), "forward")
    assert_close(fk.conv2d_backward_input(dout, wt, x.shape, **kw), xt.grad.numpy(), "dx")
    assert_close(fk.conv2d_backward_weight(dout, x, wt.shape, **kw), wtt.grad.numpy(), "dw")


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_against_torch(fk, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 9)).astype(dtype)
    w = rng.standard_normal((4, 9)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    xt, wt, bt = _tensor(x), _tensor(w), _tensor(b)
    out_t = torch.nn.functional.linear(xt, wt, bt)
    dout = rng.standard_normal((6, 4)).astype(dtype)
    out_t.backward(torch.tensor(dout))
    assert_close(fk.linear_forward(x, w, b), out_t.detach().numpy())
    assert_close(fk.linear_backward_input(dout, w), xt.grad.numpy())
    assert_close(fk.linear_backward_weight(dout, x), wt.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_against_torch(fk, case, dtype):
    torch = pytest.importorskip("torch")
    shape, k, s, p = case
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    xt = _tensor(x)
    out_t, idx_t = torch.nn.functional.max_pool2d(xt, k, s, p, return_indices=True)
    dout = rng.standard_normal(tuple(out_t.shape)).astype(dtype)
    out_t.backward(torch.tensor(dout))
    out, argmax = fk.maxpool2d_forward(x, k, s, p)
    assert_close(out, out_t.detach().numpy())
    assert np.array_equal(argmax, idx_t.numpy())  # no ties in random data
    assert_close(fk.maxpool2d_backward(dout, argmax, shape), xt.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_avgpool_against_torch(fk, case, dtype):
    torch = pytest.importorskip("torch")
    shape, k, s, p = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    xt = _tensor(x)
    out_t = torch.nn.functional.avg_pool2d(xt, k, s, p, count_include_pad=True)
    dout = rng.standard_normal(tuple(out_t.shape)).astype(dtype)
    out_t.backward(torch.tensor(dout))
    assert_close(fk.avgpool2d_forward(x, k, s, p), out_t.detach().numpy())
    assert_close(fk.avgpool2d_backward(dout, shape, k, s, p), xt.grad.numpy())
