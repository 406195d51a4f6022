"""Plausible bugs of exercise 00 (foundations); format in tests/exercises/README.md."""

BUGS = {
    "forward difference": {
        "task": "gradient_check",
        "fails": ["numerical_gradient of a smooth function", "numerical_gradient uses the step h"],
        "code": """
            def numerical_gradient(f, x, h=1e-5):
                grad = np.zeros(x.shape)
                for i in np.ndindex(x.shape):
                    old = x[i]; fx = f(x); x[i] = old + h
                    grad[i] = (f(x) - fx) / h; x[i] = old
                return grad
        """,
    },
    "x not restored": {
        "task": "gradient_check",
        "fails": ["numerical_gradient leaves x as it was"],
        "code": """
            def numerical_gradient(f, x, h=1e-5):
                grad = np.zeros(x.shape)
                for i in np.ndindex(x.shape):
                    old = x[i]; x[i] = old + h; fp = f(x); x[i] = old - h
                    grad[i] = (fp - f(x)) / (2 * h)
                return grad
        """,
    },
    "relative error without floor": {
        "task": "gradient_check",
        "fails": ["relative_error"],
        "code": """
            def relative_error(a, b):
                return float(np.max(np.abs(a - b) / (np.abs(a) + np.abs(b))))
        """,
    },
    "linear upcasts float32": {
        "task": "linear_forward",
        "fails": ["shape and dtype (float32 in, float32 out)"],
        "code": """
            def linear_forward(x, w, b):
                return x.astype(np.float64) @ w.T.astype(np.float64) + b
        """,
    },
    "linear without bias": {
        "task": "linear_forward",
        "fails": ["values"],
        "replace": [("    return x @ w.T + b\n", "    return x @ w.T\n")],
    },
    "db is a mean": {
        "task": "linear_backward",
        "fails": ["db"],
        "replace": [("db = dout.sum(axis=0)", "db = dout.mean(axis=0)")],
    },
    "dx and dw swapped in the return": {
        "task": "linear_backward",
        "fails": ["returns (dx, dw, db) with the shapes of x, w and b", "dx", "dw"],
        "replace": [("return dx, dw, db", "return dw, dx, db")],
    },
    "im2col kernel-major rows": {
        "task": "im2col",
        "fails": ["values with stride 1 and no padding"],
        "code": """
            _right = im2col
            def im2col(x, kernel_size, stride=1, padding=0):
                cols = _right(x, kernel_size, stride, padding)
                kh, kw = pair(kernel_size)
                n, c = x.shape[:2]
                return cols.reshape(n, c, kh * kw, -1).transpose(0, 2, 1, 3).reshape(cols.shape)
        """,
    },
    "im2col ignores stride": {
        "task": "im2col",
        "fails": ["values with stride, padding and rectangular kernels"],
        "code": """
            _right = im2col
            def im2col(x, kernel_size, stride=1, padding=0):
                cols = _right(x, kernel_size, 1, padding)
                return cols[:, :, : _right(x, kernel_size, stride, padding).shape[2]]
        """,
    },
    "im2col upcasts float32": {
        "task": "im2col",
        "fails": ["shape and dtype (float32 stays float32)"],
        "replace": [
            (
                "cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)",
                "cols = np.empty((n, c, kh, kw, oh, ow))",
            )
        ],
    },
    "conv flips the kernel": {
        "task": "conv2d_forward",
        "fails": ["values"],
        "code": """
            _right = conv2d_forward
            def conv2d_forward(x, w, b=None, stride=1, padding=0):
                return _right(x, w[:, :, ::-1, ::-1], b, stride, padding)
        """,
    },
    "conv pads only one side": {
        "task": "conv2d_forward_hidden",
        "fails": ["float32, asymmetric stride and padding, no bias"],
        "code": """
            _right = conv2d_forward
            def conv2d_forward(x, w, b=None, stride=1, padding=0):
                p = pair(padding)
                x = np.pad(x, ((0, 0), (0, 0), (p[0], 0), (p[1], 0)))
                return _right(x, w, b, stride, 0)
        """,
    },
    "unstable softmax": {
        "task": "softmax_cross_entropy",
        "fails": ["large logits (no overflow)"],
        "code": """
            def softmax_cross_entropy(logits, y):
                n = len(y)
                p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                loss = -np.log(p[np.arange(n), y]).mean()
                p[np.arange(n), y] -= 1
                return float(loss), p / n
        """,
    },
    "gradient not divided by N": {
        "task": "softmax_cross_entropy",
        "fails": ["dlogits"],
        "replace": [("return float(loss), dlogits / n", "return float(loss), dlogits")],
    },
    "lr inside the velocity": {
        "task": "sgd_momentum_step",
        "fails": ["values"],
        "code": """
            def sgd_momentum_step(w, grad, velocity, lr, momentum=0.9):
                velocity *= momentum
                velocity += lr * grad
                w -= velocity
                return w, velocity
        """,
    },
    "not in place": {
        "task": "sgd_momentum_step",
        "fails": ["updates w and velocity in place and returns them"],
        "code": """
            def sgd_momentum_step(w, grad, velocity, lr, momentum=0.9):
                velocity = momentum * velocity + grad
                return w - lr * velocity, velocity
        """,
    },
}
