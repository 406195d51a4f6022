"""Plausible bugs of exercise 02 (pruning); format in tests/exercises/README.md."""

BUGS = {
    "ranks by signed value": {
        "task": "magnitude",
        "fails": ["prunes the smallest magnitudes"],
        "replace": [
            (
                "mask[np.argsort(np.abs(w).ravel())[:n_prune]]",
                "mask[np.argsort(w.ravel())[:n_prune]]",
            )
        ],
    },
    "prunes one too many": {
        "task": "magnitude",
        "fails": ["prunes the smallest magnitudes"],
        "replace": [("[:n_prune]] = False", "[: n_prune + 1]] = False")],
    },
    "absolute value taken in place": {
        "task": "magnitude",
        "fails": ["the weights are not modified"],
        "replace": [("np.argsort(np.abs(w).ravel())", "np.argsort(np.abs(w, out=w).ravel())")],
    },
    "one threshold per layer": {
        "task": "global_",
        "fails": ["one threshold for all layers"],
        "code": """
            def global_masks(weights, sparsity):
                return {name: magnitude_mask(w, sparsity) for name, w in weights.items()}
        """,
    },
    "masks as a list": {
        "task": "global_",
        "fails": ["a mask per layer, same keys and shapes"],
        "replace": [("    return masks\n", "    return list(masks.values())\n")],
    },
    "linear schedule": {
        "task": "schedule",
        "fails": ["the cubic curve"],
        "replace": [("(1 - progress) ** 3", "(1 - progress)")],
    },
    "frequency ignored": {
        "task": "schedule",
        "fails": ["held between pruning steps, from an initial sparsity"],
        "replace": [
            ("    t = begin + ((step - begin) // frequency) * frequency\n", "    t = step\n")
        ],
    },
    "final sparsity only from after the end": {
        "task": "schedule",
        "fails": ["before, at and after the schedule"],
        "replace": [("    if step >= end:\n", "    if step > end:\n")],
    },
    "gradient not masked": {
        "task": "masked_sgd",
        "fails": ["w and velocity after one step", "pruned weights stay zero over many steps"],
        "replace": [("    g = grad * mask\n", "    g = grad\n")],
    },
    "weights not masked after the step": {
        "task": "masked_sgd",
        "fails": ["w and velocity after one step"],
        "replace": [("    w -= lr * velocity\n    w *= mask\n", "    w -= lr * velocity\n")],
    },
    "gradient masked in place": {
        "task": "masked_sgd",
        "fails": ["grad is not modified"],
        "replace": [("    g = grad * mask\n", "    grad *= mask\n    g = grad\n")],
    },
    "velocity rebound instead of updated in place": {
        "task": "masked_sgd",
        "fails": ["w and velocity after one step"],
        "replace": [
            (
                "    velocity *= momentum\n    velocity += g\n",
                "    velocity = momentum * velocity + g\n",
            )
        ],
    },
    "column-major order": {
        "task": "csr",
        "fails": ["to_csr values", "to_csr col_index and row_ptr"],
        "code": """
            def to_csr(W):
                cols, rows = np.nonzero(W.T)
                row_ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=W.shape[0]))])
                return W[rows, cols], cols, row_ptr
        """,
    },
    "row pointers without the leading zero": {
        "task": "csr",
        "fails": ["to_csr col_index and row_ptr"],
        "replace": [
            (
                "row_ptr = np.concatenate([[0], np.cumsum(",
                "row_ptr = np.concatenate([[], np.cumsum(",
            )
        ],
    },
    "matvec drops the last value of each row": {
        "task": "csr",
        "fails": ["csr_matvec"],
        "replace": [
            (
                "        lo, hi = row_ptr[r], row_ptr[r + 1]\n",
                "        lo, hi = row_ptr[r], max(row_ptr[r], row_ptr[r + 1] - 1)\n",
            )
        ],
    },
    "keeps the smallest filters": {
        "task": "channels",
        "fails": ["l1_keep: the largest L1 norms, sorted"],
        "replace": [("np.sort(np.argsort(-l1)[:n_keep])", "np.sort(np.argsort(l1)[:n_keep])")],
    },
    "kept channels not sorted": {
        "task": "channels",
        "fails": ["l1_keep: the largest L1 norms, sorted"],
        "replace": [("np.sort(np.argsort(-l1)[:n_keep])", "np.argsort(-l1)[:n_keep]")],
    },
    "conv2 sliced on its output channels": {
        "task": "channels",
        "fails": ["prune_conv_pair slices"],
        "replace": [("w2[:, keep].copy()", "w2[keep].copy()")],
    },
    "dropped channels zeroed in place": {
        "task": "channels",
        "fails": ["prune_conv_pair leaves its inputs alone"],
        "replace": [
            (
                "    return w1[keep].copy(), b1[keep].copy(), w2[:, keep].copy()\n",
                "    w1[np.setdiff1d(np.arange(len(w1)), keep)] = 0\n"
                "    return w1[keep].copy(), b1[keep].copy(), w2[:, keep].copy()\n",
            )
        ],
    },
}
