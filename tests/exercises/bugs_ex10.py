"""Plausible bugs of exercise 10 (differential privacy); format in tests/exercises/README.md."""

BUGS = {
    "profile without e^epsilon": {
        "task": "gaussian",
        "fails": ["gaussian_delta"],
        "replace": [
            (
                "    return float(special.ndtr(a - b) - math.exp(epsilon) * special.ndtr(-a - b))",
                "    return float(special.ndtr(a - b) - special.ndtr(-a - b))",
            )
        ],
    },
    "classic bound instead of the analytic one": {
        "task": "gaussian",
        "fails": ["calibrate_gaussian, epsilon < 1", "calibrate_gaussian, epsilon >= 1"],
        "code": """
            def calibrate_gaussian(sensitivity, epsilon, delta):
                return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
        """,
    },
    "bisection stopped early": {
        "task": "gaussian",
        "fails": ["calibrate_gaussian, epsilon < 1", "calibrate_gaussian, epsilon >= 1"],
        "replace": [("    for _ in range(100):", "    for _ in range(8):")],
    },
    "reports not debiased": {
        "task": "frequencies",
        "fails": ["two values", "k values"],
        "replace": [
            (
                "    return ((observed - r) / (p - r)).astype(np.float64)",
                "    return observed.astype(np.float64)",
            )
        ],
    },
    "binary flip probability for k values": {
        "task": "frequencies",
        "fails": ["k values"],
        "replace": [("    r = (1 - p) / (k - 1)\n    observed", "    r = 1 - p\n    observed")],
    },
    "linear dw transposed": {
        "task": "linear_grads",
        "fails": ["shapes and dtype", "values"],
        "replace": [('np.einsum("no,ni->noi", dout, x)', 'np.einsum("no,ni->nio", dout, x)')],
    },
    "linear gradients summed over the batch": {
        "task": "linear_grads",
        "fails": ["shapes and dtype", "values"],
        "replace": [('np.einsum("no,ni->noi", dout, x)', 'np.einsum("no,ni->oi", dout, x)')],
    },
    "conv ignores stride and padding": {
        "task": "conv_grads",
        "fails": ["values with stride and padding"],
        "replace": [("cols = im2col(x, (kh, kw), stride, padding)", "cols = im2col(x, (kh, kw))")],
    },
    "conv columns not transposed": {
        "task": "conv_grads",
        "fails": ["values, stride 1 and no padding", "values with stride and padding"],
        "code": """
            def conv2d_per_example_grads(x, dout, kernel_size, stride=1, padding=0):
                n, c = x.shape[:2]
                f = dout.shape[1]
                kh, kw = pair(kernel_size)
                cols = im2col(x, (kh, kw), stride, padding)
                d = dout.reshape(n, f, -1)
                dw = np.einsum("nfl,nkl->nfk", d, cols[:, ::-1]).reshape(n, f, c, kh, kw)
                return dw.astype(x.dtype), dout.sum(axis=(2, 3)).astype(x.dtype)
        """,
    },
    "clipping each parameter separately": {
        "task": "clipping",
        "fails": ["clipped sums"],
        "code": """
            def clip_and_sum(grad_samples, clip_norm):
                n = len(grad_samples[0])
                flat = [g.reshape(n, -1).astype(np.float64) for g in grad_samples]
                norms = np.sqrt(sum((f**2).sum(axis=1) for f in flat))
                sums = []
                for g, f in zip(grad_samples, flat):
                    factor = 1.0 / np.maximum(1.0, np.sqrt((f**2).sum(axis=1)) / clip_norm)
                    sums.append(np.tensordot(factor, g, axes=(0, 0)).astype(g.dtype))
                return sums, norms
        """,
    },
    "norms reported after clipping": {
        "task": "clipping",
        "fails": ["norms before clipping"],
        "replace": [
            ("    return sums, norms\n", "    return sums, np.minimum(norms, clip_norm)\n")
        ],
    },
    "clipping scales small gradients up": {
        "task": "clipping",
        "fails": ["clipped sums"],
        "replace": [
            ("factors = 1.0 / np.maximum(1.0, norms / clip_norm)", "factors = clip_norm / norms")
        ],
    },
    "noise std without the clipping norm": {
        "task": "noise",
        "fails": ["values"],
        "replace": [("(s + noise_multiplier * clip_norm * z)", "(s + noise_multiplier * z)")],
    },
    "one noise draw shared by all parameters": {
        "task": "noise",
        "fails": ["values"],
        "code": """
            def noisy_average(sums, clip_norm, noise_multiplier, expected_batch_size, seed):
                z = np.random.default_rng(seed).standard_normal()
                scale = noise_multiplier * clip_norm
                return [((s + scale * z) / expected_batch_size).astype(s.dtype) for s in sums]
        """,
    },
    "ghost norm forgets the bias": {
        "task": "ghost",
        "fails": ["values"],
        "replace": [
            (
                "    return d_sq * (x64**2).sum(axis=1) + d_sq",
                "    return d_sq * (x64**2).sum(axis=1)",
            )
        ],
    },
    "rdp not divided by alpha - 1": {
        "task": "rdp",
        "fails": ["values"],  # alpha - 1 = 1 at the closed form's order
        "replace": [
            (
                "    return float(special.logsumexp(terms) / (alpha - 1))",
                "    return float(special.logsumexp(terms))",
            )
        ],
    },
    "rdp summed with plain exp": {
        "task": "rdp",
        "fails": ["large orders (no overflow)"],
        "replace": [
            (
                "    return float(special.logsumexp(terms) / (alpha - 1))",
                "    return float(np.log(np.sum(np.exp(terms))) / (alpha - 1))",
            )
        ],
    },
    "classic conversion": {
        "task": "accountant",
        "fails": ["few steps", "MNIST setting"],
        "replace": [
            (
                "eps = r + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)",
                "eps = r - math.log(delta) / (a - 1)",
            )
        ],
    },
    "rdp not composed over steps": {
        "task": "accountant",
        "fails": ["few steps", "MNIST setting"],
        "replace": [
            (
                "        r = steps * rdp_subsampled_gaussian(q, sigma, a)",
                "        r = rdp_subsampled_gaussian(q, sigma, a)",
            )
        ],
    },
}
