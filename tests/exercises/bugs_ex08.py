"""Plausible mistakes in exercise 08 (transfer learning), and the checks that must catch them."""

BUGS = {
    "dx averaged over the batch": {
        "task": "bias_only",
        "fails": ["dx"],
        "replace": [
            ("return dout @ w, dout.sum(axis=0)", "return dout @ w / len(dout), dout.sum(axis=0)")
        ],
    },
    "db averaged over the batch": {
        "task": "bias_only",
        "fails": ["db"],
        "replace": [("return dout @ w, dout.sum(axis=0)", "return dout @ w, dout.mean(axis=0)")],
    },
    "relu mask counted as float32": {
        "task": "kept",
        "fails": ["bytes"],
        "replace": [("            out.append(size)\n", "            out.append(4 * size)\n")],
    },
    "frozen conv still keeps its input": {
        "task": "kept",
        "fails": ["bytes"],
        "replace": [
            (
                'out.append(4 * size if layer["weight_trainable"] else 0)',
                "out.append(4 * size)",
            )
        ],
    },
    "batchnorm's per-channel vector forgotten": {
        "task": "kept",
        "fails": ["bytes"],
        "replace": [
            (
                'out.append(4 * layer["shape"][0] + (4 * size if layer["gamma_trainable"] else 0))',
                'out.append(4 * size if layer["gamma_trainable"] else 0)',
            )
        ],
    },
    "last k stages off by one": {
        "task": "trainable",
        "fails": ["finetune_last_k"],
        "replace": [
            (
                'last = [s + "." for s in stages[len(stages) - k :]]',
                'last = [s + "." for s in stages[len(stages) - k - 1 :]]',
            )
        ],
    },
    "bias-only forgets the head's weight": {
        "task": "trainable",
        "fails": ["tinytl_bias"],
        "replace": [
            (
                'return head(name) or name.endswith(".bias")',
                'return name.endswith(".bias")',
            )
        ],
    },
    "prefix without the dot": {
        "task": "trainable",
        "fails": ["finetune_last_k"],
        "replace": [
            (
                'last = [s + "." for s in stages[len(stages) - k :]]',
                "last = [s for s in stages[len(stages) - k :]]",
            )
        ],
    },
    "groups ignored": {
        "task": "group_conv",
        "fails": ["values"],
        "code": """
            _right_group_conv2d = group_conv2d

            def group_conv2d(x, w, groups, padding=0):
                f, cg = w.shape[:2]
                return _right_group_conv2d(x[:, :cg], w, 1, padding)
        """,
    },
    "align_corners=True": {
        "task": "upsample",
        "fails": ["interpolation_matrix", "bilinear_upsample"],
        "replace": [
            (
                "src = max((o + 0.5) * in_size / out_size - 0.5, 0.0)",
                "src = o * (in_size - 1) / max(out_size - 1, 1)",
            )
        ],
    },
    "integer division in the scale": {
        "task": "upsample_hidden",
        "fails": ["output smaller than the input"],
        "replace": [
            (
                "src = max((o + 0.5) * in_size / out_size - 0.5, 0.0)",
                "src = max((o + 0.5) * (in_size // out_size) - 0.5, 0.0)",
            )
        ],
    },
    "backward resamples dout instead of transposing": {
        "task": "upsample_backward",
        "fails": ["adjoint of the forward"],
        "code": """
            def bilinear_upsample_backward(dout, in_hw):
                return bilinear_upsample(dout, in_hw)
        """,
    },
}
