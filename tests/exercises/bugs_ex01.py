"""Plausible bugs of exercise 01 (classic learners); format in tests/exercises/README.md."""

BUGS = {
    "softmax without the max shift": {
        "task": "logistic",
        "fails": ["softmax of large scores"],
        "replace": [("    e = np.exp(z - np.max(z))\n", "    e = np.exp(z)\n")],
    },
    "scores computed after the weight decay": {
        "task": "logistic",
        "fails": ["logistic_sgd_step updates W in place", "logistic_sgd_step updates b in place"],
        "replace": [
            (
                "    g = softmax(W @ x + b)\n    g[y] -= 1.0\n    W *= 1.0 - eta * alpha\n",
                "    W *= 1.0 - eta * alpha\n    g = softmax(W @ x + b)\n    g[y] -= 1.0\n",
            )
        ],
    },
    "intercept penalised": {
        "task": "logistic",
        "fails": ["logistic_sgd_step updates b in place"],
        "replace": [("    b -= eta * g\n", "    b *= 1.0 - eta * alpha\n    b -= eta * g\n")],
    },
    "weights rebound instead of updated in place": {
        "task": "logistic",
        "fails": ["logistic_sgd_step updates W in place"],
        "replace": [("    W -= eta * np.outer(g, x)\n", "    W = W - eta * np.outer(g, x)\n")],
    },
    "pegasos step forgets alpha": {
        "task": "pegasos",
        "fails": ["margin violated"],
        "replace": [("    eta = 1.0 / (alpha * t)\n", "    eta = 1.0 / t\n")],
    },
    "pegasos projects every time": {
        "task": "pegasos",
        "fails": ["projection"],
        "replace": [
            (
                "        if norm > radius:\n            w *= radius / norm\n",
                "        w *= radius / norm\n",
            )
        ],
    },
    "pegasos ignores the margin": {
        "task": "pegasos",
        "fails": ["margin satisfied"],
        "replace": [("    if violated:\n        w += eta * y * x\n", "    w += eta * y * x\n")],
    },
    "merged variance without the cross term": {
        "task": "merge",
        "fails": ["statistics of all the examples"],
        "replace": [("m * s2 + (n * m / total) * (mean - mu) ** 2", "m * s2")],
    },
    "unbiased batch variance": {
        "task": "merge",
        "fails": ["statistics of all the examples", "n = 0: the batch's own statistics"],
        "replace": [
            (
                "mu, s2 = X.mean(axis=0), X.var(axis=0)",
                "mu, s2 = X.mean(axis=0), X.var(axis=0, ddof=1)",
            )
        ],
    },
    "merge updates the mean in place": {
        "task": "merge",
        "fails": ["mean and var are not modified"],
        "replace": [
            (
                "    new_mean = (n * mean + m * mu) / total\n",
                "    mean *= n / total\n    mean += m * mu / total\n    new_mean = mean\n",
            )
        ],
    },
    "epsilon from the latest batch": {
        "task": "gaussian_nb",
        "fails": ["variances with epsilon from all the data"],
        "replace": [
            (
                "        self.epsilon_ = self.var_smoothing * overall.max()\n",
                "        self.epsilon_ = self.var_smoothing * X.var(axis=0).max()\n",
            )
        ],
    },
    "classes kept in the given order": {
        "task": "gaussian_nb",
        "fails": ["classes, counts and means"],
        "replace": [
            (
                "            self.classes_ = np.unique(classes)\n            k, d",
                "            self.classes_ = np.asarray(classes)\n            k, d",
            )
        ],
    },
    "partial_fit returns nothing": {
        "task": "gaussian_nb",
        "fails": ["partial_fit returns self"],
        "replace": [
            (
                "        self.var_ = raw + self.epsilon_\n        return self\n",
                "        self.var_ = raw + self.epsilon_\n",
            )
        ],
    },
    "variance without smoothing in predict": {
        "task": "gaussian_nb",
        "fails": ["predictions (a class not seen is never predicted)"],
        "replace": [
            (
                "            v = self.var_[k]\n",
                "            v = self.var_[k] - self.epsilon_ + 1e-12\n",
            )
        ],
    },
    "centroid replaced by the batch mean": {
        "task": "nearest_class_mean",
        "fails": ["centroids and counts after a stream"],
        "replace": [
            (
                "self.centroids_[k] += (Xk.sum(axis=0) - len(Xk) * self.centroids_[k]) / total",
                "self.centroids_[k] = Xk.mean(axis=0)",
            )
        ],
    },
    "unseen classes can be predicted": {
        "task": "nearest_class_mean",
        "fails": ["predictions (a class not seen is never predicted)"],
        "replace": [("        d2[:, self.class_count_ == 0] = np.inf\n", "")],
    },
}
