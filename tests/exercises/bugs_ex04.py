"""Plausible mistakes in exercise 04 (sparse update), and the checks that must catch them."""

BUGS = {
    "floor instead of ceil": {
        "task": "select",
        "fails": ["int64, sorted, ceil(ratio * F) of them"],
        "replace": [("k = int(math.ceil(ratio * f - 1e-9))", "k = int(ratio * f)")],
    },
    "smallest norms chosen": {
        "task": "select",
        "fails": ["largest norms"],
        "replace": [
            (
                'order = np.argsort(-norms, kind="stable")',
                'order = np.argsort(norms, kind="stable")',
            )
        ],
    },
    "indices in norm order, not sorted": {
        "task": "select",
        "fails": ["int64, sorted, ceil(ratio * F) of them"],
        "replace": [
            ("return np.sort(order[:k]).astype(np.int64)", "return order[:k].astype(np.int64)")
        ],
    },
    "unstable sort breaks ties by the higher index": {
        "task": "select",
        "fails": ["ties"],
        "replace": [
            (
                'order = np.argsort(-norms, kind="stable")',
                'order = (len(norms) - 1 - np.argsort(-norms[::-1], kind="stable"))',
            )
        ],
    },
    "gradient transposed against the input": {
        "task": "partial_gradient",
        "fails": ["values"],
        "replace": [
            (
                "return (dout[:, channels].T @ x).astype(x.dtype)",
                "return (dout[:, channels].T @ x[::-1]).astype(x.dtype)",
            )
        ],
    },
    "gradient averaged over the batch": {
        "task": "partial_gradient",
        "fails": ["values"],
        "replace": [
            (
                "return (dout[:, channels].T @ x).astype(x.dtype)",
                "return (dout[:, channels].T @ x / len(x)).astype(x.dtype)",
            )
        ],
    },
    "float64 result": {
        "task": "partial_gradient",
        "fails": ["shape and dtype"],
        "replace": [
            (
                "return (dout[:, channels].T @ x).astype(x.dtype)",
                "return dout[:, channels].T.astype(np.float64) @ x",
            )
        ],
    },
    "update on a copy": {
        "task": "sgd_step",
        "fails": ["selected rows updated in place"],
        "replace": [
            (
                "    w[channels] -= lr * grad_rows\n",
                "    w = w.copy()\n    w[channels] -= lr * grad_rows\n",
            )
        ],
    },
    "every row updated with the first gradient row": {
        "task": "sgd_step",
        "fails": ["others kept"],
        "replace": [
            (
                "    w[channels] -= lr * grad_rows\n",
                "    w[channels] -= lr * grad_rows\n    w[:] -= 0.0 * w + lr * grad_rows[0]\n",
            )
        ],
    },
    "depthwise keeps its whole input": {
        "task": "memory",
        "fails": ["gradients and activations"],
        "replace": [
            ('activations += x * c // f if layer["type"] == "depthwise" else x', "activations += x")
        ],
    },
    "gradients counted in int8 bytes": {
        "task": "memory",
        "fails": ["gradients and activations"],
        "replace": [
            (
                'gradients += 4 * c * (layer["weight_size"] // f)',
                'gradients += c * (layer["weight_size"] // f)',
            )
        ],
    },
    "masks from the first layer, always": {
        "task": "memory",
        "fails": ["masks"],
        "replace": [("start = min(trained) if trained else count", "start = 0")],
    },
    "masks one byte per element": {
        "task": "memory",
        "fails": ["masks"],
        "replace": [
            (
                '-(-n * int(np.prod(layer["out_shape"])) // 8)',
                'n * int(np.prod(layer["out_shape"]))',
            )
        ],
    },
    "bias depth forgotten for the masks": {
        "task": "memory",
        "fails": ["masks"],
        "replace": [("    if bias_depth:\n        trained.append(first_bias)\n", "")],
    },
    "greedy by gain instead of exhaustive": {
        "task": "exact",
        "fails": ["optimal"],
        "code": """
            def exact_search(costs, gains, budget):
                choice, used = [0] * len(costs), 0
                for i in sorted(range(len(costs)), key=lambda i: -max(gains[i])):
                    for j in sorted(range(len(costs[i])), key=lambda j: -gains[i][j]):
                        if used + costs[i][j] <= budget:
                            choice[i], used = j, used + costs[i][j]
                            break
                return choice
        """,
    },
    "budget compared with <": {
        "task": "exact",
        "fails": ["optimal"],
        "code": """
            def exact_search(costs, gains, budget):
                best, best_gain = None, -np.inf
                for choice in itertools.product(*[range(len(c)) for c in costs]):
                    gain, cost = _gain_cost(choice, costs, gains)
                    if cost < budget and gain > best_gain:
                        best, best_gain = list(choice), gain
                return best
        """,
    },
    "over-budget genomes are not penalised": {
        "task": "evolution",
        "fails": ["within the budget"],
        "replace": [("return gain if cost <= budget else -np.inf", "return gain")],
    },
    "unseeded generator": {
        "task": "evolution",
        "fails": ["deterministic for a seed"],
        "replace": [
            (
                "rng = np.random.default_rng(seed)\n    sizes",
                "rng = np.random.default_rng()\n    sizes",
            )
        ],
    },
    "no selection: random search of one generation": {
        "task": "evolution",
        "fails": ["finds the optimum of small problems"],
        "replace": [("for _ in range(generations):", "for _ in range(0):")],
    },
}
