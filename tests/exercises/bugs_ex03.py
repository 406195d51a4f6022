"""Plausible mistakes in exercise 03 (quantization), and the checks that must catch them."""

BUGS = {
    "np.round rounds ties to even": {
        "task": "weights",
        "fails": ["values (round half away, clamp)"],
        "replace": [
            (
                "q = np.clip(round_half_away(w64 / shaped), -127, 127).astype(np.int8)",
                "q = np.clip(np.round(w64 / shaped), -127, 127).astype(np.int8)",
            )
        ],
    },
    "scale over 128 (the asymmetric range)": {
        "task": "weights",
        "fails": ["scales"],
        "replace": [
            (
                "scales = np.where(amax > 0, amax / 127.0, 1.0)",
                "scales = np.where(amax > 0, amax / 128.0, 1.0)",
            )
        ],
    },
    "range not widened to contain 0": {
        "task": "activations",
        "fails": ["choose_activation_qparams"],
        "replace": [
            (
                "lo, hi = min(float(x_min), 0.0), max(float(x_max), 0.0)",
                "lo, hi = float(x_min), float(x_max)",
            )
        ],
    },
    "quantize forgets to clamp": {
        "task": "activations",
        "fails": ["quantize"],
        "replace": [
            (
                "    return np.clip(q, -128, 127).astype(np.int8)",
                "    return q.astype(np.int8)",
            )
        ],
    },
    "folded bias ignores the running mean": {
        "task": "folding",
        "fails": ["folded conv equals conv then batchnorm"],
        "replace": [("b_folded = k * (bias - mean) + beta", "b_folded = k * bias + beta")],
    },
    "folding modifies w in place": {
        "task": "folding",
        "fails": ["without a conv bias; inputs unchanged"],
        "replace": [
            (
                "w_folded = np.asarray(w, dtype=np.float64) * k.reshape(-1, 1, 1, 1)",
                "w_folded = np.asarray(w, dtype=np.float64)\n"
                "    w_folded *= k.reshape(-1, 1, 1, 1)",
            )
        ],
    },
    "mantissa truncated instead of rounded": {
        "task": "multiplier",
        "fails": ["quantize_multiplier"],
        "replace": [
            (
                "m0 = round_half_away(frac * 2.0**31).astype(np.int64)",
                "m0 = np.floor(frac * 2.0**31).astype(np.int64)",
            )
        ],
    },
    "single rounding instead of double": {
        "task": "multiplier",
        "fails": ["multiply_by_quantized_multiplier"],
        "code": """
            def multiply_by_quantized_multiplier(x, m0, shift):
                x = np.asarray(x, dtype=np.int64)
                total = 31 - np.asarray(shift, dtype=np.int64)
                return (x * np.asarray(m0, dtype=np.int64) + (np.int64(1) << (total - 1))) >> total
        """,
    },
    "accumulates in int8 (wraps around)": {
        "task": "linear",
        "fails": ["values"],
        "replace": [
            (
                "acc = (x_q.astype(np.int64) - zp_in) @ w_q.astype(np.int64).T",
                "acc = (x_q - np.int8(zp_in)).astype(np.int64) @ w_q.astype(np.int64).T",
            )
        ],
    },
    "zero point subtracted in int8 (extreme zero points)": {
        "task": "linear_hidden",
        "fails": ["long rows, zero point -128 and 127"],
        "replace": [
            (
                "acc = (x_q.astype(np.int64) - zp_in) @ w_q.astype(np.int64).T",
                "acc = (x_q - np.int8(zp_in)).astype(np.int64) @ w_q.astype(np.int64).T",
            )
        ],
    },
    "no fused clamp": {
        "task": "linear",
        "fails": ["fused clamp"],
        "replace": [
            (
                "return np.clip(y, act_min, act_max).astype(np.int8)",
                "return np.clip(y, -128, 127).astype(np.int8)",
            )
        ],
    },
    "mask includes the bounds": {
        "task": "fake_quant",
        "fails": ["mask and backward"],
        "replace": [("mask = (q > qmin) & (q < qmax)", "mask = (q >= qmin) & (q <= qmax)")],
    },
    "QAS by s_w instead of s_w squared": {
        "task": "qas",
        "fails": ["qas_scale"],
        "replace": [("factor = (s_w**-2)", "factor = (s_w**-1)")],
    },
    "int8 update truncates the step": {
        "task": "qas",
        "fails": ["int8_update"],
        "replace": [
            (
                "new = w_q.astype(np.int64) + round_half_away(delta).astype(np.int64)",
                "new = w_q.astype(np.int64) + delta.astype(np.int64)",
            )
        ],
    },
}
