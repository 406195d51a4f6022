"""Plausible bugs in exercise 06 (checkpointing) and the checks that catch them."""

BUGS = {
    "shorter segments first": {
        "task": "segments",
        "fails": ["k near-equal segments, longer first"],
        "replace": [
            (
                "lengths = [n // k + (1 if j < n % k else 0) for j in range(k)]",
                "lengths = [n // k + (1 if j >= k - n % k else 0) for j in range(k)]",
            )
        ],
    },
    "default k truncates sqrt(n)": {
        "task": "segments",
        "fails": ["default sqrt(n) and errors"],
        "replace": [("k = max(1, round(np.sqrt(n)))", "k = max(1, int(np.sqrt(n)))")],
    },
    "a segment's own boundary counted twice": {
        "task": "cost_model",
        "fails": ["peak_memory"],
        "replace": [
            (
                "peak = max(peak, kept + sum(sizes[lo:hi]))\n        kept += sizes[lo]",
                "kept += sizes[lo]\n        peak = max(peak, kept + sum(sizes[lo:hi]))",
            )
        ],
    },
    "the last segment is recomputed too": {
        "task": "cost_model",
        "fails": ["recompute_cost"],
        "replace": [("return float(sum(costs[:last_start]))", "return float(sum(costs[:-1]))")],
    },
    "plain backprop keeps outputs instead of inputs": {
        "task": "recompute",
        "fails": ["plain_backprop"],
        "replace": [
            (
                "        inputs.append(h)\n        h = layer_forward(h, w)",
                "        h = layer_forward(h, w)\n        inputs.append(h)",
            )
        ],
    },
    "every segment recomputed from the batch": {
        "task": "recompute",
        "fails": ["checkpointed gradients bit-identical to plain"],
        "replace": [("            kept[lo] = h\n", "            kept[lo] = x\n")],
    },
    "recomputation not counted": {
        "task": "recompute",
        "fails": ["number of layer forwards"],
        "replace": [
            (
                "                h = layer_forward(h, weights[i])\n                forwards += 1\n",
                "                h = layer_forward(h, weights[i])\n",
            )
        ],
    },
    "new masks when recomputing": {
        "task": "dropout",
        "fails": ["gradients with the masks of the first pass"],
        "replace": [("            generator.bit_generator.state = state\n", "")],
    },
    "dropout scale forgotten in backward": {
        "task": "dropout",
        "fails": ["gradients with the masks of the first pass"],
        "replace": [
            (
                "g, grads[i] = layer_backward(g * mask / (1 - p), h_in, weights[i])",
                "g, grads[i] = layer_backward(g * mask, h_in, weights[i])",
            )
        ],
    },
    "greedy planner": {
        "task": "planner",
        "fails": ["least recomputation (against brute force)"],
        "code": """
            def plan_checkpoints(sizes, costs, budget):
                starts, kept, lo = [0], 0, 0
                for i in range(1, len(sizes)):
                    if kept + sum(sizes[lo : i + 1]) > budget:
                        kept += sizes[lo]
                        starts.append(i)
                        lo = i
                if peak_memory(sizes, tuple(starts[1:])) > budget:
                    raise ValueError("no plan")
                return tuple(starts[1:])
        """,
    },
    "no error when nothing fits": {
        "task": "planner",
        "fails": ["raises when nothing fits"],
        "replace": [
            (
                'raise ValueError(f"plan_checkpoints: no segmentation fits in {budget}")',
                "return tuple(range(1, n))",
            )
        ],
    },
}
