"""The training loop, independent of tinyodl.nn: a tiny model written against the contract.

`SoftmaxRegression` and `MomentumSGD` implement just the interface that
:func:`tinyodl.train.fit` uses (docs/architecture.md), including a layer-owned random
generator (input noise, like dropout), so resuming has to restore it too.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl.checkpoint import load_checkpoint
from tinyodl.train import DivergenceError, History, evaluate, fit, predict


class Param:
    def __init__(self, data):
        self.data, self.grad, self.trainable = data, None, True


class SoftmaxRegression:
    """logits = (x + noise) @ W.T + b, with noise ~ N(0, sigma^2) in training mode."""

    def __init__(self, n_in, n_out, seed=0, sigma=0.0):
        rng = np.random.default_rng(seed)
        self.params = {
            "weight": Param(rng.normal(0, 0.01, (n_out, n_in))),
            "bias": Param(np.zeros(n_out)),
        }
        self.sigma, self.rng = sigma, np.random.default_rng(seed + 1)
        self.nan_grad_at = None  # testing hook: a NaN in the bias gradient at that call
        self.calls = 0

    def named_layers(self):
        return iter([])

    def named_parameters(self):
        return [(f"fc.{k}", p) for k, p in self.params.items()]

    def forward(self, x, train=True):
        x = x.reshape(len(x), -1)
        if train and self.sigma:
            x = x + self.sigma * self.rng.normal(size=x.shape)
        self.x = x
        return x @ self.params["weight"].data.T + self.params["bias"].data

    def backward(self, dout):
        self.params["weight"].grad = dout.T @ self.x
        self.params["bias"].grad = dout.sum(axis=0)
        if self.calls == self.nan_grad_at:
            self.params["bias"].grad[0] = np.nan
        self.calls += 1
        return dout @ self.params["weight"].data

    def state_dict(self):
        return {f"fc.{k}": p.data.copy() for k, p in self.params.items()}

    def load_state_dict(self, state):
        for k, p in self.params.items():
            p.data = np.array(state[f"fc.{k}"])


class MomentumSGD:
    def __init__(self, params, lr, momentum=0.9):
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.velocity = [np.zeros_like(p.data) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        for p, v in zip(self.params, self.velocity, strict=True):
            v *= self.momentum
            v += p.grad
            p.data = p.data - self.lr * v

    def state_dict(self):
        return {"lr": self.lr, "velocity": [v.copy() for v in self.velocity]}

    def load_state_dict(self, state):
        self.lr = state["lr"]
        self.velocity = [np.array(v) for v in state["velocity"]]


def cross_entropy(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y)
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), y] -= 1.0
    return -log_p[np.arange(n), y].mean(), dlogits / n


def blobs(n=120, d=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, d))
    y = rng.integers(0, classes, n)
    return centres[y] + rng.normal(size=(n, d)), y


def make(sigma=0.0, lr=0.05):
    model = SoftmaxRegression(5, 3, sigma=sigma)
    return model, MomentumSGD([p for _, p in model.named_parameters()], lr=lr)


def weights(model):
    return [p.data.copy() for _, p in model.named_parameters()]


RUN = {"epochs": 3, "batch_size": 16, "seed": 7, "loss": cross_entropy, "progress": False}


def test_fit_learns_and_records_history():
    x, y = blobs()
    model, opt = make()
    loss_before, _ = evaluate(model, x, y, loss=cross_entropy)
    hist = fit(model, opt, x, y, **RUN, x_val=x[:40], y_val=y[:40])
    steps = 3 * int(np.ceil(120 / 16))
    assert len(hist.step_loss) == len(hist.step_lr) == steps
    assert hist.epochs == 3 and len(hist.val_accuracy) == 3 and len(hist.wall_time) == 3
    assert hist.step_lr == [0.05] * steps  # no schedule: the optimizer's lr
    loss_after, acc_after = evaluate(model, x, y, loss=cross_entropy)
    assert loss_after < 0.5 * loss_before and acc_after > 0.9
    assert hist.val_loss[-1] == pytest.approx(
        evaluate(model, x[:40], y[:40], loss=cross_entropy)[0]
    )
    assert (np.diff(hist.wall_time) >= 0).all()


def test_fit_is_deterministic_and_seed_matters():
    x, y = blobs()
    runs = []
    for seed in (7, 7, 8):
        model, opt = make(sigma=0.1)
        fit(model, opt, x, y, **{**RUN, "seed": seed})
        runs.append(weights(model))
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_epoch_train_metrics_are_means_over_the_epoch():
    x, y = blobs(n=64)
    model, opt = make()
    hist = fit(model, opt, x, y, **{**RUN, "batch_size": 16, "epochs": 2})
    # equal batch sizes: the epoch loss is the mean of its 4 step losses
    assert hist.train_loss[1] == pytest.approx(np.mean(hist.step_loss[4:8]))
    assert hist.val_loss == [None, None]


class Interrupt(KeyboardInterrupt):
    pass


def _interrupt_at(stop_step):
    def callback(step, epoch, loss):
        if step == stop_step:
            raise Interrupt

    return callback


@pytest.mark.parametrize(
    ("every", "stop"),
    [(3, 11), (4, 8), (5, 16), (1, 1), (7, 22)],  # mid-epoch, at a checkpoint, epoch end (8/epoch)
)
def test_interrupted_run_resumes_to_identical_weights(tmp_path, every, stop):
    x, y = blobs()
    x_val, y_val = x[:30], y[:30]
    reference, ref_opt = make(sigma=0.3)
    ref_hist = fit(reference, ref_opt, x, y, **RUN, x_val=x_val, y_val=y_val)

    path = tmp_path / "run.npz"
    model, opt = make(sigma=0.3)
    with pytest.raises(Interrupt):
        fit(
            model, opt, x, y, **RUN, x_val=x_val, y_val=y_val,
            checkpoint_path=path, checkpoint_every=every, callback=_interrupt_at(stop),
        )  # fmt: skip
    assert load_checkpoint(path)[1]["step"] == stop // every * every
    # a fresh process would rebuild the model and optimizer from scratch
    model, opt = make(sigma=0.3)
    model.rng = np.random.default_rng(12345)  # must be overwritten by the checkpoint
    hist = fit(
        model, opt, x, y, **RUN, x_val=x_val, y_val=y_val,
        checkpoint_path=path, checkpoint_every=every, resume=True,
    )  # fmt: skip
    for a, b in zip(weights(model), weights(reference), strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(opt.velocity, ref_opt.velocity, strict=True):
        assert np.array_equal(a, b)
    assert hist.step_loss == ref_hist.step_loss
    assert hist.train_loss == ref_hist.train_loss and hist.val_accuracy == ref_hist.val_accuracy


def test_max_steps_then_resume(tmp_path):
    x, y = blobs()
    reference, ref_opt = make(sigma=0.3)
    fit(reference, ref_opt, x, y, **RUN)
    path = tmp_path / "ck.npz"
    model, opt = make(sigma=0.3)
    part = fit(model, opt, x, y, **RUN, checkpoint_path=path, max_steps=13)
    assert len(part.step_loss) == 13 and part.epochs == 1
    again = fit(model, opt, x, y, **RUN, checkpoint_path=path, max_steps=13, resume=True)
    assert len(again.step_loss) == 13  # nothing left to do
    model, opt = make(sigma=0.3)
    fit(model, opt, x, y, **RUN, checkpoint_path=path, resume=True)
    for a, b in zip(weights(model), weights(reference), strict=True):
        assert np.array_equal(a, b)


def test_resume_with_another_seed_is_refused(tmp_path):
    x, y = blobs()
    path = tmp_path / "ck.npz"
    model, opt = make()
    fit(model, opt, x, y, **RUN, checkpoint_path=path, max_steps=3)
    with pytest.raises(ValueError, match="seed=7, resumed with seed=8"):
        fit(model, opt, x, y, **{**RUN, "seed": 8}, checkpoint_path=path, resume=True)


def test_resume_without_checkpoint_warns_and_starts(tmp_path):
    x, y = blobs()
    model, opt = make()
    with pytest.warns(UserWarning, match="starting from scratch"):
        hist = fit(model, opt, x, y, **RUN, checkpoint_path=tmp_path / "none.npz", resume=True)
    assert hist.epochs == 3 and (tmp_path / "none.npz").exists()


def test_divergence_on_nan_loss_names_step_and_epoch():
    x, y = blobs()
    model, opt = make()
    calls = []

    def loss(logits, yb):
        calls.append(1)
        value, d = cross_entropy(logits, yb)
        return (np.inf if len(calls) == 10 else value), d

    with pytest.raises(DivergenceError, match="step 9 \\(epoch 1\\).*the loss") as info:
        fit(model, opt, x, y, **{**RUN, "loss": loss})
    assert (info.value.step, info.value.epoch, info.value.where) == (9, 1, "loss")


def test_divergence_on_nan_gradient_names_the_parameter():
    x, y = blobs()
    model, opt = make()
    model.nan_grad_at = 4
    before = weights(model)
    with pytest.raises(DivergenceError, match="gradient of 'fc.bias'") as info:
        fit(model, opt, x, y, **RUN)
    assert info.value.where == "fc.bias" and info.value.step == 4
    assert all(np.isfinite(w).all() for w in weights(model))  # caught before the update
    assert not np.array_equal(before[0], weights(model)[0])


def test_divergence_on_exploding_parameters():
    """Finite loss and gradients, but the update overflows the weights to inf."""
    x, y = blobs()
    model, opt = make(lr=1e308)
    with np.errstate(over="ignore"), pytest.raises(DivergenceError) as info:
        fit(model, opt, x * 10, y, **RUN)
    assert (info.value.step, info.value.epoch, info.value.where) == (0, 0, "fc.weight")
    assert "'fc.weight' is not finite" in str(info.value)


def test_schedule_sets_the_optimizer_lr():
    x, y = blobs()
    model, opt = make()
    seen = []
    original_step = opt.step

    def spy():
        seen.append(opt.lr)
        original_step()

    opt.step = spy
    hist = fit(model, opt, x, y, **RUN, schedule=lambda step: 0.1 / (1 + step))
    expected = [0.1 / (1 + s) for s in range(len(seen))]
    assert seen == expected and hist.step_lr == expected


def test_evaluate_and_predict_known_model():
    model, _ = make()
    model.params["weight"].data = np.zeros((3, 5))
    model.params["weight"].data[:, 0] = [1.0, 0.0, -1.0]
    model.params["bias"].data = np.zeros(3)
    x = np.zeros((4, 5))
    x[:, 0] = [2.0, -2.0, 3.0, -1.0]
    y = np.array([0, 2, 0, 0])
    np.testing.assert_array_equal(predict(model, x, batch_size=3), [0, 2, 0, 2])
    loss, acc = evaluate(model, x, y, batch_size=3, loss=cross_entropy)
    assert acc == 0.75
    assert loss == pytest.approx(cross_entropy(model.forward(x, train=False), y)[0])


def test_bad_arguments():
    x, y = blobs()
    model, opt = make()
    with pytest.raises(ValueError, match="x_train has 120 examples, y_train 119"):
        fit(model, opt, x, y[:-1], **RUN)
    with pytest.raises(ValueError, match="both x_val and y_val"):
        fit(model, opt, x, y, **RUN, x_val=x)
    with pytest.raises(ValueError, match="checkpoint_every needs"):
        fit(model, opt, x, y, **RUN, checkpoint_every=3)
    with pytest.raises(ValueError, match="unknown loss 'hinge_squared_xyz'"):
        fit(model, opt, x, y, **{**RUN, "loss": "hinge_squared_xyz"})


def test_history_round_trip_and_plot(tmp_path):
    x, y = blobs()
    model, opt = make()
    hist = fit(model, opt, x, y, **RUN, x_val=x[:20], y_val=y[:20])
    assert History.from_dict(hist.to_dict()) == hist
    fig = hist.plot(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 3  # per step, per epoch, validation


def test_progress_bar_can_be_shown_and_hidden(capsys):
    x, y = blobs()
    model, opt = make()
    fit(model, opt, x, y, **{**RUN, "progress": True})
    assert "step" in capsys.readouterr().err
    fit(model, opt, x, y, **RUN)
    assert capsys.readouterr().err == ""
