"""Chapter 01: streaming classifiers against scikit-learn, their conventions and their memory.

scikit-learn is a test-only oracle (``pip install -e ".[test]"``); its tests skip without it.
Tolerances, stated once:

* ``LinearSVM`` vs ``SGDClassifier(loss="hinge")``, any schedule: the same weights to 1e-9
  (relative to the largest weight) and the same predictions, over several ``partial_fit``
  calls.
* ``OnlineLogisticRegression(multi_class="ovr")`` vs ``SGDClassifier(loss="log_loss")``:
  the same to 1e-9 with "constant" and "invscaling" steps over the whole stream; with
  "optimal" (steps up to 10 at alpha=1e-4) SGD on the smooth log loss amplifies
  rounding-level differences (scikit-learn keeps ``w`` as ``scale * v``), so it is compared
  exactly over the first 300 examples only.
* multinomial ``OnlineLogisticRegression`` vs ``LogisticRegression`` (the same penalised
  objective, solved to convergence): objective within 5% and predictions agreeing on at
  least 95% of the test images after 20 SGD epochs.
* ``GaussianNB.fit``: the same means and variances, predictions identical;
  ``partial_fit``: the same means and raw variances, ``epsilon_`` differs (all data vs the
  latest batch), predictions agree on at least 99.5%.
* ``MultinomialNB``, ``NearestClassMean`` (vs ``NearestCentroid``): the same statistics to
  1e-12 and identical predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from tinyodl import classic, models
from tinyodl.data import load_mnist

CLASSES = np.arange(10)


@pytest.fixture(scope="module")
def mnist():
    """2,000 training and 1,000 test images of the shipped subset, flattened, in [0, 1]."""
    xi, y = load_mnist("train")
    xt, yt = load_mnist("test")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))[:2000]
    X = xi[idx].reshape(len(idx), -1) / 255.0
    Xt = xt[:1000].reshape(1000, -1) / 255.0
    return X, y[idx].astype(np.int64), Xt, yt[:1000].astype(np.int64)


def stream(est, X, y, batch, classes=CLASSES):
    for s in range(0, len(X), batch):
        est.partial_fit(X[s : s + batch], y[s : s + batch], classes=classes)
    return est


def assert_same_linear(ours, sk, Xt, rel=1e-9):
    scale = np.abs(sk.coef_).max()
    np.testing.assert_allclose(ours.coef_, sk.coef_, rtol=0, atol=rel * scale)
    np.testing.assert_allclose(ours.intercept_, sk.intercept_, rtol=0, atol=rel * scale)
    np.testing.assert_array_equal(ours.predict(Xt), sk.predict(Xt))
    assert ours.t_ == sk.t_


# ----------------------------------------------------------------------------- linear SGD


@pytest.mark.parametrize(
    "schedule",
    [
        dict(learning_rate="optimal", alpha=1e-4),
        dict(learning_rate="optimal", alpha=1e-2),
        dict(learning_rate="constant", eta0=0.05),
        dict(learning_rate="invscaling", eta0=0.5, power_t=0.4),
    ],
)
def test_linear_svm_equals_sgdclassifier_hinge(mnist, schedule):
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y, Xt, _ = mnist
    sk = linear_model.SGDClassifier(loss="hinge", shuffle=False, **schedule)
    ours = classic.LinearSVM(**schedule)
    stream(sk, X, y, 250)
    stream(ours, X, y, 250)
    assert_same_linear(ours, sk, Xt)


@pytest.mark.parametrize(
    "schedule, n",
    [
        (dict(learning_rate="constant", eta0=0.02), 2000),
        (dict(learning_rate="invscaling", eta0=0.5), 2000),
        (dict(learning_rate="optimal", alpha=1e-4), 300),
    ],
)
def test_ovr_logistic_equals_sgdclassifier_log_loss(mnist, schedule, n):
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y, Xt, _ = mnist
    sk = linear_model.SGDClassifier(loss="log_loss", shuffle=False, **schedule)
    ours = classic.OnlineLogisticRegression(multi_class="ovr", **schedule)
    stream(sk, X[:n], y[:n], 100)
    stream(ours, X[:n], y[:n], 100)
    assert_same_linear(ours, sk, Xt)
    np.testing.assert_allclose(ours.predict_proba(Xt), sk.predict_proba(Xt), atol=1e-9)


def _penalised_objective(est, X, y, alpha):
    s = X @ est.coef_.T + est.intercept_
    nll = logsumexp(s, axis=1) - s[np.arange(len(y)), np.searchsorted(est.classes_, y)]
    return float(nll.mean() + 0.5 * alpha * (est.coef_**2).sum())


@pytest.mark.slow
def test_multinomial_logistic_approaches_sklearn_optimum(mnist):
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y, Xt, _ = mnist
    X, y, alpha = X[:1000], y[:1000], 1e-2
    # LogisticRegression minimises 1/2 ||W||^2 + C sum_i loss_i: C = 1 / (n alpha) is ours
    sk = linear_model.LogisticRegression(C=1 / (len(X) * alpha), max_iter=3000, tol=1e-10)
    sk.fit(X, y)
    ours = classic.OnlineLogisticRegression(alpha=alpha)
    rng = np.random.default_rng(0)
    for _ in range(20):
        order = rng.permutation(len(X))
        ours.partial_fit(X[order], y[order], classes=CLASSES)
    best = _penalised_objective(sk, X, y, alpha)
    assert best <= _penalised_objective(ours, X, y, alpha) <= 1.05 * best
    assert np.mean(ours.predict(Xt) == sk.predict(Xt)) >= 0.95


def _numerical_grad(f, p, h=1e-6):
    g = np.zeros_like(p)
    for i in range(len(p)):
        e = np.zeros_like(p)
        e[i] = h
        g[i] = (f(p + e) - f(p - e)) / (2 * h)
    return g


@pytest.mark.parametrize("multi_class", ["multinomial", "ovr"])
def test_log_loss_gradient_matches_finite_differences(multi_class, rng):
    est = classic.OnlineLogisticRegression(multi_class=multi_class)
    p, k = rng.standard_normal(6) * 3, 2

    def loss(q):
        if multi_class == "multinomial":
            return logsumexp(q) - q[k]
        y = np.where(np.arange(len(q)) == k, 1.0, 0.0)
        return float(np.sum(np.logaddexp(0.0, q) - y * q))

    np.testing.assert_allclose(est._dloss(p.copy(), k), _numerical_grad(loss, p), atol=1e-7)


def test_hinge_subgradient_matches_finite_differences_away_from_kinks(rng):
    est = classic.LinearSVM()
    p = np.array([2.5, -0.3, 0.4, -2.0, 1.7])
    for k in range(len(p)):
        sign = np.where(np.arange(len(p)) == k, 1.0, -1.0)

        def loss(q, sign=sign):
            return float(np.sum(np.maximum(0.0, 1.0 - sign * q)))

        np.testing.assert_allclose(est._dloss(p, k), _numerical_grad(loss, p), atol=1e-8)


def test_pegasos_schedule_and_projection(mnist):
    X, y, _, _ = mnist
    alpha = 1e-3
    svm = classic.LinearSVM(alpha=alpha, learning_rate="pegasos", project=True, fit_intercept=False)
    assert svm.eta(1) == pytest.approx(1 / alpha) and svm.eta(10) == pytest.approx(0.1 / alpha)
    stream(svm, X[:500], y[:500], 50)
    norms = np.linalg.norm(svm.coef_, axis=1)
    assert norms.max() <= 1 / np.sqrt(alpha) * (1 + 1e-12)
    assert np.all(svm.intercept_ == 0)
    free = stream(
        classic.LinearSVM(alpha=alpha, learning_rate="pegasos", fit_intercept=False),
        X[:500],
        y[:500],
        50,
    )
    assert np.linalg.norm(free.coef_, axis=1).max() > 1 / np.sqrt(alpha)  # projection acted


def test_linear_models_learn_mnist(mnist):
    X, y, Xt, yt = mnist
    for est in (classic.LinearSVM(), classic.OnlineLogisticRegression()):
        assert stream(est, X, y, 100).score(Xt, yt) > 0.75


# ----------------------------------------------------------------------------- naive Bayes


def test_gaussian_nb_fit_equals_sklearn(mnist):
    naive_bayes = pytest.importorskip("sklearn.naive_bayes")
    X, y, Xt, _ = mnist
    sk = naive_bayes.GaussianNB().fit(X, y)
    ours = classic.GaussianNB().fit(X, y)
    np.testing.assert_allclose(ours.theta_, sk.theta_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.var_, sk.var_, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(ours.class_count_, sk.class_count_)
    np.testing.assert_array_equal(ours.predict(Xt), sk.predict(Xt))
    np.testing.assert_allclose(ours.predict_proba(Xt), sk.predict_proba(Xt), atol=1e-6)


def test_gaussian_nb_partial_fit_matches_sklearn(mnist):
    naive_bayes = pytest.importorskip("sklearn.naive_bayes")
    X, y, Xt, _ = mnist
    sk = stream(naive_bayes.GaussianNB(), X, y, 300)
    ours = stream(classic.GaussianNB(), X, y, 300)
    np.testing.assert_allclose(ours.theta_, sk.theta_, rtol=0, atol=1e-12)
    raw_ours, raw_sk = ours.var_ - ours.epsilon_, sk.var_ - sk.epsilon_
    np.testing.assert_allclose(raw_ours, raw_sk, rtol=0, atol=1e-12)
    assert np.mean(ours.predict(Xt) == sk.predict(Xt)) >= 0.995
    # our epsilon is that of all the data: the same as a single fit's
    assert ours.epsilon_ == pytest.approx(naive_bayes.GaussianNB().fit(X, y).epsilon_, rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 119), max_size=6, unique=True))
def test_gaussian_nb_does_not_depend_on_batching(cuts):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 5)) * rng.uniform(0.1, 3, 5) + rng.standard_normal(5)
    y = rng.integers(0, 3, 120)
    whole = classic.GaussianNB().partial_fit(X, y, classes=[0, 1, 2])
    pieces = classic.GaussianNB()
    edges = [0, *sorted(cuts), 120]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        pieces.partial_fit(X[a:b], y[a:b], classes=[0, 1, 2])
    np.testing.assert_allclose(pieces.theta_, whole.theta_, atol=1e-12)
    np.testing.assert_allclose(pieces.var_, whole.var_, atol=1e-12)
    np.testing.assert_array_equal(pieces.class_count_, whole.class_count_)
    # the oracle: numpy's mean and variance per class
    for k in range(3):
        np.testing.assert_allclose(whole.theta_[k], X[y == k].mean(0), atol=1e-12)
        np.testing.assert_allclose(whole.var_[k] - whole.epsilon_, X[y == k].var(0), atol=1e-12)


def test_multinomial_nb_equals_sklearn(mnist):
    naive_bayes = pytest.importorskip("sklearn.naive_bayes")
    X, y, Xt, _ = mnist
    for params in (dict(), dict(alpha=0.1), dict(fit_prior=False)):
        sk = stream(naive_bayes.MultinomialNB(**params), X, y, 400)
        ours = stream(classic.MultinomialNB(**params), X, y, 400)
        np.testing.assert_allclose(ours.feature_log_prob_, sk.feature_log_prob_, atol=1e-12)
        np.testing.assert_allclose(ours.class_log_prior_, sk.class_log_prior_, atol=1e-12)
        np.testing.assert_array_equal(ours.predict(Xt), sk.predict(Xt))
        np.testing.assert_allclose(ours.predict_proba(Xt), sk.predict_proba(Xt), atol=1e-9)


def test_multinomial_nb_rejects_negative_features():
    with pytest.raises(ValueError, match="non-negative"):
        classic.MultinomialNB().partial_fit(np.array([[1.0, -1.0]]), [0], classes=[0, 1])


# ----------------------------------------------------------------------------- nearest class mean


def test_nearest_class_mean_equals_nearest_centroid(mnist):
    neighbors = pytest.importorskip("sklearn.neighbors")
    X, y, Xt, _ = mnist
    with pytest.warns(UserWarning):  # constant pixels: sklearn warns about zero deviations
        sk = neighbors.NearestCentroid().fit(X, y)
    ours = stream(classic.NearestClassMean(), X, y, 333)
    np.testing.assert_allclose(ours.centroids_, sk.centroids_, atol=1e-12)
    np.testing.assert_array_equal(ours.predict(Xt), sk.predict(Xt))


def test_nearest_class_mean_on_frozen_features_and_unseen_classes(mnist):
    X, y, _, _ = mnist
    net = models.lenet5(seed=0)
    features = classic.FrozenFeatures(net, part="features")
    images = X.reshape(-1, 1, 28, 28).astype(np.float32)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    ncm = classic.NearestClassMean(feature_extractor=features)
    ncm.partial_fit(images[:200][y[:200] < 5], y[:200][y[:200] < 5], classes=CLASSES)
    assert ncm.centroids_.shape == (10, 400)
    assert np.all(ncm.class_count_[5:] == 0)
    assert set(ncm.predict(images[200:400]).tolist()) <= {0, 1, 2, 3, 4}  # unseen: never
    feats = features(images[:200])
    for k in range(5):
        np.testing.assert_allclose(ncm.centroids_[k], feats[y[:200] == k].mean(0), rtol=1e-5)
    for k, v in net.state_dict().items():  # the extractor stays frozen
        np.testing.assert_array_equal(v, before[k])


# ----------------------------------------------------------------------------- conventions

ESTIMATORS = [
    classic.OnlineLogisticRegression,
    classic.LinearSVM,
    classic.GaussianNB,
    classic.MultinomialNB,
    classic.NearestClassMean,
]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_scikit_learn_conventions(cls, mnist):
    X, y, Xt, _ = mnist
    est = cls()
    assert not [k for k in vars(est) if k.endswith("_")]  # __init__ learns nothing
    with pytest.raises(ValueError, match="classes="):
        est.partial_fit(X[:10], y[:10])
    with pytest.raises(classic.NotFittedError, match="not fitted"):
        est.predict(Xt[:3])
    assert est.partial_fit(X[:50], y[:50], classes=CLASSES) is est
    learned = sorted(k for k in vars(est) if k.endswith("_"))
    assert "classes_" in learned and "n_features_in_" in learned
    assert est.partial_fit(X[50:100], y[50:100]) is est  # classes may be left out later
    with pytest.raises(ValueError, match=r"labels \[11\] are not in classes"):
        est.partial_fit(X[:2], np.array([1, 11]))
    with pytest.raises(ValueError, match="784 features"):
        est.partial_fit(X[:2, :5], y[:2])
    with pytest.raises(ValueError, match="flatten images"):
        est.predict(X[:2].reshape(2, 1, 28, 28))
    with pytest.raises(ValueError, match="differs from the classes"):
        est.partial_fit(X[:2], y[:2], classes=[0, 1])
    fresh = type(est)(**est.get_params())
    assert fresh.fit(X[:200], y[:200]) is fresh
    again = stream(type(est)(**est.get_params()), X[:200], y[:200], 200, np.unique(y[:200]))
    np.testing.assert_array_equal(fresh.predict(Xt), again.predict(Xt))
    est.fit(X[:200], y[:200])  # fit forgets the earlier stream
    np.testing.assert_array_equal(est.predict(Xt), fresh.predict(Xt))


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_float32_state_halves_the_model(cls, mnist):
    X, y, Xt, yt = mnist
    est64 = stream(cls(), X[:500], y[:500], 100)
    est32 = stream(cls(dtype="float32"), X[:500], y[:500], 100)
    for name in est64._state_attributes:
        if getattr(est64, name).dtype == np.float64 and name != "class_count_":
            assert getattr(est32, name).dtype == np.float32
    assert classic.model_bytes(est32) < 0.6 * classic.model_bytes(est64)
    assert abs(est32.score(Xt, yt) - est64.score(Xt, yt)) < 0.02


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_update_memory_is_constant_along_the_stream(cls, mnist):
    X, y, _, _ = mnist
    est = cls()
    mem = classic.measure_update_memory(est, X[:400], y[:400], CLASSES, batch_size=8)
    assert len(mem.peak_bytes) == 50
    # the first call allocates the model; afterwards, nothing stays behind
    assert mem.retained_bytes[0] >= 0.9 * mem.model_bytes
    # Less than one example's bytes over 49 updates: a learner that kept any example (or any
    # per-update state) fails; one-off interpreter caches filled on a later call (about 1.4
    # KB when other tests ran first in the same process) do not.
    assert mem.stream_retained_bytes < X[0].nbytes, mem.stream_retained_bytes
    assert np.all(mem.retained_bytes[1:] <= 2048), mem.retained_bytes[1:].max()
    # the working memory of an update does not grow with the number of examples seen: it
    # varies only by the size of one batch (e.g. the rows of the largest class in it)
    batch_bytes = 8 * 784 * 8
    peaks = mem.peak_bytes[1:]
    assert peaks.max() - peaks.min() <= batch_bytes + 1024, peaks
    assert peaks.max() < 5 * mem.model_bytes + 3 * batch_bytes
    assert mem.model_bytes == classic.model_bytes(est) > 0


def test_update_memory_grows_with_the_batch_not_the_stream(mnist):
    X, y, _, _ = mnist
    small = classic.measure_update_memory(classic.GaussianNB(), X, y, CLASSES, 16, n_updates=4)
    large = classic.measure_update_memory(classic.GaussianNB(), X, y, CLASSES, 1000, n_updates=2)
    # 1,000 rows of 784 float64 pixels are 6.3 MB; at least their boolean finiteness mask
    # (784 kB) and the largest class's rows are allocated during the update
    assert large.peak_bytes[1:].min() > small.peak_bytes[1:].max() + 1000 * 784
    assert large.model_bytes == small.model_bytes


def test_model_bytes_of_networks_and_estimators():
    net = models.mlp_2nn(seed=0)
    assert classic.model_bytes(net) == 4 * 199_210
    est = classic.GaussianNB().partial_fit(np.zeros((4, 3)), [0, 1, 0, 1], classes=[0, 1])
    assert classic.model_bytes(est) == 8 * (2 + 2 * 3 + 2 * 3 + 2)  # counts, theta, var, classes


def test_time_updates_returns_seconds_per_example(mnist):
    X, y, _, _ = mnist
    est = classic.MultinomialNB()
    seconds = classic.time_updates(est, X[:100], y[:100], CLASSES, batch_size=10)
    assert 0 < seconds < 1
    assert est.class_count_.sum() == 100
