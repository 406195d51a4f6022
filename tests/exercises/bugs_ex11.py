"""Plausible bugs of exercise 11 (security); format in tests/exercises/README.md."""

BUGS = {
    "fgsm ignores targeted": {
        "task": "fgsm",
        "fails": ["targeted goes against the gradient"],
        "replace": [
            (
                "    direction = -np.sign(grad) if targeted else np.sign(grad)\n",
                "    direction = np.sign(grad)\n",
            )
        ],
    },
    "fgsm without clipping": {
        "task": "fgsm",
        "fails": ["clip range and zero gradients"],
        "replace": [
            (
                "    return np.clip(out, clip[0], clip[1]).astype(x.dtype, copy=False)\n",
                "    return out.astype(x.dtype, copy=False)\n",
            )
        ],
    },
    "fgsm returns float64": {
        "task": "fgsm",
        "fails": ["same dtype, inputs unmodified"],
        "code": """
            def fgsm(x, grad, eps, targeted=False, clip=(0.0, 1.0)):
                d = -np.sign(grad) if targeted else np.sign(grad)
                return np.clip(x.astype(np.float64) + eps * d, *clip)
        """,
    },
    "fgsm modifies x in place": {
        "task": "fgsm",
        "fails": ["same dtype, inputs unmodified"],
        "code": """
            def fgsm(x, grad, eps, targeted=False, clip=(0.0, 1.0)):
                d = -np.sign(grad) if targeted else np.sign(grad)
                x += np.asarray(eps, x.dtype) * d.astype(x.dtype)
                np.clip(x, clip[0], clip[1], out=x)
                return x
        """,
    },
    "l2 projection onto the sphere": {
        "task": "projections",
        "fails": ["project_l2 leaves rows inside the ball unchanged"],
        "code": """
            def project_l2(delta, eps):
                flat = delta.reshape(len(delta), -1)
                norms = np.sqrt((flat ** 2).sum(axis=1)) + 1e-12
                shape = (len(delta),) + (1,) * (delta.ndim - 1)
                return (delta * (eps / norms).reshape(shape)).astype(delta.dtype)
        """,
    },
    "l2 norm of the whole batch": {
        "task": "projections",
        "fails": ["project_l2 shrinks long rows to length eps"],
        "code": """
            def project_l2(delta, eps):
                norm = np.sqrt((delta.astype(np.float64) ** 2).sum())
                return (delta * min(1.0, eps / norm)).astype(delta.dtype) if norm else delta.copy()
        """,
    },
    "linf projection by rescaling": {
        "task": "projections",
        "fails": ["project_linf"],
        "code": """
            def project_linf(delta, eps):
                m = np.abs(delta).reshape(len(delta), -1).max(axis=1)
                scale = np.minimum(1.0, eps / np.maximum(m, 1e-12))
                return (delta * scale.reshape((-1,) + (1,) * (delta.ndim - 1))).astype(delta.dtype)
        """,
    },
    "pgd projects around the current point": {
        "task": "pgd_linf",
        "fails": ["stays within eps of x and in [0, 1]", "matches the reference trajectory"],
        "replace": [
            ("        x_adv = x + project_linf(x_adv - x, eps)\n", "        pass\n"),
        ],
    },
    "pgd steps along the raw gradient": {
        "task": "pgd_linf",
        "fails": ["matches the reference trajectory"],
        "replace": [
            (
                "np.clip(x_adv + np.asarray(alpha, x.dtype) * np.sign(g).astype(x.dtype), 0, 1)",
                "np.clip(x_adv + np.asarray(alpha, x.dtype) * g.astype(x.dtype), 0, 1)",
            )
        ],
    },
    "pgd ignores x_start": {
        "task": "pgd_linf",
        "fails": ["starts from x_start"],
        "replace": [
            (
                "np.array(x if x_start is None else x_start, dtype=x.dtype, copy=True)",
                "np.array(x, dtype=x.dtype, copy=True)",
            )
        ],
    },
    "flip may keep the same class": {
        "task": "flip_labels",
        "fails": [
            "flips exactly round(fraction * N) labels to other classes",
            "uniform over examples and over the other classes",
        ],
        "replace": [
            (
                "(y[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes",
                "rng.integers(0, num_classes, size=len(chosen))",
            )
        ],
    },
    "flip chooses with replacement": {
        "task": "flip_labels",
        "fails": ["flips exactly round(fraction * N) labels to other classes"],
        "replace": [
            (
                "rng.choice(n, size=int(round(fraction * n)), replace=False)",
                "rng.integers(0, n, size=int(round(fraction * n)))",
            )
        ],
    },
    "flip ignores the seed": {
        "task": "flip_labels",
        "fails": ["reproducible with the seed"],
        "replace": [
            (
                "    rng = np.random.default_rng(seed)\n    n = len(y)",
                "    rng = np.random.default_rng()\n    n = len(y)",
            ),
        ],
    },
    "cusum without the floor at zero": {
        "task": "cusum",
        "fails": ["S values"],
        "replace": [
            (
                "        s = max(0.0, s + (value - mean) / std - k)\n",
                "        s = s + (value - mean) / std - k\n",
            )
        ],
    },
    "cusum alarm index counted from 1": {
        "task": "cusum",
        "fails": ["first alarm index (or None)"],
        "replace": [("            first = t\n", "            first = t + 1\n")],
    },
    "inversion from one row": {
        "task": "invert_dense_gradient",
        "fails": ["least squares over all rows"],
        "code": """
            def invert_dense_gradient(grad_w, grad_b):
                gb = np.asarray(grad_b, np.float64)
                if not gb.any():
                    raise ValueError("zero bias gradient")
                i = int(np.flatnonzero(gb)[0])
                return np.asarray(grad_w, np.float64)[i] / gb[i]
        """,
    },
    "inversion returns nan instead of raising": {
        "task": "invert_dense_gradient",
        "fails": ["ValueError on a zero bias gradient"],
        "replace": [
            (
                '        raise ValueError("invert_dense_gradient: the bias gradient is zero")\n',
                "        return np.full(gw.shape[1], np.nan)\n",
            )
        ],
    },
    "auc ignores ties": {
        "task": "membership",
        "fails": ["ROC AUC (with ties)"],
        "replace": [
            (
                "(a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()",
                "(a[:, None] > b[None, :]).sum()",
            )
        ],
    },
    "advantage confused with 2 AUC - 1": {
        "task": "membership",
        "fails": ["advantage"],
        "replace": [("    return auc, best\n", "    return auc, 2 * auc - 1\n")],
    },
    "bounds not capped at 1": {
        "task": "membership",
        "fails": ["DP bounds"],
        "replace": [
            (
                "float(min(1.0, e - 1.0)), float(min(1.0, (e - 1.0 + 2.0 * delta) / (e + 1.0)))",
                "float(e - 1.0), float((e - 1.0 + 2.0 * delta) / (e + 1.0))",
            )
        ],
    },
}
