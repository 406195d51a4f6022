"""Every SIMD path of the compiled int8 kernels, forced in turn, bit-exact to the reference.

The compiled module picks the best path the CPU supports (AVX-512 VNNI, AVX2 or portable
C); ``set_simd_path`` forces one, so on a VNNI machine all three run here. Shapes are
chosen around the micro-kernel tiles (4 x 16 and 8 x 32) and the K % 4 padding, and the
operands hit the cases each path treats specially (-128 on either side for AVX2, raw sums
that wrap int32 for the unsigned trick, biases outside int32 for the SIMD epilogue).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl import backend, quant
from tinyodl.reference import int8 as ref

k8 = pytest.importorskip("tinyodl._kernels.int8", reason="compiled kernels not built")
PATHS = k8.simd_paths()
K_MAX = (2**31 - 1) // (255 * 127)


@pytest.fixture(params=PATHS)
def path(request):
    """Force one SIMD path for the test, then go back to the automatic choice."""
    k8.set_simd_path(request.param)
    try:
        yield request.param
    finally:
        k8.set_simd_path(None)


def s8(rng, shape, lo=-128, hi=127):
    return rng.integers(lo, hi + 1, shape).astype(np.int8)


def requant(rng, channels, lo=1e-5, hi=0.5):
    return quant.quantize_multiplier(rng.uniform(lo, hi, channels))


def test_paths_are_listed_and_forcing_is_checked():
    assert PATHS[0] == "portable" and k8.get_simd_path() == PATHS[-1]
    with pytest.raises(ValueError, match="unknown path"):
        k8.set_simd_path("sse9")
    for name in set(k8.SIMD_PATHS) - set(PATHS):
        with pytest.raises(ValueError, match="cannot run"):
            k8.set_simd_path(name)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 5, 15), (4, 8, 16), (7, 13, 33), (9, 64, 17),
                                   (17, 4, 31), (33, 130, 65)])  # fmt: skip
def test_gemm_every_path(path, m, k, n):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    for a_lo, b_lo in [(-128, -128), (-128, -127), (-127, -128)]:  # AVX2 picks by the -128s
        a, b = s8(rng, (m, k), a_lo), s8(rng, (k, n), b_lo)
        for za, zb in [(0, 0), (5, -9), (-128, 127)]:
            want = (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)
            assert np.array_equal(k8.gemm_s8(a, b, za, zb), want), (path, a_lo, b_lo, za, zb)


@given(
    m=st.integers(1, 20), k=st.integers(1, 40), n=st.integers(1, 40),
    za=st.integers(-128, 127), zb=st.integers(-128, 127), seed=st.integers(0, 2**16),
)  # fmt: skip
@settings(max_examples=25, deadline=None)
def test_gemm_any_shape_any_path(m, k, n, za, zb, seed):
    rng = np.random.default_rng(seed)
    a, b = s8(rng, (m, k)), s8(rng, (k, n))
    want = (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)
    try:
        for name in PATHS:
            k8.set_simd_path(name)
            assert np.array_equal(k8.gemm_s8(a, b, za, zb), want), name
    finally:
        k8.set_simd_path(None)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_linear_every_path(path, rounding):
    rng = np.random.default_rng(1)
    for n, k, f in [(1, 3, 1), (5, 17, 15), (8, 64, 32), (13, 100, 47), (40, 7, 70)]:
        x, w = s8(rng, (n, k)), s8(rng, (f, k), -127)
        bias = rng.integers(-(10**6), 10**6, f).astype(np.int32)
        m0, shift = requant(rng, f, 1e-5, 4.0)  # shifts of both signs (left shift or not)
        for zp_in, zp_out, lo, hi in [(0, 0, -128, 127), (-128, 7, -20, 100), (127, -5, -128, 0)]:
            args = (x, w, bias, zp_in, zp_out, m0, shift, lo, hi, rounding)
            assert np.array_equal(k8.linear_s8(*args), ref.linear_s8(*args)), (path, n, k, f)


def test_linear_raw_sums_that_wrap_int32(path):
    """x = -128 against w = 127 over K_MAX terms: the unsigned trick's raw sum exceeds 2^31."""
    x = np.full((3, K_MAX), -128, np.int8)
    w = np.full((5, K_MAX), 127, np.int8)
    w[1], w[2, ::2] = -127, -127
    bias = np.array([0, 5, -7, 2**31 - 1, -(2**31)], np.int32)  # folded biases leave int32
    m0, shift = np.full(5, 2**31 - 1, np.int32), np.array([-24, -24, -3, -30, 0], np.int32)
    for rounding in ("double", "single"):
        args = (x, w, bias, 127, 3, m0, shift, -128, 127, rounding)
        assert np.array_equal(k8.linear_s8(*args), ref.linear_s8(*args))


@pytest.mark.parametrize("n,k,f", [(9, 1000, 16), (17, 999, 33), (3, 64, 8), (16, 12, 70)])
def test_linear_fused_tile_saturating_bias(path, n, k, f):
    """linear_s8's VNNI tile requantizes in registers and drops the saturating bias add when
    |acc| + |bias| cannot overflow; biases near +-2^31 (folded bias still in int32) make
    acc + bias overflow, panels of <= 16 channels take the half-width tile."""
    rng = np.random.default_rng(n * k + f)
    x = s8(rng, (n, k))
    x[0], x[-1, ::2] = 127, -128  # largest raw sums of both signs
    w = s8(rng, (f, k), -127)
    w[0], w[-1] = 127, -127
    bias = rng.integers(-(10**4), 10**4, f).astype(np.int64)
    bias[0], bias[-1] = 2**31 - 1 - 10**6, -(2**31) + 10**6
    bias = bias.astype(np.int32)
    for m0, shift in [requant(rng, f, 1e-6, 1e-3), requant(rng, f, 1e-5, 4.0)]:
        for zp_in, zp_out, lo, hi in [(-128, 0, -128, 127), (0, -7, -7, 127), (5, 3, -100, 90)]:
            for b in (bias, None):
                args = (x, w, b, zp_in, zp_out, m0, shift, lo, hi, "double")
                assert np.array_equal(k8.linear_s8(*args), ref.linear_s8(*args)), (path, zp_in)


M0_EDGES = [0, 1, 2**30, 2**30 + 1, 2**31 - 1]


@given(
    n=st.integers(1, 19), k=st.integers(1, 70), f=st.integers(1, 70),
    m0_pick=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    right=st.lists(st.integers(0, 31), min_size=1, max_size=4),
    zp_in=st.integers(-128, 127), zp_out=st.integers(-128, 127),
    bounds=st.tuples(st.integers(-128, 127), st.integers(-128, 127)),
    bias_scale=st.sampled_from([0, 10**3, 2**29, 2**30 - 10**6, 2**30, 2**31 - 1]),
    seed=st.integers(0, 2**16),
)  # fmt: skip
@settings(max_examples=60, deadline=None)
def test_linear_short_requant_route_any_path(
    n, k, f, m0_pick, right, zp_in, zp_out, bounds, bias_scale, seed
):
    """linear_s8's short requantization route (VNNI tile, kernels/simd/int8_requant.h:
    |acc + bias| < 2^30, no left shift) and its neighbours, bit-exact on every path. M0 =
    2^30 makes SRDHM halve exactly, so RoundingDivideByPOT meets its ties of both signs;
    right shifts 0 and 31, M0 = 0 and 2^31 - 1, biases up to and past the route's bound."""
    rng = np.random.default_rng(seed)
    x, w = s8(rng, (n, k)), s8(rng, (f, k), -127)
    m0 = np.array([M0_EDGES[i] if i < 5 else int(rng.integers(0, 2**31)) for i in m0_pick])
    m0 = np.resize(m0, f).astype(np.int32)
    shift = -np.resize(np.array(right), f).astype(np.int32)
    rng.shuffle(shift)
    bias = np.clip(rng.integers(-bias_scale, bias_scale + 1, f), -(2**31), 2**31 - 1)
    bias = bias.astype(np.int32)
    lo, hi = min(bounds), max(bounds)
    args = (x, w, bias, zp_in, zp_out, m0, shift, lo, hi, "double")
    want = ref.linear_s8(*args)
    try:
        for name in PATHS:
            k8.set_simd_path(name)
            assert np.array_equal(k8.linear_s8(*args), want), name
    finally:
        k8.set_simd_path(None)


@pytest.mark.parametrize("k", [4, 37, 1000])
def test_linear_short_route_at_its_bound(path, k):
    """Largest accumulators of both signs (x = 127 / -128 against w = +-127) with biases on
    both sides of the short route's bound |acc + bias| < 2^30 (K * 255 * 128 below it),
    right shifts 0, 1 and 31 and M0 = 2^31 - 1: bit-exact on every path."""
    x = np.array([[127] * k, [-128] * k, [127, -128] * (k // 2) + [127] * (k % 2)], np.int8)
    w = np.array([[127] * k, [-127] * k, [127] * k, [-127] * k, [1] * k, [0] * k], np.int8)
    edge = 2**30 - 4 * -(-k // 4) * 255 * 128
    m0 = np.full(6, 2**31 - 1, np.int32)
    for shift in ([0, -1, -31, 0, -1, -31], [-1] * 6, [-31, 0, -1, -2, -3, -30]):
        for delta in (-300_000, -1, 0, 1, 300_000):
            bias = np.array([edge + delta, -(edge + delta), edge, -edge, delta, 0], np.int64)
            bias = np.clip(bias, -(2**31), 2**31 - 1).astype(np.int32)
            for zp_in in (-128, 0, 127):
                args = (x, w, bias, zp_in, -3, m0, np.array(shift, np.int32))
                assert np.array_equal(k8.linear_s8(*args), ref.linear_s8(*args)), (shift, delta)


def random_conv(rng, depthwise=False):
    n, c = int(rng.integers(1, 4)), int(rng.integers(1, 12))
    h, w = int(rng.integers(3, 14)), int(rng.integers(3, 14))
    groups = c if depthwise else int(rng.choice([g for g in (1, 2, 3) if c % g == 0]))
    f = c if depthwise else int(rng.integers(1, 5)) * groups
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
    padding = (int(rng.integers(0, kh)), int(rng.integers(0, kw)))
    x = s8(rng, (n, c, h, w))
    wt = s8(rng, (f, c // groups, kh, kw), -127)
    bias = rng.integers(-(10**5), 10**5, f).astype(np.int32)
    m0, shift = requant(rng, f, 1e-4, 3.0 if rng.random() < 0.3 else 0.3)
    return x, wt, bias, m0, shift, stride, padding, groups


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_conv_every_path(path, rounding):
    rng = np.random.default_rng(7)
    for _ in range(25):
        x, w, bias, m0, shift, stride, padding, groups = random_conv(rng)
        if x.shape[2] + 2 * padding[0] < w.shape[2] or x.shape[3] + 2 * padding[1] < w.shape[3]:
            continue
        zp_in, zp_out = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        args = (x, w, bias, zp_in, zp_out, m0, shift, stride, padding, groups, -128, 127,
                rounding)  # fmt: skip
        assert np.array_equal(k8.conv2d_s8(*args), ref.conv2d_s8(*args)), (x.shape, w.shape)


@pytest.mark.parametrize("shape", [(2, 4, 9, 9), (1, 16, 7, 7), (3, 5, 4, 6), (2, 40, 3, 3)])
def test_pointwise_conv_every_path(path, shape):
    """1x1 stride-1 convolutions pack panels straight from NCHW (across image borders)."""
    rng = np.random.default_rng(shape[1])
    x = s8(rng, shape)
    for f in (1, 9, 24):
        w = s8(rng, (f, shape[1], 1, 1), -127)
        m0, shift = requant(rng, f, 1e-4, 0.3)
        args = (x, w, None, -3, 4, m0, shift)
        assert np.array_equal(k8.conv2d_s8(*args), ref.conv2d_s8(*args))


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_depthwise_every_path(path, rounding):
    rng = np.random.default_rng(11)
    for _ in range(20):
        x, w, bias, m0, shift, stride, padding, _ = random_conv(rng, depthwise=True)
        if x.shape[2] + 2 * padding[0] < w.shape[2] or x.shape[3] + 2 * padding[1] < w.shape[3]:
            continue
        args = (x, w, bias, int(rng.integers(-128, 128)), 9, m0, shift, stride, padding)
        want = ref.depthwise_conv2d_s8(*args, -100, 120, rounding)
        assert np.array_equal(k8.depthwise_conv2d_s8(*args, -100, 120, rounding), want)
        # the same layer through conv2d_s8 with groups = C
        conv = k8.conv2d_s8(*args, groups=x.shape[1], act_min=-100, act_max=120,
                            rounding=rounding)  # fmt: skip
        assert np.array_equal(conv, want)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_requantize_every_path(path, rounding):
    rng = np.random.default_rng(3)
    edges = np.array([-(2**31), -(2**31) + 1, -(2**30), -65, -1, 0, 1, 64, 2**30, 2**31 - 1])
    acc = np.concatenate([np.tile(edges, 3), rng.integers(-(2**31), 2**31, 37)])
    acc = np.tile(acc, (2, 7, 1)).astype(np.int32)  # odd row length: SIMD body and tail
    m0 = np.array([2**31 - 1, 2**30, 2**30, 2**31 - 1, 2**30 + 12345, 1, 0], np.int32)
    shift = np.array([0, 0, -31, -20, 3, 30, -5], np.int32)
    for zp, lo, hi in [(0, -128, 127), (-20, -20, 127), (100, -50, 60)]:
        got = k8.requantize(acc, m0, shift, zp, lo, hi, rounding)
        assert np.array_equal(got, ref.requantize(acc, m0, shift, zp, lo, hi, rounding))


def test_two_threads_every_path(path):
    rng = np.random.default_rng(5)
    x, w = s8(rng, (4, 6, 15, 15)), s8(rng, (8, 3, 3, 3), -127)
    m0, shift = requant(rng, 8)
    a, b = s8(rng, (37, 70)), s8(rng, (70, 45))
    xl, wl = s8(rng, (21, 50)), s8(rng, (19, 50), -127)
    want = [
        ref.conv2d_s8(x, w, None, 5, -2, m0, shift, 2, 1, 2),
        ref.depthwise_conv2d_s8(x, w[:6, :1], None, 5, -2, m0[:6], shift[:6], 1, 1),
        ref.gemm_s8(a, b, 3, -4),
        ref.linear_s8(xl, wl, None, 1, 2, m0[0], shift[0]),
    ]
    try:
        backend.set_num_threads(2)
        got = [
            k8.conv2d_s8(x, w, None, 5, -2, m0, shift, 2, 1, 2),
            k8.depthwise_conv2d_s8(x, w[:6, :1], None, 5, -2, m0[:6], shift[:6], 1, 1),
            k8.gemm_s8(a, b, 3, -4),
            k8.linear_s8(xl, wl, None, 1, 2, m0[0], shift[0]),
        ]
    finally:
        backend.set_num_threads(1)
    for g, want_g in zip(got, want, strict=True):
        assert np.array_equal(g, want_g)


@pytest.mark.parametrize("threads", [2, 3])
def test_linear_threads_share_packing_every_path(path, threads):
    """On several threads linear_s8 packs weight panels and copies blocks of 64 rows of x in
    parallel: several blocks with a tail, several panels with a tail, K % 4 != 0."""
    rng = np.random.default_rng(threads)
    x, w = s8(rng, (150, 70)), s8(rng, (75, 70), -127)
    bias = rng.integers(-(10**5), 10**5, 75).astype(np.int32)
    m0, shift = requant(rng, 75, 1e-4, 0.2)
    for rounding in ("double", "single"):
        args = (x, w, bias, -3, 4, m0, shift, -128, 127, rounding)
        want = ref.linear_s8(*args)
        try:
            backend.set_num_threads(threads)
            got = k8.linear_s8(*args)
        finally:
            backend.set_num_threads(1)
        assert np.array_equal(got, want), (path, rounding)


# ---- scratch memory: taken from numpy, so tracemalloc sees it and MemoryError is raised ----


def traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_scratch_is_seen_by_tracemalloc():
    rng = np.random.default_rng(0)
    x = s8(rng, (1, 2, 300, 300))
    w = s8(rng, (2, 1, 3, 3), -127)
    m0, shift = requant(rng, 2)
    out_bytes = x.size  # int8 output, same shape
    # depthwise scratch per thread: a phase plane (int16), int32 accumulators, int8 outputs
    virt = 300 * 302
    scratch = 302 * 302 * 2 + virt * 4 + virt
    peak = traced_peak(lambda: k8.depthwise_conv2d_s8(x, w, None, 0, 0, m0, shift, 1, 1))
    assert peak >= out_bytes + scratch
    # conv scratch: one packed panel of im2col columns (K x NR bytes), one block of int32
    # accumulators and the reordered weights -- no padded copy of the input (182 KB here)
    wc = s8(rng, (4, 2, 3, 3), -127)
    m0c, shiftc = requant(rng, 4)
    peak = traced_peak(lambda: k8.conv2d_s8(x, wc, None, 0, 0, m0c, shiftc, 1, 1))
    out_c = 4 * 298 * 298
    assert out_c + 18 * 16 <= peak < out_c + 16 * 1024, peak - out_c


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS semantics are Linux's")
@pytest.mark.parametrize("kernel", ["depthwise", "conv", "linear"])
def test_memory_error_instead_of_a_crash(kernel):
    """Under a tight address-space limit a kernel's scratch raises MemoryError (no segfault)."""
    script = textwrap.dedent(
        f"""
        import resource, sys
        import numpy as np
        import tinyodl._kernels.int8 as k8
        x = np.ones((1, 1, 3000, 3000), np.int8)       # 9 MB input
        xc = np.ones((10, 1, 3000, 3000), np.int8)     # 90 MB input
        w = np.ones((1, 1, 3, 3), np.int8)
        m0, sh = np.array([2**30], np.int32), np.array([0], np.int32)
        xl, wl = np.ones((10, 4000), np.int8), np.ones((30000, 4000), np.int8)  # 120 MB
        def vm_bytes():
            for line in open("/proc/self/status"):
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        limit = vm_bytes() + 48 * 2**20                # room for the output, not the scratch
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            if "{kernel}" == "depthwise":              # ~90 MB of plane scratch
                k8.depthwise_conv2d_s8(x, w, None, 0, 0, m0, sh, 1, 1)
            elif "{kernel}" == "conv":                 # 90 MB padded channels-last copy
                k8.conv2d_s8(xc, w, None, 0, 0, m0, sh, 1, 1)
            else:                                      # 120 MB of packed weights
                k8.linear_s8(xl, wl, None, 0, 0, m0[0], sh[0])
        except MemoryError:
            print("MemoryError")
            sys.exit(0)
        print("no error")
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "MemoryError"


@pytest.mark.parametrize(
    "shape,w_shape,stride,padding,groups",
    [
        ((2, 8, 9, 7), (12, 8, 3, 3), 1, 1, 1),  # four channels per k group, borders
        ((3, 8, 10, 9), (8, 4, 3, 2), (2, 1), (2, 0), 2),  # groups of 4, stride 2, pad > k/2
        ((1, 5, 6, 6), (7, 5, 3, 3), 2, 1, 1),  # channels one by one, k padding
        ((2, 4, 3, 3), (5, 4, 5, 5), 1, 2, 1),  # kernel wider than the input
    ],
)
def test_im2col_from_nchw_every_path(path, shape, w_shape, stride, padding, groups):
    """The panels are packed straight from NCHW (int8_im2col.h): padding taps, strides,
    groups, runs of columns across output rows and images, bit-exact to the reference."""
    rng = np.random.default_rng(sum(shape))
    x, w = s8(rng, shape), s8(rng, w_shape, -127)
    m0, shift = requant(rng, w_shape[0], 1e-4, 0.3)
    args = (x, w, None, -7, 3, m0, shift, stride, padding, groups)
    assert np.array_equal(k8.conv2d_s8(*args), ref.conv2d_s8(*args))
