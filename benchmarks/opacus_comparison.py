"""The deviations behind ``tests/test_privacy_opacus.py``, printed (the tests only bound them).

Reuses the tests' identical models and Poisson lots; needs the test extra (torch, opacus):

    python benchmarks/opacus_comparison.py

Prints, relative to the largest entry of each tensor: per-example gradients against Opacus's
``grad_sample``; with both noises zero, the clipped sums and the weights after the lots (both
clipping methods); with Opacus's noise draws fed to tinyodl, the weights; and both RDP
accountants' epsilon for 300 steps at q = 0.01, sigma = 1.1.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np

from tinyodl import nn, privacy

warnings.filterwarnings("ignore")
_spec = importlib.util.spec_from_file_location(
    "opacus_tests", Path(__file__).resolve().parents[1] / "tests" / "test_privacy_opacus.py"
)
t = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(t)
torch = t.torch


def rel(ours, theirs) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def weights(model, tmodel) -> float:
    pairs = zip(model.named_parameters(), tmodel.named_parameters(), strict=True)
    return max(rel(p.data, tp.detach().numpy()) for (_, p), (_, tp) in pairs)


def main() -> None:
    model, gsm, _ = t.setup(0.0, 1.0, 5)
    x, y, batches = t.lots()
    idx = batches[0]
    out = gsm(torch.tensor(x[idx]))
    torch.nn.functional.cross_entropy(out, torch.tensor(y[idx])).backward()
    _, grads = privacy.per_example_gradients(model, x[idx], y[idx])
    pairs = zip(grads.values(), gsm.parameters(), strict=True)
    print("per-example gradients:", max(rel(g, tp.grad_sample.numpy()) for g, tp in pairs))
    for clipping in privacy.CLIPPING_METHODS:
        model, gsm, opt = t.setup(0.0, 0.3, 6)
        dp = privacy.DPSGD(model, nn.SGD(model, lr=0.2), clip_norm=0.3, noise_multiplier=0.0,
                           expected_batch_size=6, clipping=clipping)  # fmt: skip
        worst = 0.0
        for idx in batches:
            t.opacus_step(gsm, opt, x[idx], y[idx])
            dp.step(x[idx], y[idx])
            pairs = zip(model.parameters(), gsm.parameters(), strict=True)
            worst = max([worst] + [rel(p.grad, tp.grad.numpy()) for p, tp in pairs])
        print(f"{clipping}, no noise: clipped sums {worst:.2e}, weights after {len(batches)} "
              f"steps {weights(model, gsm._module):.2e}")  # fmt: skip
    model, gsm, opt = t.setup(1.3, 0.5, 6)
    drawn = []
    real = t.opacus_optimizer._generate_noise

    def spy(*args, **kwargs):
        noise = real(*args, **kwargs)
        drawn.append(noise.detach().numpy().copy())
        return noise

    t.opacus_optimizer._generate_noise = spy
    names = [n for n, _ in model.named_parameters()]
    dp = privacy.DPSGD(model, nn.SGD(model, lr=0.2), clip_norm=0.5, noise_multiplier=1.3,
                       expected_batch_size=6)  # fmt: skip
    for idx in batches:
        drawn.clear()
        t.opacus_step(gsm, opt, x[idx], y[idx])
        dp.step(x[idx], y[idx], noise=dict(zip(names, drawn, strict=True)))
    print(f"Opacus noise fed in: weights after {len(batches)} steps "
          f"{weights(model, gsm._module):.2e}")  # fmt: skip
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(300):
        acc.step(noise_multiplier=1.1, sample_rate=0.01)
    ours = privacy.epsilon(q=0.01, noise_multiplier=1.1, steps=300, delta=1e-5)
    theirs = acc.get_epsilon(1e-5)
    print(
        f"accountant: tinyodl {ours:.12f}, Opacus {theirs:.12f}, "
        f"rel {abs(ours - theirs) / theirs:.1e}"
    )


if __name__ == "__main__":
    main()
