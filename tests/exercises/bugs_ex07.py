"""Plausible bugs of exercise 07 (data compression); format in tests/exercises/README.md."""

BUGS = {
    "floor instead of round": {
        "task": "lowbit",
        "fails": ["quantize: uint8 levels"],
        "replace": [
            ("np.rint(np.clip(x, 0.0, 1.0) * top)", "np.floor(np.clip(x, 0.0, 1.0) * top)")
        ],
    },
    "no clipping": {
        "task": "lowbit",
        "fails": ["quantize clips to [0, 1]"],
        "replace": [("np.rint(np.clip(x, 0.0, 1.0) * top)", "np.rint(x * top)")],
    },
    "divides by 2**bits": {
        "task": "lowbit",
        "fails": ["dequantize: float32 in [0, 1]"],
        "replace": [("np.float32(2**bits - 1)", "np.float32(2**bits)")],
    },
    "dequantize returns float64": {
        "task": "lowbit",
        "fails": ["dequantize: float32 in [0, 1]"],
        "code": """
            def dequantize(q, bits):
                return q / (2**bits - 1)
        """,
    },
    "low nibble first": {
        "task": "packing",
        "fails": ["pack_4bit: high nibble first"],
        "replace": [("(padded[0::2] << 4) | padded[1::2]", "padded[0::2] | (padded[1::2] << 4)")],
    },
    "odd value dropped": {
        "task": "packing",
        "fails": ["pack_4bit pads an odd count"],
        "replace": [
            (
                "np.zeros(2 * ((len(q) + 1) // 2), dtype=np.uint8)",
                "np.zeros(2 * (len(q) // 2), dtype=np.uint8)",
            ),
            ("    padded[: len(q)] = q\n", "    padded[:] = q[: len(padded)]\n"),
        ],
    },
    "nibbles swapped when unpacking": {
        "task": "packing",
        "fails": ["unpack_4bit"],
        "replace": [
            (
                "    out[0::2] = packed >> 4\n    out[1::2] = packed & 0x0F\n",
                "    out[0::2] = packed & 0x0F\n    out[1::2] = packed >> 4\n",
            )
        ],
    },
    "herding compares sums with the mean": {
        "task": "herd",
        "fails": ["the picks, in order"],
        "replace": [
            (
                "np.linalg.norm(mu - (total + F) / k, axis=1)",
                "np.linalg.norm(mu - (total + F), axis=1)",
            )
        ],
    },
    "herding centres F in place": {
        "task": "herd",
        "fails": ["F is not modified"],
        "replace": [
            (
                "    mu = F.mean(axis=0)\n    total",
                "    F -= F.mean(axis=0)\n    mu = F.mean(axis=0)\n    total",
            )
        ],
    },
    "distance to the last pick only": {
        "task": "kcenter",
        "fails": ["the farthest point each time"],
        "replace": [
            (
                "nearest = np.minimum(nearest, np.linalg.norm(F - F[i], axis=1))",
                "nearest = np.linalg.norm(F - F[i], axis=1)",
            )
        ],
    },
    "first pick is the farthest from first": {
        "task": "kcenter",
        "fails": ["starts at first"],
        "replace": [
            ("    picked = [first]\n", "    picked = []\n"),
            ("    for _ in range(n - 1):\n", "    for _ in range(n):\n"),
        ],
    },
    "squared EL2N": {
        "task": "el2n_task",
        "fails": ["el2n scores"],
        "replace": [
            ("    return np.linalg.norm(diff, axis=1)\n", "    return (diff**2).sum(axis=1)\n")
        ],
    },
    "P modified in place": {
        "task": "el2n_task",
        "fails": ["el2n leaves P alone"],
        "replace": [("    diff = P.copy()\n", "    diff = P\n")],
    },
    "hardest instead of easiest": {
        "task": "el2n_task",
        "fails": ["easiest_per_class"],
        "replace": [
            (
                'np.argsort(scores[idx], kind="stable")[:m]',
                'np.argsort(-scores[idx], kind="stable")[:m]',
            )
        ],
    },
    "matching pursuit without the refit": {
        "task": "omp_task",
        "fails": ["the greedy choices on any signal"],
        "code": """
            def omp(x, D, k):
                c = np.zeros(D.shape[0])
                r = x.astype(np.float64)
                for _ in range(k):
                    corr = D @ r
                    j = int(np.argmax(np.abs(corr)))
                    c[j] += corr[j]
                    r = r - corr[j] * D[j]
                return c
        """,
    },
    "correlation without the absolute value": {
        "task": "omp_task",
        "fails": ["the greedy choices on any signal"],
        "replace": [("        corr = np.abs(D @ r)\n", "        corr = D @ r\n")],
    },
}
