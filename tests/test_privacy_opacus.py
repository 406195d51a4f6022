"""Chapter 10: DP-SGD equals Opacus 1.6 on an identical PyTorch model (test-only oracle).

The same Poisson lots (variable sizes) go to both; either both noises are zero and the
clipped sums are compared, or Opacus's noise draws are captured and fed to tinyodl. Opacus
divides by ``norm + 1e-6`` when clipping, tinyodl by ``norm``: in float64 that is the only
difference, a relative 1e-6 / ||g|| on each clipped example, hence a tolerance of 2e-6 of
the largest entry of each parameter (an element-wise relative tolerance would fail on sums
that cancel to almost zero).
"""

import warnings

import numpy as np
import pytest

from tinyodl import nn, privacy

pytestmark = [
    pytest.mark.torch,
    pytest.mark.filterwarnings("ignore:Full backward hook:UserWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:opacus"),
]

torch = pytest.importorskip("torch")
opacus = pytest.importorskip("opacus")
from opacus import GradSampleModule  # noqa: E402
from opacus.optimizers import DPOptimizer  # noqa: E402
from opacus.optimizers import optimizer as opacus_optimizer  # noqa: E402


def ours():
    return nn.Sequential(
        [
            nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2, seed=1),
            nn.ReLU(),
            nn.DepthwiseConv2d(4, 3, stride=1, padding=1, seed=2),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, stride=2, padding=0, seed=3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6, 5, seed=4),
        ]
    ).astype(np.float64)


def twin(model):
    t = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, stride=1, padding=1, groups=4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, stride=2, padding=0),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 5),
    ).double()
    t.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    return t


def opacus_step(gsm, opt, x, y):
    opt.zero_grad()
    out = gsm(torch.tensor(x))
    torch.nn.functional.cross_entropy(out, torch.tensor(y), reduction="mean").backward()
    opt.step()


def setup(noise_multiplier, clip, lot):
    model = ours()
    gsm = GradSampleModule(twin(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = DPOptimizer(
            torch.optim.SGD(gsm.parameters(), lr=0.2),
            noise_multiplier=noise_multiplier,
            max_grad_norm=clip,
            expected_batch_size=lot,
        )
    return model, gsm, opt


def lots(steps=6, n=60, q=0.1):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, 2, 8, 8)), rng.integers(0, 5, n)
    batches = [idx for idx in privacy.poisson_batches(n, q, steps, rng) if len(idx)]
    assert len({len(b) for b in batches}) > 1  # variable lot sizes
    return x, y, batches


def assert_same(model, t, rtol):
    for (name, p), (_, tp) in zip(model.named_parameters(), t.named_parameters(), strict=True):
        theirs = tp.detach().numpy()
        np.testing.assert_allclose(
            p.data, theirs, rtol=0, atol=rtol * np.abs(theirs).max(), err_msg=name
        )


def test_per_example_gradients_equal_opacus_grad_samples():
    model, gsm, _ = setup(0.0, 1.0, 5)
    x, y, batches = lots()
    idx = batches[0]
    out = gsm(torch.tensor(x[idx]))
    # Opacus (loss_reduction="mean") rescales its grad samples by the batch size: they are
    # the gradients of the per-example losses, as ours with the summed loss
    torch.nn.functional.cross_entropy(out, torch.tensor(y[idx]), reduction="mean").backward()
    _, grads = privacy.per_example_gradients(model, x[idx], y[idx])
    for (name, g), (_, tp) in zip(grads.items(), gsm.named_parameters(), strict=True):
        np.testing.assert_allclose(g, tp.grad_sample.numpy(), rtol=1e-10, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("clipping", privacy.CLIPPING_METHODS)
def test_clipped_sums_equal_opacus_without_noise(clipping):
    clip, lot = 0.3, 6
    model, gsm, opt = setup(0.0, clip, lot)
    x, y, batches = lots()
    dp = privacy.DPSGD(
        model,
        nn.SGD(model, lr=0.2),
        clip_norm=clip,
        noise_multiplier=0.0,
        expected_batch_size=lot,
        clipping=clipping,
    )
    for idx in batches:
        opacus_step(gsm, opt, x[idx], y[idx])
        stats = dp.step(x[idx], y[idx])
        assert stats["clipped_fraction"] > 0  # the clipping is exercised
        for (name, p), (_, tp) in zip(
            model.named_parameters(), gsm.named_parameters(), strict=True
        ):
            theirs = tp.grad.numpy()
            # each clipped example differs by a relative 1e-6 / ||g_i||: bound the sum by scale
            tol = 2e-6 * np.abs(theirs).max()
            np.testing.assert_allclose(p.grad, theirs, rtol=0, atol=tol, err_msg=name)
    assert_same(model, gsm._module, rtol=2e-6)


def test_training_with_opacus_noise_fed_in_gives_the_same_weights(monkeypatch):
    clip, lot, sigma = 0.5, 6, 1.3
    model, gsm, opt = setup(sigma, clip, lot)
    drawn = []
    real = opacus_optimizer._generate_noise

    def spy(*args, **kwargs):
        noise = real(*args, **kwargs)
        drawn.append(noise.detach().numpy().copy())
        return noise

    monkeypatch.setattr(opacus_optimizer, "_generate_noise", spy)
    x, y, batches = lots()
    dp = privacy.DPSGD(
        model,
        nn.SGD(model, lr=0.2),
        clip_norm=clip,
        noise_multiplier=sigma,
        expected_batch_size=lot,
    )
    names = [n for n, _ in model.named_parameters()]
    for idx in batches:
        drawn.clear()
        opacus_step(gsm, opt, x[idx], y[idx])
        assert len(drawn) == len(names)
        assert np.std(np.concatenate([d.ravel() for d in drawn])) > 0.3  # real noise
        dp.step(x[idx], y[idx], noise=dict(zip(names, drawn, strict=True)))
    assert_same(model, gsm._module, rtol=2e-6)


def test_opacus_accountant_agrees_with_ours():
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(300):
        acc.step(noise_multiplier=1.1, sample_rate=0.01)
    ours = privacy.epsilon(q=0.01, noise_multiplier=1.1, steps=300, delta=1e-5)
    assert ours == pytest.approx(acc.get_epsilon(1e-5), rel=1e-6)
