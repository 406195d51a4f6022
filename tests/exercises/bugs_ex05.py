"""Plausible bugs in exercise 05 (layer-wise training) and the checks that catch them."""

BUGS = {
    "the cache keeps the output, not the input": {
        "task": "block",
        "fails": ["cache: (h, mask), or None"],
        "replace": [
            (
                "return out, ((h, mask) if save else None)",
                "return out, ((out, mask) if save else None)",
            )
        ],
    },
    "a frozen block keeps its cache": {
        "task": "block",
        "fails": ["cache: (h, mask), or None"],
        "replace": [("return out, ((h, mask) if save else None)", "return out, (h, mask)")],
    },
    "db is a mean": {
        "task": "block",
        "fails": ["backward gradients"],
        "replace": [
            ("return g @ w, g.T @ h, g.sum(axis=0)", "return g @ w, g.T @ h, g.mean(axis=0)")
        ],
    },
    "no max shift": {
        "task": "loss",
        "fails": ["large logits"],
        "replace": [("z = logits - logits.max(axis=1, keepdims=True)", "z = logits")],
    },
    "gradient not divided by the batch": {
        "task": "loss",
        "fails": ["loss and gradient"],
        "replace": [("return float(loss), grad / n", "return float(loss), grad")],
    },
    "the last frozen block is skipped": {
        "task": "frozen",
        "fails": ["output of the frozen blocks"],
        "replace": [("for w, b in frozen:", "for w, b in frozen[:-1]:")],
    },
    "updates out of place": {
        "task": "stage",
        "fails": ["block updated in place", "head updated in place"],
        "replace": [("        p -= lr * grad", "        p = p - lr * grad")],
    },
    "head gradient from the block's input": {
        "task": "stage",
        "fails": ["head updated in place"],
        "replace": [
            (
                "dv, dc = dlogits.T @ out, dlogits.sum(axis=0)",
                "dv, dc = dlogits.T @ h, dlogits.sum(axis=0)",
            )
        ],
    },
    "every block trained on the raw input": {
        "task": "greedy",
        "fails": ["parameters after training"],
        "replace": [
            (
                "loss = stage_step(x, y, blocks[:j], blocks[j], heads[j], lr)",
                "loss = stage_step(x, y, [], blocks[j], heads[j], lr)",
            )
        ],
    },
    "masks counted as floats": {
        "task": "memory",
        "fails": ["end to end", "one stage"],
        "replace": [
            (
                "return batch * widths[j] * 4 + batch * widths[j + 1] * 1",
                "return batch * widths[j] * 4 + batch * widths[j + 1] * 4",
            )
        ],
    },
    "end to end without the head": {
        "task": "memory",
        "fails": ["end to end"],
        "replace": [
            (
                "return int(sum(block(j) for j in range(len(widths) - 1)) + head(last))",
                "return int(sum(block(j) for j in range(len(widths) - 1)))",
            )
        ],
    },
}
