"""Chapter 10: DP-SGD with augmentation multiplicity (De et al. 2022).

An example's gradient is the mean over its K augmented copies, clipped once. Oracles: a loop
that forwards one example's K rows at a time (test-only), the per-row per-example gradients
summed over the copies, and K identical copies, which must give the plain step.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_privacy_dpsgd import mixed_model  # every trainable layer kind, float64

from tinyodl import nn, privacy
from tinyodl.privacy import ghost
from tinyodl.privacy.dpsgd import _sum_loss


def copies(n, k, seed=0):
    """``n`` examples with ``k`` distinct copies each (rows example-major), one label each."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n * k, 2, 8, 8)), rng.integers(0, 5, n)


def loop_oracle(model, x, y, k):
    """Each example's gradient of the mean loss over its k rows, one example at a time."""
    out = {n: [] for n, p in model.named_parameters() if p.trainable}
    for i in range(len(y)):
        model.zero_grad(set_to_none=True)
        logits = model.forward(x[i * k : (i + 1) * k])
        _, d = nn.softmax_cross_entropy(logits, np.repeat(y[i : i + 1], k), reduction="sum")
        model.backward(d / k)
        for n, p in model.named_parameters():
            if p.trainable:
                out[n].append(p.grad.copy())
    model.zero_grad(set_to_none=True)
    return {n: np.stack(g) for n, g in out.items()}


@pytest.mark.parametrize("clipping", privacy.CLIPPING_METHODS)
@pytest.mark.parametrize("chunk", [None, 2])
def test_each_example_is_clipped_once_on_the_mean_over_its_copies(backend_name, clipping, chunk):
    k, clip = 3, 2.5
    model = mixed_model()
    x, y = copies(5, k)
    expected, norms = privacy.clip_and_sum(loop_oracle(model, x, y, k), clip)
    assert np.sum(norms > clip) >= 2 and np.sum(norms < clip) >= 1  # both cases exercised
    noise = {n: np.full(p.shape, 0.25) for n, p in model.named_parameters()}
    dp = privacy.DPSGD(
        model, nn.SGD(model, lr=0.1), clip_norm=clip, noise_multiplier=2.0,
        expected_batch_size=4.0, clipping=clipping, multiplicity=k,
        max_physical_batch_size=chunk,
    )  # fmt: skip
    stats = dp.privatize(x, y, noise=noise)
    assert stats["batch_size"] == 5
    np.testing.assert_allclose(stats["mean_norm"], norms.mean(), rtol=1e-9)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, (expected[name] + 0.25) / 4.0, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("clipping", privacy.CLIPPING_METHODS)
def test_identical_copies_give_the_plain_step(clipping):
    x, y = copies(6, 1, seed=2)
    states = []
    for k in (1, 4):
        model = mixed_model()
        dp = privacy.DPSGD(
            model, nn.SGD(model, lr=0.1), clip_norm=0.5, noise_multiplier=1.0,
            expected_batch_size=6, clipping=clipping, seed=3, multiplicity=k,
        )  # fmt: skip
        dp.step(np.repeat(x, k, axis=0), y)
        states.append(model.state_dict())
    for key in states[0]:
        np.testing.assert_allclose(states[1][key], states[0][key], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("method", ["auto", "ghost", "materialize"])
def test_conv_ghost_norms_of_grouped_rows_equal_the_summed_gradients(backend_name, method):
    rng = np.random.default_rng(1)
    n, k = 4, 3
    x = rng.standard_normal((n * k, 4, 9, 7))
    w_shape, stride, padding, groups = (6, 2, 3, 2), (2, 1), (1, 0), 2
    out, _ = nn.functional.conv2d_forward(
        x, rng.standard_normal(w_shape), None, stride, padding, groups
    )
    dout = rng.standard_normal(out.shape)
    dw, _ = nn.functional.conv2d_per_example_grads(dout, x, w_shape, stride, padding, groups)
    summed = dw.reshape((n, k) + dw.shape[1:]).sum(axis=1)
    expected = (summed.reshape(n, -1) ** 2).sum(1)
    got = ghost.conv2d_sq_norms(x, dout, w_shape, stride, padding, groups, method, k)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_linear_ghost_norms_of_grouped_rows_equal_the_summed_gradients(n, k, seed):
    rng = np.random.default_rng(seed)
    a, d = rng.standard_normal((n * k, 7)), rng.standard_normal((n * k, 3))
    per_row = np.einsum("ro,ri->roi", d, a)
    summed = per_row.reshape(n, k, 3, 7).sum(axis=1)
    np.testing.assert_allclose(
        ghost.linear_sq_norms(a, d, k), (summed.reshape(n, -1) ** 2).sum(1), rtol=1e-10
    )
    layer = nn.Linear(7, 3).astype(np.float64)
    bias = d.reshape(n, k, 3).sum(axis=1)
    np.testing.assert_allclose(
        ghost.layer_sq_norms(layer, a, d, multiplicity=k),
        (summed.reshape(n, -1) ** 2).sum(1) + (bias**2).sum(1),
        rtol=1e-10,
    )


def test_bad_multiplicity_and_mismatched_rows_are_refused_with_the_counts():
    model = mixed_model()
    sgd = nn.SGD(model, lr=0.1)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="multiplicity must be an int >= 1"):
            privacy.DPSGD(model, sgd, clip_norm=1.0, noise_multiplier=1.0,
                          expected_batch_size=4, multiplicity=bad)  # fmt: skip
    dp = privacy.DPSGD(
        model, sgd, clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=4, multiplicity=3
    )
    x, y = copies(4, 2)
    with pytest.raises(ValueError, match="3 rows of x per label, got 8 rows for 4 labels"):
        dp.privatize(x, y)
    with pytest.raises(ValueError, match="10 rows do not split into groups of multiplicity 3"):
        ghost.linear_sq_norms(np.ones((10, 2)), np.ones((10, 2)), 3)


def _blobs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, 10)) * 3
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.standard_normal((n, 10))).astype(np.float32), y


def _jitter(x, k, rng):
    """k noisy copies of each row (example-major)."""
    rows = np.repeat(x, k, axis=0)
    return (rows + 0.3 * rng.standard_normal(rows.shape)).astype(np.float32)


def test_fit_dpsgd_with_augment_learns_and_costs_the_same_epsilon():
    x, y = _blobs()
    model = nn.Sequential([nn.Linear(10, 16, seed=0), nn.ReLU(), nn.Linear(16, 3, seed=1)])
    calls = []

    def augment(xb, k, rng):
        calls.append((len(xb), k))
        return _jitter(xb, k, rng)

    run = privacy.fit_dpsgd(
        model, nn.SGD(model, lr=0.5), x[:500], y[:500], lot_size=50, clip_norm=1.0,
        noise_multiplier=0.7, epochs=3, delta=1e-5, seed=0, x_val=x[500:], y_val=y[500:],
        clipping="ghost", augment=augment, multiplicity=4,
    )  # fmt: skip
    assert len(calls) == run.steps == 30 and all(k == 4 for _, k in calls)
    assert run.epsilons[-1] == pytest.approx(
        privacy.epsilon(q=0.1, noise_multiplier=0.7, steps=30, delta=1e-5)
    )
    assert run.history.val_accuracy[-1] > 0.9


def test_fit_dpsgd_refuses_multiplicity_without_augment_and_a_wrong_augment():
    x, y = _blobs(100)
    model = nn.Sequential([nn.Linear(10, 3, seed=0)])
    common = dict(lot_size=20, clip_norm=1.0, noise_multiplier=1.0, epochs=1, delta=1e-5, seed=0)
    with pytest.raises(ValueError, match="multiplicity=2 needs augment="):
        privacy.fit_dpsgd(model, nn.SGD(model, lr=0.1), x, y, multiplicity=2, **common)
    with pytest.raises(ValueError, match="augment returned .* rows for .* examples; expected"):
        privacy.fit_dpsgd(
            model, nn.SGD(model, lr=0.1), x, y, multiplicity=2,
            augment=lambda xb, k, rng: xb, **common,
        )  # fmt: skip


def test_mean_over_copies_scales_the_loss_and_its_gradient():
    from tinyodl.privacy.dpsgd import _mean_over_copies

    logits, y = np.random.default_rng(0).standard_normal((6, 4)), np.array([0, 1, 2, 3, 0, 1])
    value, grad = _sum_loss("cross_entropy")(logits, y)
    v3, g3 = _mean_over_copies(_sum_loss("cross_entropy"), 3)(logits, y)
    assert v3 == pytest.approx(value / 3)
    np.testing.assert_allclose(g3, grad / 3)
