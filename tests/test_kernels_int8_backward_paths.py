"""The compiled int8 backward's own paths (``kernels/int8_backward.pyx``, chapter 03).

The int8 backward passes are float32 convolutions of integer operands read as numbers.
The compiled module reads the int8 operand where it is used instead of converting it first:

* depthwise ``dx`` in gather form and depthwise ``dW`` from int8 phase planes
  (``kernels/simd/float_dw.h``) must give the *bits* of conv.pyx's float32 kernels on
  ``float(W_q)`` and ``float(x_q - zp)`` (same operations, same order);
* the ``dW`` of a convolution without groups from each image's phase planes
  (``kernels/simd/float_s8c.h``, AVX-512 builds) and the pointwise ``dW`` by panels or by
  blocks of pixels (``kernels/simd/float_s8a.h``) sum in their own order: they must match
  the float64 reference, and give bits that do not depend on the thread count or on which
  filters are asked for (the sparse-update engine asks for a few).

Shapes cross every edge of these paths: strides 1, 2, 3 and mixed, asymmetric and
oversized padding, rows of more than 16 and 32 values, planes of more than 256 pixels,
channel and filter counts that are not multiples of the register tile.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl._shapes import conv_output_shape, padding4, pair

kb = pytest.importorskip("tinyodl._kernels.int8_backward")
conv = pytest.importorskip("tinyodl._kernels.conv")
from tinyodl.reference import int8_backward as ref  # noqa: E402

RTOL = 2e-5


def _s8(rng, shape, lo=-128):
    return rng.integers(lo, 128, shape).astype(np.int8)


def _dout(rng, x_shape, f, kernel, stride, padding):
    oh, ow = conv_output_shape(x_shape, kernel, pair(stride), padding4(padding))
    return rng.normal(size=(x_shape[0], f, oh, ow)).astype(np.float32)


@pytest.fixture()
def threads():
    """Run a body on 1 and then 2 OpenMP threads; restore 1."""
    yield (1, 2)
    kb.set_num_threads(1)


DEPTHWISE = [  # (N, C, H, W, (KH, KW), stride, padding)
    (2, 3, 14, 14, (3, 3), 1, 1),
    (2, 5, 14, 14, (3, 3), 2, 1),
    (1, 4, 9, 31, (5, 5), 2, 2),  # rows of 17..32 values: two-register permutation
    (1, 2, 17, 40, (3, 3), 2, 1),  # rows of more than 32: widened then copied
    (2, 3, 7, 9, (3, 3), 3, (0, 1, 2, 0)),  # stride 3, asymmetric padding
    (1, 3, 6, 5, (2, 3), (2, 1), 3),  # padding wider than the kernel
    (3, 2, 1, 1, (1, 1), 1, 0),
    (1, 2, 33, 20, (7, 7), 1, 3),
]


@pytest.mark.parametrize("case", DEPTHWISE, ids=[str(i) for i in range(len(DEPTHWISE))])
def test_depthwise_int8_backward_has_the_bits_of_the_float_kernels(rng, threads, case):
    n, c, h, w, k, stride, padding = case
    x, wq = _s8(rng, (n, c, h, w)), _s8(rng, (c, 1, *k), -127)
    dout = _dout(rng, x.shape, c, k, stride, padding)
    zp = 11
    want_dx = conv.conv2d_backward_input(dout, wq.astype(np.float32), x.shape, stride, padding, c)
    xf = (x.astype(np.int32) - zp).astype(np.float32)
    want_dw = conv.conv2d_backward_weight(dout, xf, wq.shape, stride, padding, c)
    for t in threads:
        kb.set_num_threads(t)
        dx = kb.conv2d_s8_backward_input(dout, wq, x.shape, stride, padding, c)
        dw = kb.conv2d_s8_backward_weight(dout, x, zp, wq.shape, stride, padding, c)
        assert np.array_equal(dx, want_dx), (t, np.abs(dx - want_dx).max())
        assert np.array_equal(dw, want_dw), (t, np.abs(dw - want_dw).max())


GROUPS1 = [  # (N, C, H, W, F, (KH, KW), stride, padding)
    (2, 5, 13, 11, 37, (3, 3), 1, 1),  # F: one full panel of 32 and 5
    (2, 3, 12, 12, 70, (5, 5), 2, 2),
    (1, 1, 28, 28, 6, (5, 5), 1, 0),  # a first layer: K = 25 rows, 6 filters
    (3, 4, 7, 6, 16, (3, 2), (1, 2), (1, 0, 2, 1)),
    (2, 3, 9, 9, 40, (1, 1), 1, 0),  # pointwise with F > C: converted input and BLAS
]


@pytest.mark.parametrize("case", GROUPS1, ids=[str(i) for i in range(len(GROUPS1))])
def test_conv_weight_grad_from_phase_planes(rng, threads, case):
    n, c, h, w, f, k, stride, padding = case
    x = _s8(rng, (n, c, h, w))
    dout = _dout(rng, x.shape, f, k, stride, padding)
    want = ref.conv2d_s8_backward_weight(dout, x, -7, (f, c, *k), stride, padding)
    got = []
    for t in threads:
        kb.set_num_threads(t)
        got.append(kb.conv2d_s8_backward_weight(dout, x, -7, (f, c, *k), stride, padding))
        np.testing.assert_allclose(got[-1], want, rtol=RTOL, atol=1e-6 * np.abs(want).max())
    if not kb.CONV_WEIGHT_PLANES or k == (1, 1):
        return  # im2col + BLAS (converted input): its bits depend on the GEMM's shape
    assert np.array_equal(got[0], got[1])
    kb.set_num_threads(1)
    rows = [0, 1, f // 2, f - 1]
    part = kb.conv2d_s8_backward_weight(
        np.ascontiguousarray(dout[:, rows]), x, -7, (len(rows), c, *k), stride, padding
    )
    assert np.array_equal(part, got[0][rows])


POINTWISE = [  # (N, C, H, W, F) with F <= C
    (8, 96, 7, 7, 24),
    (3, 50, 17, 16, 17),  # 272 pixels an image: a plane cut into blocks
    (40, 33, 3, 3, 33),  # images grouped into blocks
    (2, 70, 31, 29, 9),
    (1, 9, 1, 1, 1),
]


@pytest.mark.parametrize("shape", POINTWISE, ids=[str(i) for i in range(len(POINTWISE))])
def test_pointwise_weight_grad_blocks_and_panels(rng, threads, shape):
    n, c, h, w, f = shape
    x = _s8(rng, (n, c, h, w))
    dout = rng.normal(size=(n, f, h, w)).astype(np.float32)
    want = ref.conv2d_s8_backward_weight(dout, x, 4, (f, c, 1, 1))
    got = []
    for t in threads:
        kb.set_num_threads(t)
        got.append(kb.conv2d_s8_backward_weight(dout, x, 4, (f, c, 1, 1)))
        np.testing.assert_allclose(got[-1], want, rtol=RTOL, atol=1e-6 * np.abs(want).max())
    if not kb.POINTWISE_DX_IN_PLACE:
        return  # no SIMD float tiles in this build: converted input and BLAS
    assert np.array_equal(got[0], got[1])
    kb.set_num_threads(1)
    rows = sorted({0, f - 1})
    part = kb.conv2d_s8_backward_weight(np.ascontiguousarray(dout[:, rows]), x, 4,
                                        (len(rows), c, 1, 1))  # fmt: skip
    assert np.array_equal(part, got[0][rows])


def test_same_conv_input_grad_has_the_bits_of_the_float_kernel(rng):
    """The implicit-GEMM dx builds its flipped filters from W_q: the float kernel's bits."""
    x_shape, wq = (2, 16, 9, 10), _s8(rng, (12, 16, 3, 3), -127)
    dout = rng.normal(size=(2, 12, 9, 10)).astype(np.float32)
    got = kb.conv2d_s8_backward_input(dout, wq, x_shape, 1, 1)
    want = conv.conv2d_backward_input(dout, wq.astype(np.float32), x_shape, 1, 1)
    assert np.array_equal(got, want)


def test_remembered_geometry_still_checks_bad_arguments(rng):
    """The compiled module remembers the geometry of shapes it has seen (plain ints only):
    the same shapes with a bad argument must still raise the checks' errors."""
    x, wq = _s8(rng, (1, 4, 6, 6)), _s8(rng, (4, 1, 3, 3), -127)
    dout = rng.normal(size=(1, 4, 6, 6)).astype(np.float32)
    kb.conv2d_s8_backward_weight(dout, x, 0, wq.shape, 1, 1, 4)
    kb.conv2d_s8_backward_input(dout, wq, x.shape, 1, 1, 4)
    with pytest.raises(ValueError, match="groups"):
        kb.conv2d_s8_backward_weight(dout, x, 0, wq.shape, 1, 1, True)
    with pytest.raises(ValueError, match="groups"):
        kb.conv2d_s8_backward_input(dout, wq, x.shape, 1, 1, 4.0)
    with pytest.raises(ValueError, match="dout"):
        kb.conv2d_s8_backward_input(dout, wq, x.shape, 2, 1, 4)
