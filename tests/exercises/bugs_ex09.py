"""Plausible bugs of exercise 09 (federated learning); format in tests/exercises/README.md."""

BUGS = {
    "unstable sort of the labels": {
        "task": "partition",
        "fails": ["the paper's deal (default_rng(seed).permutation)"],
        "replace": [
            (
                'order = np.argsort(labels, kind="stable")[: num_shards * size]',
                'order = np.argsort(-labels, kind="stable")[::-1][: num_shards * size]',
            )
        ],
    },
    "shards dealt in order, not at random": {
        "task": "partition",
        "fails": ["the paper's deal (default_rng(seed).permutation)"],
        "replace": [
            (
                "deal = np.random.default_rng(seed).permutation(num_shards)"
                ".reshape(num_clients, -1)",
                "deal = np.arange(num_shards).reshape(num_clients, -1)",
            )
        ],
    },
    "one permutation for all epochs": {
        "task": "client_update",
        "fails": ["mini-batches from one permutation per epoch"],
        "code": """
            def client_update(w, x, y, epochs, batch_size, lr, seed, grad_fn):
                rng = np.random.default_rng(seed)
                local = np.array(w, dtype=np.float64)
                order = rng.permutation(len(y))
                for _ in range(epochs):
                    if batch_size is None:
                        local -= lr * grad_fn(local, x, y)
                        continue
                    for s in range(0, len(y), batch_size):
                        idx = order[s : s + batch_size]
                        local -= lr * grad_fn(local, x[idx], y[idx])
                return local - w
        """,
    },
    "updates w in place and returns the weights": {
        "task": "client_update",
        "fails": ["returns a float64 difference, w unchanged"],
        "replace": [
            ("local = np.array(w, dtype=np.float64, copy=True)", "local = w"),
            ("return local - w", "return local"),
        ],
    },
    "drops the last partial batch": {
        "task": "client_update",
        "fails": ["mini-batches from one permutation per epoch"],
        "replace": [
            (
                "for start in range(0, n, batch_size):",
                "for start in range(0, n - batch_size + 1, batch_size):",
            )
        ],
    },
    "unweighted mean": {
        "task": "fedavg_step",
        "fails": ["weighted by n_k / m_t"],
        "replace": [
            (
                "return (n / n.sum()) @ np.asarray(deltas, dtype=np.float64)",
                "return np.asarray(deltas, dtype=np.float64).mean(axis=0)",
            )
        ],
    },
    "scale over 128": {
        "task": "int8",
        "fails": ["quantize_int8 (q, scale)"],
        "replace": [("np.abs(v).max() / 127.0", "np.abs(v).max() / 128.0")],
    },
    "dequantize divides by the scale": {
        "task": "int8",
        "fails": ["dequantize_int8 and the zero vector"],
        "replace": [
            (
                "return (q.astype(np.float32) * np.float32(scale)).astype(np.float32)",
                "return (q.astype(np.float32) / np.float32(scale)).astype(np.float32)",
            )
        ],
    },
    "scale from the largest value, not magnitude": {
        "task": "int8",
        "fails": ["quantize_int8 (q, scale)"],
        "replace": [("np.abs(v).max() / 127.0", "v.max() / 127.0")],
    },
    "no error feedback": {
        "task": "topk",
        "fails": ["indices (sorted int32) and values", "the new residual"],
        "replace": [
            (
                "np.asarray(delta, dtype=np.float32) + np.asarray(residual, dtype=np.float32)",
                "np.asarray(delta, dtype=np.float32) + 0 * np.asarray(residual, dtype=np.float32)",
            )
        ],
    },
    "largest values instead of magnitudes": {
        "task": "topk",
        "fails": ["indices (sorted int32) and values"],
        "replace": [
            (
                'idx = np.sort(np.argsort(-np.abs(v), kind="stable")[:k])',
                'idx = np.sort(np.argsort(-v, kind="stable")[:k])',
            )
        ],
    },
    "trims beta m in total, not at each end": {
        "task": "robust",
        "fails": ["trimmed_mean"],
        "replace": [
            (
                "return d[c : len(d) - c].mean(axis=0)",
                "return d[c // 2 : len(d) - (c - c // 2)].mean(axis=0)",
            )
        ],
    },
    "mean instead of median": {
        "task": "robust",
        "fails": ["coordinate_median"],
        "replace": [
            (
                "return np.median(np.asarray(deltas, dtype=np.float64), axis=0)",
                "return np.asarray(deltas, dtype=np.float64).mean(axis=0)",
            )
        ],
    },
    "counts the distance to itself": {
        "task": "krum",
        "fails": ["the lowest score"],
        "replace": [
            ("np.sort(np.delete(dist[i], i))[: m - f - 2]", "np.sort(dist[i])[: m - f - 2]")
        ],
    },
    "no check of m > 2f + 2": {
        "task": "krum",
        "fails": ["m <= 2f + 2 is refused"],
        "replace": [
            (
                "    if m <= 2 * f + 2:\n"
                '        raise ValueError(f"krum needs m > 2f + 2, got m={m}, f={f}")\n',
                "",
            )
        ],
    },
    "signs swapped": {
        "task": "masks",
        "fails": ["y_u for one user"],
        "replace": [
            (
                "        if v > uid:\n            y += mask\n"
                "        elif v < uid:\n            y -= mask",
                "        if v < uid:\n            y += mask\n"
                "        elif v > uid:\n            y -= mask",
            )
        ],
    },
    "every mask added": {
        "task": "masks",
        "fails": ["y_u for one user", "masks cancel in the sum; x unchanged"],
        "replace": [
            (
                "        elif v < uid:\n            y -= mask",
                "        elif v < uid:\n            y += mask",
            )
        ],
    },
    "input gradient of the first layer counted too": {
        "task": "step_energy",
        "fails": [
            "MACs: forward, weight and input gradients (none for the first layer's input)",
            "energy = MACs * e_mac + bytes * e_byte",
        ],
        "replace": [
            (
                "macs = batch_size * (2 * fwd + fwd - pairs[0][0] * pairs[0][1])",
                "macs = batch_size * 3 * fwd",
            )
        ],
    },
    "backward counted like the forward (no weight gradients)": {
        "task": "step_energy",
        "fails": [
            "MACs: forward, weight and input gradients (none for the first layer's input)",
            "energy = MACs * e_mac + bytes * e_byte",
        ],
        "replace": [
            (
                "macs = batch_size * (2 * fwd + fwd - pairs[0][0] * pairs[0][1])",
                "macs = batch_size * 2 * fwd",
            )
        ],
    },
    "biases left out of the parameters": {
        "task": "step_energy",
        "fails": [
            "bytes: 3 P parameter values and the forward activations, 4 bytes each",
            "energy = MACs * e_mac + bytes * e_byte",
        ],
        "replace": [
            ("params = sum(a * b + b for a, b in pairs)", "params = sum(a * b for a, b in pairs)")
        ],
    },
    "bytes counted as values (float32 forgotten)": {
        "task": "step_energy",
        "fails": [
            "bytes: 3 P parameter values and the forward activations, 4 bytes each",
            "energy = MACs * e_mac + bytes * e_byte",
        ],
        "replace": [("return int(macs), int(4 * values)", "return int(macs), int(values)")],
    },
    "energy of the MACs only": {
        "task": "step_energy",
        "fails": ["energy = MACs * e_mac + bytes * e_byte"],
        "replace": [("return float(macs * e_mac + nbytes * e_byte)", "return float(macs * e_mac)")],
    },
    "int8 update without its scale": {
        "task": "radio",
        "fails": ["update bytes as the compressors send them", "rounds vs the raw upload"],
        "replace": [("        return int(d + 4)", "        return int(d)")],
    },
    "top-k sends the values only": {
        "task": "radio",
        "fails": ["update bytes as the compressors send them", "rounds vs the raw upload"],
        "replace": [("        return int(8 * k)", "        return int(4 * k)")],
    },
    "raw upload forgets the model download": {
        "task": "radio",
        "fails": ["rounds vs the raw upload"],
        "replace": [
            (
                "raw = num_samples * sample_bytes * e_tx + model_down",
                "raw = num_samples * sample_bytes * e_tx",
            )
        ],
    },
    "download priced at the send rate": {
        "task": "radio",
        "fails": ["rounds vs the raw upload"],
        "replace": [("model_down = 4 * d * e_rx", "model_down = 4 * d * e_tx")],
    },
}
