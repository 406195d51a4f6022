"""Plausible mistakes in exercise 13 (deployment), and the checks that must catch them."""

BUGS = {
    "HWIO instead of OHWI": {
        "task": "layout",
        "fails": ["conv layout"],
        "replace": [
            (
                "axes = (1, 2, 3, 0) if depthwise else (0, 2, 3, 1)",
                "axes = (1, 2, 3, 0) if depthwise else (2, 3, 1, 0)",
            )
        ],
    },
    "depthwise keeps the channel first": {
        "task": "layout",
        "fails": ["depthwise layout"],
        "replace": [("axes = (1, 2, 3, 0) if depthwise else (0, 2, 3, 1)", "axes = (0, 2, 3, 1)")],
    },
    "padding split the other way (more before)": {
        "task": "padding",
        "fails": ["stride 2"],
        "replace": [
            (
                "return int(out), int(total // 2), int(total - total // 2)",
                "return int(out), int(total - total // 2), int(total // 2)",
            )
        ],
    },
    "output size floored": {
        "task": "padding",
        "fails": ["stride 2"],
        "replace": [("out = -(-size // stride)", "out = size // stride")],
    },
    "numpy round (ties to even) for TFLite": {
        "task": "requant",
        "fails": ["tflite rounding"],
        "replace": [("r = np.sign(v) * np.floor(np.abs(v) + 0.5)", "r = np.round(v)")],
    },
    "ONNX rounded half away": {
        "task": "requant",
        "fails": ["onnx rounding"],
        "replace": [("r = np.rint(v)", "r = np.sign(v) * np.floor(np.abs(v) + 0.5)")],
    },
    "no clamp before the cast": {
        "task": "requant",
        "fails": ["int8 and clamped"],
        "replace": [
            (
                "return np.clip(r + zero_point, -128, 127).astype(np.int8)",
                "return (r + zero_point).astype(np.int8)",
            )
        ],
    },
    "unknown mode falls through": {
        "task": "requant",
        "fails": ["unknown mode"],
        "replace": [('raise ValueError(f"unknown mode {mode!r}")', "r = np.rint(v)")],
    },
    "shape as a tuple": {
        "task": "manifest",
        "fails": ["entry"],
        "replace": [('"shape": list(a.shape)', '"shape": a.shape')],
    },
    "matches compares only the checksum": {
        "task": "manifest",
        "fails": ["detects changes"],
        "replace": [
            (
                "return bool(manifest_entry(a) == entry)",
                'return manifest_entry(a)["sha256"] == entry["sha256"]',
            )
        ],
    },
    "difference in float32": {
        "task": "differences",
        "fails": ["diff values", "apply is exact"],
        "code": """
            def compute_diff(base, trained):
                return {k: trained[k] - base[k] for k in base}

            def apply_diff(base, delta):
                return {k: (base[k] + delta[k].astype(np.float32)) for k in base}
        """,
    },
    "apply modifies the base in place": {
        "task": "differences",
        "fails": ["apply is exact"],
        "code": """
            def apply_diff(base, delta):
                for k in base:
                    base[k][...] = (base[k].astype(np.float64) + delta[k]).astype(np.float32)
                return base
        """,
    },
    "int8 with ties to even": {
        "task": "compression",
        "fails": ["int8"],
        "replace": [("q = np.sign(v) * np.floor(np.abs(v) + 0.5)", "q = np.round(v)")],
    },
    "top-k indices in magnitude order": {
        "task": "compression",
        "fails": ["topk"],
        "replace": [("index = np.sort(order).astype(np.int64)", "index = order.astype(np.int64)")],
    },
}
