"""Optimizers (state dicts, frozen parameters, schedules) and initializers."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import nn
from tinyodl.nn import init


def _quadratic_steps(opt, params, steps):
    """Minimise sum(p^2)/2 (gradient = p)."""
    for _ in range(steps):
        for p in params:
            p.grad = p.data.copy()
        opt.step()


def test_sgd_plain_step_formula():
    p = nn.Parameter(np.array([1.0, -2.0]))
    p.grad = np.array([0.5, 0.5])
    nn.SGD([p], lr=0.1, weight_decay=0.2).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.1 * (0.5 + 0.2), -2.0 - 0.1 * (0.5 - 0.4)])


def test_adam_first_step_moves_by_lr():
    p = nn.Parameter(np.array([1.0, -2.0, 3.0]))
    p.grad = np.array([0.3, -5.0, 1e-3])
    nn.Adam([p], lr=0.01, eps=1e-12).step()  # bias correction: |step| = lr * sign(g)
    np.testing.assert_allclose(p.data, [0.99, -1.99, 2.99], rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: nn.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        lambda ps: nn.Adam(ps, lr=0.05),
    ],
)
def test_state_dict_resume_equals_uninterrupted_run(make):
    model = nn.Sequential([nn.Linear(3, 2, seed=0)]).astype(np.float64)
    reference = nn.Sequential([nn.Linear(3, 2, seed=0)]).astype(np.float64)
    opt, ref_opt = make(model), make(reference)
    _quadratic_steps(ref_opt, reference.parameters(), 6)
    _quadratic_steps(opt, model.parameters(), 3)
    state = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert int(state["step"]) == 3
    resumed = make(model)
    resumed.load_state_dict(state)
    _quadratic_steps(resumed, model.parameters(), 3)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-12)


def test_optimizer_skips_frozen_and_gradless_params_and_lr_is_settable():
    model = nn.Sequential([nn.Linear(2, 2, seed=0), nn.Linear(2, 1, seed=1)])
    model.freeze("0")
    before = model.state_dict()
    opt = nn.SGD(model, lr=0.0)
    opt.lr = 0.5
    model.forward(np.ones((1, 2)))
    model.backward(np.ones((1, 1)))
    opt.step()
    after = model.state_dict()
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])
    assert not np.array_equal(after["1.weight"], before["1.weight"])
    opt.zero_grad()
    assert np.all(model[1].params["weight"].grad == 0)


def test_optimizer_errors():
    p = nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        nn.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        nn.Adam([p], lr=-1)
    with pytest.raises(TypeError, match="'0' is not a Parameter"):
        nn.SGD([np.zeros(2)], lr=0.1)
    opt = nn.SGD({"w": p}, lr=0.1, momentum=0.9)
    with pytest.raises(KeyError, match="unexpected key 'v.momentum_buffer'"):
        opt.load_state_dict({"lr": 0.1, "step": 1, "v.momentum_buffer": np.zeros(2)})


def test_parameter_freezing_drops_gradients():
    p = nn.Parameter(np.ones(3))
    p.accumulate_grad(np.ones(3))
    p.trainable = False
    assert p.grad is None
    p.accumulate_grad(np.ones(3))
    assert p.grad is None
    with pytest.raises(ValueError, match=r"gradient shape \(2,\) does not match"):
        nn.Parameter(np.ones(3)).accumulate_grad(np.ones(2))


@pytest.mark.parametrize(
    "fn, std",
    [
        (init.kaiming_normal, np.sqrt(2 / 300)),
        (init.kaiming_uniform, np.sqrt(2 / 300)),
        (init.xavier_normal, np.sqrt(2 / (300 + 400))),
        (init.xavier_uniform, np.sqrt(2 / (300 + 400))),
    ],
)
def test_initializer_scales(fn, std):
    w = fn((400, 300), np.random.default_rng(0), dtype=np.float64)
    assert w.shape == (400, 300)
    assert w.std() == pytest.approx(std, rel=0.02)
    np.testing.assert_array_equal(w, fn((400, 300), 0, dtype=np.float64))  # seeded


def test_fans_of_conv_weights():
    assert init.fan_in_and_fan_out((8, 4, 3, 3)) == (36, 72)
    assert np.all(init.zeros((2, 3)) == 0)
    with pytest.raises(ValueError, match="rank >= 2"):
        init.fan_in_and_fan_out((3,))
