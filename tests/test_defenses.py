"""Chapter 11: defenses -- adversarial training, distillation, input validation, anomaly
detection on training streams, similarity unpairing."""

from __future__ import annotations

import numpy as np
import pytest
from security_helpers import blobs, mnist_mlp, mnist_test, tiny_mlp, trained_tiny

from tinyodl import models, nn
from tinyodl.attacks import FGSM, Classifier, adversarial_accuracy
from tinyodl.attacks.poisoning import fake_inputs, flip_labels
from tinyodl.data import load_mnist, to_float
from tinyodl.defenses import (
    CUSUM,
    InputValidator,
    OneCycle,
    PCADetector,
    StreamGuard,
    adversarial_fit,
    cosine_penalty,
    defensive_distillation,
    gradient_similarity,
    make_training_attack,
    robust_cnn,
    similarity_unpairing,
    temperature_loss,
    train_on_stream,
    unpairing_penalty,
)

# ----------------------------------------------------------------------------- adversarial training


def test_robust_cnn_shape_and_size():
    model = robust_cnn(0)
    assert model.num_params() == 166_406
    assert model.forward(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


def test_one_cycle_is_triangular():
    s = OneCycle(0.01, 100)
    assert s(0) == 0 and s(50) == pytest.approx(0.01) and s(100) == 0
    assert s(25) == pytest.approx(0.005) and s(75) == pytest.approx(0.005)
    with pytest.raises(ValueError):
        OneCycle(0, 10)


def test_training_attacks_are_the_published_recipes():
    model = tiny_mlp()
    rs = make_training_attack(model, "fgsm_rs", eps=0.2)
    assert rs.eps_step == pytest.approx(0.25) and rs.num_random_init == 1
    pgd = make_training_attack(model, "pgd", eps=0.2, steps=5)
    assert pgd.max_iter == 5 and pgd.eps_step == pytest.approx(0.1) and pgd.num_random_init == 1
    plain = make_training_attack(model, "fgsm", eps=0.2)
    assert plain.num_random_init == 0 and plain.eps_step is None
    with pytest.raises(ValueError, match="method"):
        make_training_attack(model, "trades", eps=0.2)


@pytest.mark.parametrize("method", ["fgsm_rs", "pgd"])
def test_adversarial_training_trains_on_attacked_batches(method, monkeypatch):
    # every optimizer step must see a perturbed batch within the ball, and the attack's
    # backward passes must not leak into the weight gradients
    x, y = blobs(60)
    model = tiny_mlp(0)
    seen = []
    real_forward = model.forward

    def spy(xb, train=None):
        if train is None:  # the training forward (attacks pass train=False)
            seen.append(xb.copy())
        return real_forward(xb, train)

    monkeypatch.setattr(model, "forward", spy)
    opt = nn.SGD(model, lr=0.1)
    hist = adversarial_fit(
        model,
        opt,
        x,
        y,
        eps=0.1,
        epochs=1,
        batch_size=20,
        seed=0,
        method=method,
        steps=3,
        progress=False,
    )
    assert len(seen) == 3 and len(hist.step_loss) == 3
    order = np.concatenate(list(__import__("tinyodl").data.BatchSampler(60, 20, 0)))
    batches = np.concatenate(seen)
    delta = batches - x[order]
    assert np.abs(delta).max() <= 0.1 + 1e-6 and np.abs(delta).max() > 0.05


def test_adversarial_training_improves_robustness():
    x, y = blobs(300, seed=1)
    xt, yt = blobs(150, seed=2)
    natural, robust = tiny_mlp(0), tiny_mlp(0)
    kw = {"epochs": 30, "batch_size": 30, "seed": 0, "progress": False}
    adversarial_fit(natural, nn.SGD(natural, lr=0.3), x, y, eps=1e-9, **kw)
    adversarial_fit(robust, nn.SGD(robust, lr=0.3), x, y, eps=0.25, method="pgd", steps=5, **kw)
    attack = lambda m: FGSM(m, eps=0.25)  # noqa: E731
    acc_nat = adversarial_accuracy(natural, attack(natural), xt, yt)
    acc_rob = adversarial_accuracy(robust, attack(robust), xt, yt)
    assert acc_rob > acc_nat + 0.1
    assert adversarial_accuracy(robust, None, xt, yt) > 0.9


def test_eps_warmup_ramps_the_radius(monkeypatch):
    x, y = blobs(60)
    model = tiny_mlp(0)
    eps_seen = []
    import tinyodl.defenses.adversarial_training as at

    real = at.make_training_attack

    def spy(*a, **k):
        attack = real(*a, **k)
        gen = attack.generate

        def generate(xb, yb):
            eps_seen.append(attack.eps)
            return gen(xb, yb)

        attack.generate = generate
        return attack

    monkeypatch.setattr(at, "make_training_attack", spy)
    at.adversarial_fit(
        model,
        nn.SGD(model, lr=0.1),
        x,
        y,
        eps=0.3,
        epochs=2,
        batch_size=20,
        seed=0,
        eps_warmup_steps=4,
        progress=False,
    )
    np.testing.assert_allclose(eps_seen, [0.075, 0.15, 0.225, 0.3, 0.3, 0.3])


# ----------------------------------------------------------------------------- distillation


def test_temperature_loss_gradient():
    logits = np.random.default_rng(0).standard_normal((4, 5))
    y = np.array([0, 2, 4, 1])
    f = temperature_loss(3.0)
    _, d = f(logits, y)
    num = nn.numerical_gradient(lambda z: f(z, y)[0], logits.copy())
    assert nn.rel_error(d, num) < 1e-7
    soft = nn.softmax(logits[::-1].copy())
    _, d = f(logits, soft)
    num = nn.numerical_gradient(lambda z: f(z, soft)[0], logits.copy())
    assert nn.rel_error(d, num) < 1e-7
    with pytest.raises(ValueError, match="temperature"):
        temperature_loss(0)


@pytest.mark.slow
def test_defensive_distillation_masks_the_gradient():
    xi, yi = load_mnist("train")
    x, y = to_float(xi[:2000]), yi[:2000].astype(np.int64)
    out = defensive_distillation(
        models.mlp_2nn(seed=0), models.mlp_2nn(seed=1), x, y, temperature=20, epochs=2
    )
    student = out["student"]
    xt, yt = mnist_test(200)
    assert adversarial_accuracy(student, None, xt, yt) > 0.75
    assert out["soft_labels"].shape == (2000, 10)
    # deployed at T = 1 the softmax saturates: most input gradients of the loss vanish
    g = Classifier(student).loss_gradient(xt, yt)
    g_ref = Classifier(mnist_mlp()).loss_gradient(xt, yt)
    assert np.median(np.abs(g).reshape(200, -1).max(1)) < 1e-3 * np.median(
        np.abs(g_ref).reshape(200, -1).max(1)
    )


# ----------------------------------------------------------------------------- validation


def test_input_validator_rejects_noise_and_quarantines_it():
    xi, yi = load_mnist("train")
    x, y = to_float(xi[:1000]), yi[:1000].astype(np.int64)
    v = InputValidator(quantile=0.99).fit(x[:500], y[:500])
    ok = v.validate(x[500:], y[500:])
    assert ok.mean() > 0.95
    noise = fake_inputs(50, "noise", x, seed=0)
    assert v.validate(noise, y[:50]).mean() < 0.1 and v.validate(noise).mean() < 0.1
    centroids = InputValidator(reference="centroids").fit(x[:500], y[:500])
    assert centroids.validate(x[500:], y[500:]).mean() > 0.95
    mixed = np.concatenate([x[500:550], noise])
    labels = np.concatenate([y[500:550], y[:50]])
    ok = v.validate(mixed, labels)
    kept, kept_y = v.filter(mixed, labels)
    assert len(kept) == len(kept_y) and v.quarantined == 100 - len(kept) > 45
    qx, qy = v.quarantine_[0]  # what was rejected is kept aside, not trained on
    np.testing.assert_array_equal(qx, mixed[~ok])
    np.testing.assert_array_equal(qy, labels[~ok])
    np.testing.assert_array_equal(kept, mixed[ok])
    # no label: distance to the nearest class mean
    assert v.score(x[500:510]).shape == (10,)


def test_pca_detector_scores_flipped_labels_higher():
    xi, yi = load_mnist("train")
    x, y = to_float(xi[:2000]).reshape(2000, -1), yi[:2000].astype(np.int64)
    det = PCADetector(n_components=10).fit(x[:1000], y[:1000])
    clean = det.score(x[1000:], y[1000:])
    flipped, mask = flip_labels(y[1000:], 1.0, seed=0)
    bad = det.score(x[1000:], flipped)
    assert np.median(bad) > 1.3 * np.median(clean)
    assert abs(np.median(det.score(x[:1000], y[:1000])) - 1.0) < 0.05  # relative to trusted
    held = PCADetector(n_components=10).fit(x[:500], y[:500], x[500:1000], y[500:1000])
    assert abs(np.median(held.score(x[500:1000], y[500:1000])) - 1.0) < 0.05
    assert np.isinf(det.score(x[:2], np.array([11, 11]))).all()


def test_cusum_alarm_after_a_shift():
    c = CUSUM(k=0.5, h=5.0, mean=0.0, std=1.0)
    alarms = [c.update(z) for z in [0.2, -0.3, 0.1] + [2.0] * 5]
    # S: 0, 0, 0, 1.5, 3.0, 4.5, 6.0 -> first alarm at the 7th observation
    assert alarms == [False] * 6 + [True, True]
    np.testing.assert_allclose(c.history_[:5], [0, 0, 0, 1.5, 3.0])
    c.fit(np.array([1.0, 3.0]))
    assert (c.mean, c.std, c.value_) == (2.0, 1.0, 0.0)


def test_stream_guard_drops_poisoned_batches():
    xi, yi = load_mnist("train")
    x, y = to_float(xi[:3000]), yi[:3000].astype(np.int64)
    guard = StreamGuard(n_components=10, quantile=0.99, cusum=None).fit(x[:1000], y[:1000], 25)
    stream, poisoned = [], []
    for b in range(40):
        xb, yb = x[1000 + 25 * b : 1025 + 25 * b], y[1000 + 25 * b : 1025 + 25 * b]
        if b % 4 == 0:
            yb, _ = flip_labels(yb, 1.0, seed=b)
        stream.append((xb, yb))
        poisoned.append(b % 4 == 0)
    model = models.mlp_2nn(seed=0)
    out = train_on_stream(model, nn.SGD(model, lr=0.01), stream, guard)
    admitted = np.array([e["admitted"] for e in guard.log_])
    poisoned = np.array(poisoned)
    assert not admitted[poisoned].any() and admitted[~poisoned].mean() >= 0.9
    assert out == {"used": int(admitted.sum()), "dropped": int((~admitted).sum())}


# ----------------------------------------------------------------------------- unpairing


def test_cosine_penalty_gradient():
    rng = np.random.default_rng(0)
    g, d = rng.standard_normal((3, 1, 2, 2)), rng.standard_normal((3, 1, 2, 2))
    value, dg, cos = cosine_penalty(g, d)
    num = nn.numerical_gradient(lambda z: cosine_penalty(z, d)[0], g.copy())
    assert nn.rel_error(dg, num) < 1e-7
    assert value == pytest.approx(np.mean(cos**2))


def test_unpairing_penalty_weight_gradient_matches_finite_differences():
    cloud = tiny_mlp(0, "float64")
    device = tiny_mlp(1, "float64")
    x, y = blobs(5)
    x = x.astype(np.float64)
    d = Classifier(device, None).loss_gradient(x, y)
    value, grads, _ = unpairing_penalty(cloud, x, y, d, h=1e-5)
    params = [p for p in cloud.parameters() if p.trainable]
    for p, g in zip(params, grads, strict=True):

        def f(_):
            return unpairing_penalty(cloud, x, y, d)[0]

        num = nn.numerical_gradient(f, p.data, h=1e-6)
        assert nn.rel_error(g, num) < 1e-4
    assert 0 <= value <= 1


def test_similarity_unpairing_decorrelates_the_gradients():
    cloud, x, y = trained_tiny(0)
    device = Classifier(trained_tiny(0)[0])  # an identical on-device copy: cosine 1
    before = gradient_similarity(cloud, device.model, x, y)
    assert np.allclose(before, 1.0, atol=1e-5)
    log = similarity_unpairing(
        cloud, device, nn.SGD(cloud, lr=0.05), x, y, lam=5.0, epochs=20, batch_size=30, seed=0
    )
    after = gradient_similarity(cloud, device.model, x, y)
    assert np.mean(after**2) < 0.5 and log["penalty"][-1] < log["penalty"][0]
    assert adversarial_accuracy(cloud, None, x, y) > 0.9
