"""Learning-rate schedules: the defining properties of each formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl.schedules import Constant, Cosine, LinearWarmup, StepDecay


def test_constant():
    assert {Constant(0.3)(s) for s in range(0, 1000, 37)} == {0.3}


@settings(max_examples=30, deadline=None)
@given(lr=st.floats(1e-4, 1.0), size=st.integers(1, 50), gamma=st.floats(0.05, 0.95))
def test_step_decay_drops_by_gamma_every_step_size(lr, size, gamma):
    s = StepDecay(lr, size, gamma)
    values = [s(t) for t in range(4 * size)]
    for k in range(4):
        block = values[k * size : (k + 1) * size]
        assert block == [block[0]] * size
        assert block[0] == pytest.approx(lr * gamma**k)


@settings(max_examples=30, deadline=None)
@given(lr=st.floats(1e-3, 1.0), total=st.integers(2, 500), floor=st.floats(0.0, 0.5))
def test_cosine_endpoints_midpoint_monotone(lr, total, floor):
    min_lr = floor * lr
    s = Cosine(lr, total, min_lr)
    values = np.array([s(t) for t in range(total + 10)])
    assert values[0] == pytest.approx(lr)
    assert values[total] == pytest.approx(min_lr)
    assert (values[total:] == values[total]).all()  # flat after the end
    assert (np.diff(values) <= 1e-15).all()
    if total % 2 == 0:
        assert s(total // 2) == pytest.approx((lr + min_lr) / 2)
    # symmetric around the midpoint: lr(t) + lr(T - t) = lr + min_lr
    t = total // 3
    assert s(t) + s(total - t) == pytest.approx(lr + min_lr)


@settings(max_examples=30, deadline=None)
@given(warm=st.integers(1, 100), start=st.floats(0.0, 1.0))
def test_linear_warmup_ramps_to_the_next_schedule(warm, start):
    after = Cosine(0.5, 1000)
    s = LinearWarmup(after, warm, start_factor=start)
    ramp = np.array([s(t) for t in range(warm + 1)])
    assert ramp[0] == pytest.approx(start * after(warm))
    assert ramp[warm] == after(warm)  # continuous at the end of the warmup
    if warm > 1:
        steps = np.diff(ramp)
        np.testing.assert_allclose(steps, steps[0], rtol=1e-9, atol=1e-15)  # linear
    assert [s(t) for t in range(warm, warm + 20)] == [after(t) for t in range(warm, warm + 20)]


def test_warmup_with_a_number():
    s = LinearWarmup(0.1, 10)
    assert s(0) == 0.0 and s(5) == pytest.approx(0.05) and s(10) == s(500) == 0.1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Constant(0.0), "lr must be positive"),
        (lambda: StepDecay(0.1, 0), "step_size must be positive"),
        (lambda: Cosine(0.1, 0), "total_steps must be positive"),
        (lambda: LinearWarmup(0.1, 5, start_factor=2.0), "start_factor"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_repr_names_the_schedule():
    assert "Cosine(lr=0.1, total_steps=10" in repr(LinearWarmup(Cosine(0.1, 10), 3))
    assert not math.isnan(Cosine(0.1, 10)(10**9))
