"""Chapter 10: per-example gradients, clipping, noise, Poisson sampling, ghost clipping.

Oracles: a Python loop over single examples (test-only; the library never loops), and the
closed forms of the clipping and the noise. The Opacus comparison is in
``test_privacy_opacus.py``.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl import nn, ops, privacy
from tinyodl.privacy import ghost


def mixed_model(seed=0):
    """Every trainable layer kind with any geometry: strided, padded, grouped, depthwise."""
    return nn.Sequential(
        [
            nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2, seed=seed),
            nn.ReLU(),
            nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), seed=seed + 1),
            nn.ReLU(),
            nn.DepthwiseConv2d(6, 3, stride=2, padding=1, seed=seed + 2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6 * 2 * 1, 5, seed=seed + 3),
        ]
    ).astype(np.float64)


def batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2, 8, 8)), rng.integers(0, 5, n)


def loop_oracle(model, x, y):
    """Per-example gradients one example at a time (test-only)."""
    out = {n: [] for n, p in model.named_parameters() if p.trainable}
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        _, d = nn.softmax_cross_entropy(model.forward(x[i : i + 1]), y[i : i + 1], reduction="sum")
        model.backward(d)
        for n, p in model.named_parameters():
            if p.trainable:
                out[n].append(p.grad.copy())
    model.zero_grad(set_to_none=True)
    return {n: np.stack(g) for n, g in out.items()}


def test_per_example_gradients_of_every_layer_kind_match_the_loop(backend_name):
    model = mixed_model()
    x, y = batch()
    expected = loop_oracle(model, x, y)
    loss, grads = privacy.per_example_gradients(model, x, y)
    assert set(grads) == set(expected)
    for name in grads:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-9, atol=1e-12)
    assert loss > 0


def test_per_example_gradients_are_one_vectorized_call_per_layer(monkeypatch):
    calls = []
    real = ops.im2col

    def counting(x, *args, **kwargs):
        calls.append(len(x))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(ops, "im2col", counting)
    model = mixed_model()
    x, y = batch(n=7)
    model.forward(x)  # forward (not counted: the kernels call im2col internally)
    calls.clear()
    privacy.per_example_gradients(model, x, y)
    per_example_calls = [n for n in calls if n == 7]
    # one im2col of the whole batch per conv layer, none per example
    assert per_example_calls.count(7) >= 3 and 1 not in calls


def test_frozen_parameters_get_no_per_example_gradient():
    model = mixed_model()
    model.freeze("0", kind="bias")
    model.freeze("4")
    x, y = batch()
    _, grads = privacy.per_example_gradients(model, x, y)
    assert "0.bias" not in grads and "4.weight" not in grads and "0.weight" in grads


def _bn_model():
    return nn.Sequential(
        {
            "features": nn.Sequential([nn.Conv2d(1, 2, 3, seed=0), nn.BatchNorm2d(2), nn.ReLU()]),
            "classifier": nn.Sequential([nn.Flatten(), nn.Linear(2 * 4 * 4, 3, seed=1)]),
        }
    ).astype(np.float64)


def test_batchnorm_in_training_mode_is_refused_naming_the_layer():
    model = _bn_model()
    x = np.random.default_rng(0).standard_normal((4, 1, 6, 6))
    y = np.array([0, 1, 2, 0])
    for clipping in privacy.CLIPPING_METHODS:
        with pytest.raises(privacy.UnsupportedLayerError, match=r"'features\.1'.*[Ff]reeze"):
            privacy.DPSGD(model, nn.SGD(model, lr=0.1), clip_norm=1.0, noise_multiplier=1.0,
                          expected_batch_size=4, clipping=clipping)  # fmt: skip
    model.freeze("features.1")
    with pytest.raises(nn.PerExampleGradientError, match="training mode"):
        privacy.per_example_gradients(model, x, y)  # frozen but still mixing the examples
    model["features.1"].eval()  # running statistics: a per-channel affine map
    _, grads = privacy.per_example_gradients(model, x, y)
    assert set(grads) == {"features.0.weight", "features.0.bias", "classifier.1.weight",
                          "classifier.1.bias"}  # fmt: skip


def test_batchnorm_in_evaluation_mode_trains_with_per_example_clipping_only():
    model = _bn_model()
    model["features.1"].eval()
    x = np.random.default_rng(1).standard_normal((5, 1, 6, 6))
    y = np.array([0, 1, 2, 0, 1])
    expected = loop_oracle(model, x, y)
    _, grads = privacy.per_example_gradients(model, x, y)
    assert "features.1.weight" in grads  # the affine map's per-example gradients
    for name, g in grads.items():
        np.testing.assert_allclose(g, expected[name], rtol=1e-9, atol=1e-12)
    with pytest.raises(privacy.UnsupportedLayerError, match=r"'features\.1'.*ghost"):
        privacy.validate_model(model, "ghost")


def test_a_layer_that_mixes_examples_is_refused_by_both_clippings():
    class BatchCentre(nn.Layer):  # subtracts the batch mean: mixes the examples
        def _forward(self, x, train):
            return x - x.mean(axis=0, keepdims=True)

        def _backward(self, dout, per_example):
            return dout - dout.mean(axis=0, keepdims=True)

        def _per_example_refusal(self):
            return None if self._output_shape is None else "the batch mean mixes the examples"

    model = nn.Sequential([nn.Linear(3, 4, seed=0), BatchCentre(), nn.Linear(4, 2, seed=1)])
    x, y = np.ones((3, 3), np.float32), np.array([0, 1, 0])
    for clipping in privacy.CLIPPING_METHODS:
        dp = privacy.DPSGD(model, nn.SGD(model, lr=0.1), clip_norm=1.0, noise_multiplier=0.0,
                           expected_batch_size=3, clipping=clipping)  # fmt: skip
        with pytest.raises(privacy.UnsupportedLayerError, match="BatchCentre.*mixes"):
            dp.step(x, y)
        model.zero_grad(set_to_none=True)
        for layer in [model, *(lay for _, lay in model.named_layers())]:
            layer.saved.clear()
            layer._output_shape = None


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), clip=st.floats(0.05, 20.0))
def test_clipping_bounds_every_example_and_keeps_small_ones(seed, clip):
    rng = np.random.default_rng(seed)
    n = 9
    grads = {
        "a": rng.standard_normal((n, 3, 2)) * rng.uniform(0.01, 5, (n, 1, 1)),
        "b": rng.standard_normal((n, 4)),
    }
    sums, norms = privacy.clip_and_sum(grads, clip)
    flat = np.concatenate([g.reshape(n, -1) for g in grads.values()], axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(flat, axis=1))
    factors = np.minimum(1.0, clip / norms)
    clipped = flat * factors[:, None]
    assert np.all(np.linalg.norm(clipped, axis=1) <= clip * (1 + 1e-12))
    small = norms <= clip
    np.testing.assert_allclose(clipped[small], flat[small])  # untouched below the bound
    np.testing.assert_allclose(np.concatenate([sums["a"].ravel(), sums["b"]]), clipped.sum(0))


def test_poisson_sampling_has_binomial_sizes_and_empty_lots_happen():
    sizes = np.array([len(i) for i in privacy.poisson_batches(1000, 0.02, 3000, rng=0)])
    assert abs(sizes.mean() - 20) < 5 * math.sqrt(1000 * 0.02 * 0.98 / 3000)
    assert sizes.var() == pytest.approx(1000 * 0.02 * 0.98, rel=0.1)
    tiny = [len(i) for i in privacy.poisson_batches(50, 0.01, 200, rng=1)]
    assert 0 in tiny and max(tiny) > 1  # variable sizes, including empty lots
    idx = privacy.poisson_sample(100, 0.3, rng=2)
    assert np.all(np.diff(idx) > 0) and idx.dtype == np.int64


def test_an_empty_lot_gives_pure_noise_of_the_calibrated_scale():
    model = nn.Sequential([nn.Linear(50, 40, seed=0)]).astype(np.float64)
    dp = privacy.DPSGD(
        model,
        nn.SGD(model, lr=0.1),
        clip_norm=2.0,
        noise_multiplier=1.5,
        expected_batch_size=10,
        seed=0,
    )
    stats = dp.privatize(np.zeros((0, 50)), np.zeros(0, dtype=np.int64))
    assert stats["batch_size"] == 0
    g = np.concatenate([p.grad.ravel() for p in model.parameters()])
    expected = 1.5 * 2.0 / 10
    assert abs(g.std() - expected) < 5 * expected / math.sqrt(2 * g.size)
    assert abs(g.mean()) < 5 * expected / math.sqrt(g.size)


def test_privatize_is_the_noisy_clipped_average():
    model = mixed_model()
    x, y = batch()
    per_example = loop_oracle(model, x, y)
    expected_sums, _ = privacy.clip_and_sum(per_example, 0.3)
    noise = {n: np.full(p.shape, 0.25) for n, p in model.named_parameters()}
    dp = privacy.DPSGD(
        model, nn.SGD(model, lr=0.1), clip_norm=0.3, noise_multiplier=2.0, expected_batch_size=4.0
    )
    dp.privatize(x, y, noise=noise)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, (expected_sums[name] + 0.25) / 4.0, rtol=1e-10)
        assert p.grad_sample is None


@pytest.mark.parametrize("clipping", privacy.CLIPPING_METHODS)
def test_physical_batches_give_the_same_update(clipping):
    x, y = batch(n=11)
    results = []
    for chunk in (None, 4):
        model = mixed_model()
        dp = privacy.DPSGD(
            model,
            nn.SGD(model, lr=0.1),
            clip_norm=0.5,
            noise_multiplier=1.0,
            expected_batch_size=11,
            clipping=clipping,
            seed=3,
            max_physical_batch_size=chunk,
        )
        dp.step(x, y)
        results.append(model.state_dict())
    for key in results[0]:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-10)


@pytest.mark.parametrize("method", ["auto", "ghost", "materialize"])
def test_ghost_norms_equal_materialised_norms(backend_name, method):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4, 9, 7))
    w_shape, stride, padding, groups = (6, 2, 3, 2), (2, 1), (1, 0), 2
    out, _ = nn.functional.conv2d_forward(
        x, rng.standard_normal(w_shape), None, stride, padding, groups
    )
    dout = rng.standard_normal(out.shape)
    dw, _ = nn.functional.conv2d_per_example_grads(dout, x, w_shape, stride, padding, groups)
    expected = (dw.reshape(5, -1) ** 2).sum(1)
    got = ghost.conv2d_sq_norms(x, dout, w_shape, stride, padding, groups, method)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    a, d = rng.standard_normal((5, 7)), rng.standard_normal((5, 3))
    np.testing.assert_allclose(
        ghost.linear_sq_norms(a, d), (np.einsum("no,ni->noi", d, a).reshape(5, -1) ** 2).sum(1)
    )


def test_ghost_clipping_gives_the_same_update_as_per_example_clipping(backend_name):
    x, y = batch(n=8)
    states = {}
    for clipping in privacy.CLIPPING_METHODS:
        model = mixed_model()
        model.freeze("2", kind="bias")
        dp = privacy.DPSGD(
            model,
            nn.SGD(model, lr=0.1, momentum=0.9),
            clip_norm=0.4,
            noise_multiplier=0.8,
            expected_batch_size=8,
            clipping=clipping,
            seed=5,
        )
        for _ in range(3):
            dp.step(x, y)
        states[clipping] = model.state_dict()
        assert not model.capturing  # ghost clipping restores the capture setting
    for key, value in states["per_example"].items():
        np.testing.assert_allclose(states["ghost"][key], value, rtol=1e-9, atol=1e-12)


def test_ghost_clipping_refuses_layers_it_cannot_handle():
    class Scale(nn.Layer):
        def __init__(self):
            super().__init__()
            self._param("weight", np.ones(1))

        def _forward(self, x, train):
            self._x = x
            return x * self.params["weight"].data

        def _backward(self, dout, per_example):
            self.params["weight"].accumulate_grad(np.array([np.sum(dout * self._x)]))
            return dout * self.params["weight"].data

    model = nn.Sequential([nn.Linear(3, 3), Scale()])
    with pytest.raises(privacy.UnsupportedLayerError, match="Scale.*ghost"):
        privacy.validate_model(model, "ghost")
    with pytest.raises(privacy.UnsupportedLayerError, match="'1.weight'.*no per-example"):
        privacy.per_example_gradients(model, np.ones((2, 3), np.float32), np.array([0, 1]))


def test_accounting_follows_the_steps():
    model = nn.Sequential([nn.Linear(4, 3, seed=0)])
    dp = privacy.DPSGD(
        model,
        nn.SGD(model, lr=0.1),
        clip_norm=1.0,
        noise_multiplier=1.1,
        expected_batch_size=6,
        sample_rate=0.06,
        seed=0,
    )
    x, y = np.ones((6, 4), np.float32), np.zeros(6, np.int64)
    for _ in range(5):
        dp.step(x, y)
    assert dp.steps_ == 5
    assert dp.epsilon(1e-5) == privacy.epsilon(q=0.06, noise_multiplier=1.1, steps=5, delta=1e-5)
    with pytest.raises(ValueError, match="sample_rate"):
        privacy.DPSGD(
            model, None, clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=2
        ).epsilon(1e-5)


def test_fit_dpsgd_learns_with_little_noise_and_reports_epsilon():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 10)) * 3
    y = rng.integers(0, 3, 600)
    x = (centers[y] + rng.standard_normal((600, 10))).astype(np.float32)
    model = nn.Sequential([nn.Linear(10, 16, seed=0), nn.ReLU(), nn.Linear(16, 3, seed=1)])
    run = privacy.fit_dpsgd(
        model,
        nn.SGD(model, lr=0.5),
        x[:500],
        y[:500],
        lot_size=50,
        clip_norm=1.0,
        noise_multiplier=0.7,
        epochs=3,
        delta=1e-5,
        seed=0,
        x_val=x[500:],
        y_val=y[500:],
        clipping="ghost",
    )
    assert run.steps == 30 and len(run.epsilons) == 3
    assert run.epsilons[-1] == pytest.approx(
        privacy.epsilon(q=0.1, noise_multiplier=0.7, steps=30, delta=1e-5)
    )
    assert run.epsilons == sorted(run.epsilons)
    assert run.history.val_accuracy[-1] > 0.9


def test_dp_pca_finds_the_top_directions_and_noise_perturbs_them():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((20, 20)))[0]
    scales = np.array([5.0, 3.0] + [0.1] * 18)
    x = (rng.standard_normal((5000, 20)) * scales) @ basis.T / 10
    p = privacy.dp_pca(x, 2, noise_multiplier=0.0)
    np.testing.assert_allclose(p.T @ p, np.eye(2), atol=1e-10)
    # the span of the top-2 true directions is recovered
    assert np.linalg.norm(basis[:, :2].T @ p) ** 2 == pytest.approx(2.0, rel=1e-3)
    noisy = privacy.dp_pca(x, 2, noise_multiplier=2.0, rng=1)
    overlap = np.linalg.norm(basis[:, :2].T @ noisy) ** 2
    assert 1.5 < overlap < 2.0 - 1e-6


def test_dp_mean_clips_rows_and_adds_noise_calibrated_to_the_clip_norm():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 5))
    np.testing.assert_allclose(privacy.dp_mean(x, 100.0, 0.0), x.mean(axis=0), atol=1e-12)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    clipped = x * np.minimum(1.0, 1.5 / norms)
    np.testing.assert_allclose(privacy.dp_mean(x, 1.5, 0.0), clipped.mean(axis=0), atol=1e-12)
    # the noise on the mean has std sigma * C / N per coordinate
    draws = np.stack([privacy.dp_mean(x, 1.5, 2.0, rng=s) for s in range(2000)])
    assert draws.mean(axis=0) == pytest.approx(clipped.mean(axis=0), abs=4 * 3.0 / 400 / 40)
    assert draws.std(axis=0) == pytest.approx(np.full(5, 2.0 * 1.5 / 400), rel=0.08)
    for bad in ({"clip_norm": 0.0}, {"noise_multiplier": -1.0}):
        with pytest.raises(ValueError, match="dp_mean"):
            privacy.dp_mean(x, **{"clip_norm": 1.0, "noise_multiplier": 1.0, **bad})
    with pytest.raises(ValueError, match=r"dp_mean: x must be \(N, D\)"):
        privacy.dp_mean(x[0], 1.0, 1.0)


def test_ghost_step_after_an_evaluation_forward_of_another_size():
    # an evaluation forward leaves the trainable layers' inputs in `saved` (no backward);
    # the book-keeping pass must not pick them up
    model = mixed_model()
    x, y = batch(n=6)
    model.forward(batch(n=9)[0], train=False)
    dp = privacy.DPSGD(model, nn.SGD(model, lr=0.1), clip_norm=0.5, noise_multiplier=0.0,
                       expected_batch_size=6, clipping="ghost")  # fmt: skip
    sums, _, _ = dp.clipped_sum(x, y)
    expected, _ = privacy.clip_and_sum(loop_oracle(mixed_model(), x, y), 0.5)
    for name, value in expected.items():
        np.testing.assert_allclose(sums[name], value, rtol=1e-9, atol=1e-12)


def test_parameter_average_follows_its_recursion_and_swaps():
    model = nn.Sequential([nn.Linear(3, 2, seed=0)]).astype(np.float64)
    avg = privacy.ParameterAverage(model, decay=0.5)
    w = model[0].params["weight"]
    start, expected = w.data.copy(), w.data.copy()
    for t in range(4):
        w.data += 1.0
        d = min(0.5, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * w.data
        avg.update()
    np.testing.assert_allclose(avg.average_[0], expected)
    current = w.data.copy()
    avg.swap()
    np.testing.assert_allclose(w.data, expected)
    avg.swap()
    np.testing.assert_allclose(w.data, current)
    assert not np.allclose(expected, start)
    with pytest.raises(ValueError, match="decay"):
        privacy.ParameterAverage(model, decay=1.0)
