"""The float32 SIMD paths of the compiled kernels equal the numpy reference.

The generic tests (``test_kernels_float_conv.py``) use small channel counts, below the
thresholds where ``kernels/conv.pyx`` and ``kernels/linear.pyx`` switch to the register-tiled
micro-kernels of ``kernels/simd/float_gemm.h`` and ``float_linear.h``. These shapes cross
them: the implicit-GEMM "same" convolution (C*KH*KW >= 64) and its backward-input twin
(flipped filters), the tiled weight gradient (C*KH*KW >= 256, F >= NR/2; pointwise without
im2col too) and the tiled linear forward (batches up to 128 that fill their panels), each
with ragged edges (F not a multiple of MR, pixels not a multiple of NR), on 1 and 2 threads.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck_utils import assert_close, cython_float_kernels_built, load_float_kernels

from tinyodl._shapes import conv_output_shape

pytestmark = pytest.mark.skipif(
    not cython_float_kernels_built(), reason="compiled float kernels not built"
)


def _tile():
    tile = load_float_kernels("cython").conv.SGEMM_TILE
    if not tile[0]:
        pytest.skip("build without the SIMD float32 GEMM")
    return tile


# (N, C, H, W, F, (KH, KW), stride, padding); which path each case reaches is in its comment
CONV_CASES = [
    (2, 8, 9, 7, 20, (3, 3), 1, 1),  # implicit GEMM, K = 72; F, N*H*W ragged
    (1, 3, 11, 10, 37, (5, 5), 1, 2),  # implicit GEMM, K = 75, tall F
    (2, 12, 6, 9, 9, (3, 5), 1, (1, 2)),  # implicit GEMM, non-square kernel
    (2, 32, 7, 6, 40, (5, 5), 1, 2),  # implicit GEMM both ways + tiled dW (K = 800)
    (3, 32, 9, 8, 24, (3, 3), 2, 1),  # tiled dW on im2col columns (K = 288), stride 2
    (2, 300, 5, 3, 17, (1, 1), 1, 0),  # tiled dW, pointwise: x read in place
    (1, 29, 5, 5, 33, (3, 3), 1, 0),  # "valid" conv: im2col path, tiled dW (K = 261)
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv_simd_paths_match_reference(case, threads):
    _tile()
    ref, cy = load_float_kernels("numpy"), load_float_kernels("cython")
    n, c, h, w_, f, k, stride, padding = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((f, c, *k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    oh, ow = conv_output_shape(x.shape, k, stride, padding)
    dout = rng.standard_normal((n, f, oh, ow)).astype(np.float32)
    kw = dict(stride=stride, padding=padding)
    try:
        cy.conv.set_num_threads(threads)
        for bias in (b, None):
            assert_close(
                cy.conv2d_forward(x, w, bias, **kw), ref.conv2d_forward(x, w, bias, **kw), "fwd"
            )
        assert_close(
            cy.conv2d_backward_input(dout, w, x.shape, **kw),
            ref.conv2d_backward_input(dout, w, x.shape, **kw),
            "backward_input",
        )
        assert_close(
            cy.conv2d_backward_weight(dout, x, w.shape, **kw),
            ref.conv2d_backward_weight(dout, x, w.shape, **kw),
            "backward_weight",
        )
    finally:
        cy.conv.set_num_threads(1)


def test_conv_cases_reach_the_simd_thresholds():
    """Guard for the table above: the shapes must cross the thresholds conv.pyx uses."""
    _, _, nr, kblock = _tile()
    same = [cs for cs in CONV_CASES if cs[6] == 1 and conv_output_shape(
        (cs[0], cs[1], cs[2], cs[3]), cs[5], 1, cs[7]) == (cs[2], cs[3])]  # fmt: skip
    assert sum(cs[1] * cs[5][0] * cs[5][1] >= 64 for cs in same) >= 4
    tiled_dw = [cs for cs in CONV_CASES if cs[1] * cs[5][0] * cs[5][1] >= kblock]
    assert len(tiled_dw) >= 3 and all(cs[4] >= nr // 2 for cs in tiled_dw)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 24, 32, 45, 100, 128])
def test_linear_tiled_forward_matches_reference(batch, threads):
    _tile()
    ref, cy = load_float_kernels("numpy"), load_float_kernels("cython")
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 70)).astype(np.float32)
    w = rng.standard_normal((13, 70)).astype(np.float32)
    b = rng.standard_normal(13).astype(np.float32)
    try:
        cy.linear.set_num_threads(threads)
        for bias in (b, None):
            assert_close(cy.linear_forward(x, w, bias), ref.linear_forward(x, w, bias))
        # a transposed (non-contiguous) batch goes through the same packing
        xt = np.asfortranarray(x)
        assert_close(cy.linear_forward(xt, w, b), ref.linear_forward(x, w, b))
    finally:
        cy.linear.set_num_threads(1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (3, 1, 2, 2)])
def test_maxpool_2x2_branch_free_path_matches_reference(shape, dtype):
    """kernels/pool.pyx scans 2x2 / stride-2 windows without branches: same winner (ties to
    the first pixel, the first NaN wins) as the reference, odd sizes dropping the last row."""
    ref, cy = load_float_kernels("numpy"), load_float_kernels("cython")
    rng = np.random.default_rng(sum(shape))
    x = np.round(rng.standard_normal(shape) * 2).astype(dtype)  # many ties
    x[rng.random(shape) < 0.15] = np.nan  # some windows with two NaNs
    out, argmax = ref.maxpool2d_forward(x, 2, 2, 0)
    out_c, argmax_c = cy.maxpool2d_forward(x, 2, 2, 0)
    np.testing.assert_array_equal(out_c, out)
    assert np.array_equal(argmax_c, argmax)
    dout = rng.standard_normal(out.shape).astype(dtype)
    assert_close(cy.maxpool2d_backward(dout, argmax_c, shape),
                 ref.maxpool2d_backward(dout, argmax, shape))  # fmt: skip


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n, f, k", [(64, 256, 512), (13, 37, 70), (1, 10, 160), (130, 9, 33)])
def test_int8_linear_backward_on_int8_operand_tiles(n, f, k, threads):
    """kernels/simd/float_s8b.h: dx = dout . W_q and dW = dout^T . (x_q - zp) with the int8
    matrix widened panel by panel, against the reference (ragged row blocks and panels)."""
    ib = pytest.importorskip("tinyodl._kernels.int8_backward")
    from tinyodl.reference import int8_backward as rb

    if not ib.INT8_OPERAND_GEMM:
        pytest.skip("build without the SIMD float32 GEMM")
    rng = np.random.default_rng(n + f + k)
    w = rng.integers(-127, 128, (f, k)).astype(np.int8)
    x = rng.integers(-128, 128, (n, k)).astype(np.int8)
    dout = rng.standard_normal((n, f)).astype(np.float32)
    try:
        ib.set_num_threads(threads)
        dx, dw = ib.linear_s8_backward_input(dout, w), ib.linear_s8_backward_weight(dout, x, -5)
    finally:
        ib.set_num_threads(1)
    assert dx.dtype == dw.dtype == np.float32
    want_dx, want_dw = (
        rb.linear_s8_backward_input(dout, w),
        rb.linear_s8_backward_weight(dout, x, -5),
    )
    np.testing.assert_allclose(dx, want_dx, rtol=2e-5, atol=2e-5 * np.abs(want_dx).max())
    np.testing.assert_allclose(dw, want_dw, rtol=2e-5, atol=2e-5 * np.abs(want_dw).max())


def test_same_conv_col2im_threads_stay_in_their_channel():
    """col2im of a stride-1 "same" layer adds each tap's shifted run in one piece; the
    parts of the run outside the channel's plane (columns that fell off an edge) must not
    be added, or two threads update the same values of neighbouring planes and one update
    is lost (a race seen about once in 500 calls before the run was clipped to its plane).
    Each channel's sums do not depend on the thread count, so 2 threads give 1 thread's bits."""
    cy = load_float_kernels("cython")
    n, c, h, w_, f, k, stride, padding = CONV_CASES[1]  # C = 3: the col2im path, K = 75
    rng = np.random.default_rng(3)
    w = rng.standard_normal((f, c, *k)).astype(np.float32)
    dout = rng.standard_normal((n, f, h, w_)).astype(np.float32)
    kw = dict(stride=stride, padding=padding)
    try:
        want = cy.conv2d_backward_input(dout, w, (n, c, h, w_), **kw)
        cy.conv.set_num_threads(2)
        for _ in range(3000):
            got = cy.conv2d_backward_input(dout, w, (n, c, h, w_), **kw)
            assert np.array_equal(got, want)
    finally:
        cy.conv.set_num_threads(1)
