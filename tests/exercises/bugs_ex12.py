"""Plausible bugs in exercise 12 (training engines) and the checks that catch them."""

BUGS = {
    "reads do not extend a lifetime": {
        "task": "liveness",
        "fails": ["alloc and last use of every buffer"],
        "replace": [("            last[name] = i\n        for name", "        for name")],
    },
    "no error for a missing buffer": {
        "task": "liveness",
        "fails": ["errors"],
        "replace": [
            (
                '                raise ValueError(f"step {i} reads {name!r} before it exists")',
                "                continue",
            )
        ],
    },
    "the buffer is freed before its last step": {
        "task": "planned_peak",
        "fails": ["live bytes per step"],
        "replace": [("if a <= s <= f", "if a <= s < f")],
    },
    "the last step of the peak": {
        "task": "planned_peak",
        "fails": ["peak and its first step"],
        "replace": [
            (
                "return live, int(peak), int(totals.index(peak))",
                "return live, int(peak), int(len(totals) - 1 - totals[::-1].index(peak))",
            )
        ],
    },
    "updates at the end in backward order": {
        "task": "backward_schedule",
        "fails": ["updates at the end"],
        "replace": [("return out + sorted(pending, key=lambda s: s[1])", "return out + pending")],
    },
    "dw before dx": {
        "task": "backward_schedule",
        "fails": ["reordered (update right after dw)", "updates at the end"],
        "code": """
            def backward_schedule(trainable, reorder):
                n = len(trainable)
                first = next((i for i in range(n) if trainable[i]), n)
                out, pending = [], []
                for i in range(n - 1, -1, -1):
                    if trainable[i]:
                        out.append(("dw", i))
                    if i > first:
                        out.append(("dx", i))
                    if trainable[i]:
                        (out if reorder else pending).append(("update", i))
                return out + sorted(pending, key=lambda s: s[1])
        """,
    },
    "dx of the first trainable layer is not pruned": {
        "task": "backward_schedule",
        "fails": ["pruning"],
        "replace": [("        if i > first:", "        if i >= first:")],
    },
    "QAS factor s_w^-1 instead of s_w^-2": {
        "task": "qas_step",
        "fails": ["values"],
        "replace": [("** -2).astype(np.float32)", "** -1).astype(np.float32)")],
    },
    "rebinds w_q instead of writing into it": {
        "task": "qas_step",
        "fails": ["in place, g unchanged"],
        "replace": [
            ("    w_q[...] = rounded.astype(np.int8)", "    w_q = rounded.astype(np.int8)")
        ],
    },
    "no clip of the shadow": {
        "task": "qas_step",
        "fails": ["values"],
        "replace": [("    np.clip(shadow, -127, 127, out=shadow)\n", "")],
    },
    "square of the sum over examples too": {
        "task": "fisher",
        "fails": ["conv activations (N, C, H, W)"],
        "replace": [
            (
                "return (per_example**2).sum(axis=0) / (2 * n)",
                "return per_example.sum(axis=0) ** 2 / (2 * n)",
            )
        ],
    },
    "sum of squares per position": {
        "task": "fisher",
        "fails": ["conv activations (N, C, H, W)"],
        "replace": [
            (
                "per_example = (a * g).reshape(n, c, -1).sum(axis=2)",
                "per_example = np.sqrt(((a * g).reshape(n, c, -1) ** 2).sum(axis=2))",
            )
        ],
    },
    "divides by N instead of 2N": {
        "task": "fisher",
        "fails": ["conv activations (N, C, H, W)", "linear (N, C)"],
        "replace": [("/ (2 * n)", "/ n")],
    },
    "score multiplies by the cost": {
        "task": "tinytrain_select",
        "fails": ["layer_scores"],
        "replace": [
            (
                "float(np.sum(potentials[name])) / ((params[name] / max_p) * (macs[name] / max_m))",
                "float(np.sum(potentials[name])) * ((params[name] / max_p) * (macs[name] / max_m))",
            )
        ],
    },
    "stops at the first layer that does not fit": {
        "task": "tinytrain_select",
        "fails": ["select_layers"],
        "code": """
            def select_layers(scores, cost, budget):
                left, chosen = budget, {}
                for name in sorted(scores, key=lambda k: -scores[k]):
                    fits = [r for r in (1.0, 0.5, 0.25, 0.125) if r * cost[name] <= left]
                    if not fits:
                        break
                    chosen[name] = fits[0]
                    left -= fits[0] * cost[name]
                return chosen
        """,
    },
}
