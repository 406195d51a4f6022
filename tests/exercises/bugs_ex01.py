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
    "Page-Hinkley mean before the sample is added": {
        "task": "page_hinkley",
        "fails": ["an increase: the alarm step"],
        "replace": [
            (
                "        self.n += 1\n        self.mean += (x - self.mean) / self.n\n"
                '        if self.mode == "up":\n            self.m += x - self.mean - self.delta\n',
                "        self.n += 1\n        old = self.mean\n"
                "        self.mean += (x - self.mean) / self.n\n"
                '        if self.mode == "up":\n            self.m += x - old - self.delta\n',
            )
        ],
    },
    "Page-Hinkley never restarts": {
        "task": "page_hinkley",
        "fails": ["min_instances and the restart after an alarm"],
        "replace": [
            (
                "            self.n, self.mean, self.m, self.extreme = 0, 0.0, 0.0, None\n"
                "            return True\n",
                "            return True\n",
            )
        ],
    },
    "Page-Hinkley down mode with the delta of up": {
        "task": "page_hinkley",
        "fails": ["a decrease with mode='down'"],
        "replace": [
            (
                "            self.m += x - self.mean + self.delta\n",
                "            self.m += x - self.mean - self.delta\n",
            )
        ],
    },
    "Page-Hinkley ignores min_instances": {
        "task": "page_hinkley",
        "fails": ["min_instances and the restart after an alarm"],
        "replace": [
            (
                "        if self.n >= self.min_instances and gap > self.threshold:\n",
                "        if gap > self.threshold:\n",
            )
        ],
    },
    "labels counted before any alarm": {
        "task": "trigger_policy",
        "fails": ["adaptation steps"],
        "replace": [
            (
                "    armed, buffered, steps = False, 0, []\n",
                "    armed, buffered, steps = True, 0, []\n",
            )
        ],
    },
    "a second alarm does not empty the buffer": {
        "task": "trigger_policy",
        "fails": ["an alarm while armed restarts the count"],
        "replace": [
            (
                "        if alarms[t]:\n            armed, buffered = True, 0\n",
                "        if alarms[t] and not armed:\n            armed, buffered = True, 0\n",
            )
        ],
    },
    "no check of min_examples against the capacity": {
        "task": "trigger_policy",
        "fails": ["min_examples outside 1..capacity is a ValueError"],
        "replace": [("    if not 1 <= min_examples <= capacity:\n", "    if min_examples < 0:\n")],
    },
    "a method exactly at the budget is refused": {
        "task": "trigger_policy",
        "fails": ["choose_method"],
        "replace": [
            (
                '        if c["peak_bytes"] > budget_bytes:\n',
                '        if c["peak_bytes"] >= budget_bytes:\n',
            )
        ],
    },
    "ties broken by the larger peak": {
        "task": "trigger_policy",
        "fails": ["choose_method"],
        "replace": [
            (
                '        key = (-c["accuracy"], c["peak_bytes"])\n',
                '        key = (-c["accuracy"], -c["peak_bytes"])\n',
            )
        ],
    },
}
