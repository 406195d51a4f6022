"""Chapter 03: training the int8 graph (gradients, weight stores) and QAS."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from test_quantization import small_model

from tinyodl import nn, qas, tasks, train
from tinyodl import quantization as Q


def _setup(seed=0, n=16):
    model = small_model(seed)
    rng = np.random.default_rng(seed + 10)
    x = rng.uniform(0, 1, (n, 2, 6, 6)).astype(np.float32)
    brightness = x[:, 0].mean(axis=(1, 2)) - x[:, 1].mean(axis=(1, 2))
    y = np.digitize(brightness, np.quantile(brightness, [1 / 3, 2 / 3]))  # learnable labels
    qmodel = Q.quantize_model(model, x)
    return qmodel, x, y


def _int_gradients(qmodel, x, y):
    qmodel.zero_grad()
    logits = qmodel.dequantize_output(qmodel.forward_int(qmodel.quantize_input(x), save=True))
    _, d = nn.softmax_cross_entropy(logits, y)
    qmodel.backward(d)
    return {name: (c.weight_grad.copy(), c.bias_grad.copy()) for name, c in qmodel.named_convs()}


def _twin_gradients(qmodel, x, y):
    twin = Q.to_fake_quant(qmodel).astype("float64").train()
    logits = twin.forward(x.astype(np.float64))
    _, d = nn.softmax_cross_entropy(logits, y)
    twin.backward(d)
    layers = [m for _, m in twin.named_layers() if isinstance(m, Q.FakeQuantConv)]
    return {
        name: (layer.params["weight"].grad, layer.params["bias"].grad)
        for (name, _), layer in zip(qmodel.named_convs(), layers, strict=True)
    }


def test_int_graph_gradients_are_the_twins_ste_gradients_in_integer_units():
    qmodel, x, y = _setup()
    int_grads, twin_grads = _int_gradients(qmodel, x, y), _twin_gradients(qmodel, x, y)
    for name, conv in qmodel.named_convs():
        s_w = conv.weight_scale.reshape((-1,) + (1,) * (conv.weight.ndim - 1))
        gw_int, gb_int = int_grads[name]
        gw_twin, gb_twin = twin_grads[name]
        # dL/dW_q = s_W dL/dW and dL/db_q = s_x s_W dL/db
        # (equal up to the rare one-step differences between the two forward passes)
        assert _rel(gw_int / s_w, gw_twin) < 0.02, name
        assert _rel(gb_int / (conv.input.scale * conv.weight_scale), gb_twin) < 0.02, name


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_qas_update_dequantizes_to_the_fp32_sgd_update():
    qmodel, x, y = _setup(1)
    before = {name: c.weight.copy() for name, c in qmodel.named_convs()}
    grads = _int_gradients(qmodel, x, y)
    lr = 0.05
    opt = qas.Int8Optimizer(qmodel, "sgd", lr=lr, momentum=0.0, qas=True, store="shadow")
    opt.step()
    for name, conv in qmodel.named_convs():
        s_w = conv.weight_scale.reshape((-1,) + (1,) * (conv.weight.ndim - 1))
        g_real = grads[name][0] / s_w  # the int graph's dL/dW in real units
        shadow = opt.state[f"{name}.weight"]["shadow"]
        update = s_w * (shadow - before[name])  # the dequantized update
        inside = np.abs(shadow) < 127  # the shadow is clipped to the int8 range
        np.testing.assert_allclose(update[inside], -lr * g_real[inside], rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(conv.weight, np.round(shadow).astype(np.int8))


def test_without_qas_the_effective_learning_rate_is_scaled_by_s_w_squared():
    qmodel, x, y = _setup(2)
    before = {name: c.weight.astype(np.float32) for name, c in qmodel.named_convs()}
    grads = _int_gradients(qmodel, x, y)
    lr = 300.0  # large enough for the update to survive the float32 shadow's rounding
    opt = qas.Int8Optimizer(qmodel, "sgd", lr=lr, momentum=0.0, qas=False)
    opt.step()
    for name, conv in qmodel.named_convs():
        s_w = conv.weight_scale.reshape((-1,) + (1,) * (conv.weight.ndim - 1))
        shadow = opt.state[f"{name}.weight"]["shadow"]
        update = s_w * (shadow - before[name])
        expected = -lr * s_w**2 * (grads[name][0] / s_w)  # SGD at learning rate lr * s_W^2
        inside = np.abs(shadow) < 127
        scale = np.abs(expected).max()
        np.testing.assert_allclose(update[inside], expected[inside], rtol=1e-3, atol=1e-4 * scale)


def test_pure_int8_storage_drops_updates_below_half_a_step():
    runs = {}
    for store in ("shadow", "int8"):
        qmodel, x, y = _setup(3)
        grads = _int_gradients(qmodel, x, y)
        convs = dict(qmodel.named_convs())
        biggest = max(
            np.abs(g * qas.qas_gradient_scales(convs[n])[0]).max() for n, (g, _) in grads.items()
        )
        lr = 0.3 / biggest  # every single update is below 0.3 of a step
        opt = qas.Int8Optimizer(qmodel, "sgd", lr=lr, momentum=0.0, qas=True, store=store)
        for _ in range(8):
            _int_gradients(qmodel, x, y)
            opt.step()
        runs[store] = opt.frozen_fraction()
    assert runs["int8"] == 1.0  # nothing ever moves
    assert runs["shadow"] < 1.0  # the fp32 shadow accumulates them


@functools.lru_cache(maxsize=1)
def _pretrained_toy():
    """The small model trained (fp32, Adam) on learnable labels: a realistic logit range."""
    rng = np.random.default_rng(14)
    x = rng.uniform(0, 1, (48, 2, 6, 6)).astype(np.float32)
    brightness = x[:, 0].mean(axis=(1, 2)) - x[:, 1].mean(axis=(1, 2))
    y = np.digitize(brightness, np.quantile(brightness, [1 / 3, 2 / 3]))
    model = small_model(4).train()
    train.fit(
        model, nn.Adam(model, lr=0.01), x, y, epochs=30, batch_size=16, seed=0, progress=False
    )
    return model.eval(), x, y


def test_int8_training_with_qas_tracks_fp32_and_adam_trains_too():
    model, x, y = _pretrained_toy()
    y_new = (y + 1) % 3  # adapt to a relabelling
    fp32 = Q.fold_model(model).train()
    history = train.fit(
        fp32,
        nn.SGD(fp32, lr=0.01, momentum=0.9),
        x,
        y_new,
        epochs=20,
        batch_size=16,
        seed=0,
        progress=False,
    )
    final = {"fp32": np.mean(history.step_loss[-6:])}
    for kind, lr, use_qas in (("sgd", 0.01, True), ("sgd", 0.01, False), ("adam", 0.3, False)):
        qmodel = Q.quantize_model(model, x)
        opt = qas.Int8Optimizer(qmodel, kind, lr=lr, qas=use_qas)
        losses = qas.fit_int8(qmodel, opt, x, y_new, epochs=20, batch_size=16, seed=0)
        final[(kind, use_qas)] = np.mean(losses[-6:])
        start = np.mean(losses[:3])
    assert abs(final[("sgd", True)] - final["fp32"]) < 0.1  # same lr, same result
    assert final[("sgd", False)] > 3 * final["fp32"]  # without QAS the same lr does ~nothing
    assert final[("adam", False)] < 0.5 * start


def test_frozen_layers_keep_their_weights_and_save_no_input():
    qmodel, x, y = _setup(5)
    convs = dict(qmodel.named_convs())
    for conv in list(convs.values())[:-1]:
        conv.weight_trainable = False
    qmodel.forward_int(qmodel.quantize_input(x), save=True)
    assert "x" not in convs["features.0"].saved and "x" in convs["classifier.0"].saved
    frozen = {n: c.weight.copy() for n, c in convs.items()}
    opt = qas.Int8Optimizer(qmodel, "sgd", lr=0.1, qas=True)
    qas.fit_int8(qmodel, opt, x, y, epochs=2, batch_size=8, seed=0)
    for name, conv in list(convs.items())[:-1]:
        np.testing.assert_array_equal(conv.weight, frozen[name])
    assert not np.array_equal(convs["classifier.0"].weight, frozen["classifier.0"])
    assert qas.trainable_parameters(qmodel) == convs["classifier.0"].weight.size + sum(
        c.bias.size for c in convs.values()
    )


def test_weight_gradient_ratio_of_the_int_graph_is_s_w_to_the_minus_two_and_qas_restores_it():
    model = small_model(6)
    rng = np.random.default_rng(6)
    x, y = rng.uniform(0, 1, (32, 2, 6, 6)).astype(np.float32), rng.integers(0, 3, 32)
    qmodel = Q.quantize_model(model, x)
    ratios = qas.weight_gradient_ratios(Q.fold_model(model), qmodel, x, y)
    assert list(ratios) == [name for name, _ in qmodel.named_convs()]
    for name, r in ratios.items():
        assert r["int8"] > 100 * r["fp32"], name
        assert 0.5 < r["int8_qas"] / r["fp32"] < 2.0, name


def test_bad_optimizer_arguments_are_named():
    qmodel, _, _ = _setup()
    with pytest.raises(ValueError, match="kind must be one of"):
        qas.Int8Optimizer(qmodel, "lars")
    with pytest.raises(ValueError, match="store must be one of"):
        qas.Int8Optimizer(qmodel, store="fp16")


@pytest.mark.parametrize("backend_name", ["numpy", "cython"])
def test_analytic_int8_training_memory_is_within_ten_percent(backend_name):
    from tinyodl import backend
    from tinyodl.quantization.memory import (
        analytic_int8_training_memory,
        measure_int8_training_step,
    )

    if backend_name == "cython" and not backend.cython_available():
        pytest.skip("kernels not built")
    task = tasks.load_task("B", per_class=2)
    model, x, y = task.pretrained(), task.x_train, task.y_train
    with backend.use_backend(backend_name):
        for kind, store in (("sgd", "shadow"), ("adam", "int8")):
            qmodel = Q.quantize_model(model, tasks.calibration_images("B", 32))
            opt = qas.Int8Optimizer(qmodel, kind, lr=0.01, store=store)
            qas.int8_train_step(qmodel, opt, x[:16], y[:16])  # the optimizer state exists
            measured = measure_int8_training_step(qmodel, opt, x[:16], y[:16])
            predicted = analytic_int8_training_memory(
                qmodel, 16, x.shape[1:], kind, store=store, backend=backend_name
            )
            assert predicted.resident_bytes == measured.resident_bytes
            total = measured.total_peak_bytes
            assert abs(predicted.total_peak_bytes - total) <= 0.1 * total, (kind, store)
