"""Chapter 11 against the Adversarial Robustness Toolbox (ART, test-only oracle).

The same weights in a PyTorch copy (``tinyodl.nn.torch_state_dict``), wrapped in ART's
``PyTorchClassifier``: FGSM/FGM and PGD without a random start must produce the same
adversarial examples as ART's ``FastGradientMethod`` / ``ProjectedGradientDescent`` on
identical inputs, and the black-box attacks must reach comparable success at comparable
query counts (HopSkipJump against ART's HopSkipJump, NES against ART's SquareAttack).

"Within float tolerance" means two things here. (1) The two float32 gradients differ by
rounding (about 1e-6 relative), so a pixel whose gradient is ~0 can get the opposite sign:
an L-infinity step then differs by 2 eps at that pixel. :func:`_assert_same` allows such
sign ties on at most 0.1% of the pixels (FGSM: only where the gradient is below 1e-3 of
the example's largest). (2) L2 steps divide by the gradient norm; for examples the model
is very sure of, ``softmax - onehot`` has ``1 - p_y`` below float32 resolution and the
direction itself is rounding noise, so the L2 comparisons use the examples with a loss
above 1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
from security_helpers import mnist_mlp, mnist_test

from tinyodl import nn
from tinyodl.attacks import (
    FGSM,
    PGD,
    Classifier,
    FastGradientMethod,
    ProjectedGradientDescent,
)
from tinyodl.attacks.blackbox import NES, HopSkipJump

torch = pytest.importorskip("torch")
art = pytest.importorskip("art")
pytestmark = pytest.mark.torch

from art.attacks.evasion import (  # noqa: E402
    FastGradientMethod as ArtFGM,
)
from art.attacks.evasion import (  # noqa: E402
    HopSkipJump as ArtHSJ,
)
from art.attacks.evasion import (  # noqa: E402
    ProjectedGradientDescent as ArtPGD,
)
from art.attacks.evasion import (  # noqa: E402
    SquareAttack as ArtSquare,
)
from art.estimators.classification import PyTorchClassifier  # noqa: E402


class _Counting(torch.nn.Module):
    """Counts the inputs ART sends through the model (its query count)."""

    def __init__(self, module):
        super().__init__()
        self.module, self.count = module, 0

    def forward(self, x):
        self.count += int(x.shape[0])
        return self.module(x.float())


@pytest.fixture(scope="module")
def pair():
    import torch_models

    model = mnist_mlp()
    twin = torch_models.mlp_2nn()
    twin.load_state_dict(nn.torch_state_dict(model, mapping=list(twin.state_dict())))
    twin.eval()
    counting = _Counting(twin)
    clf = PyTorchClassifier(
        counting,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    return model, clf, counting


def _onehot(y):
    return np.eye(10, dtype=np.float32)[y]


def _well_conditioned(model, n=400, keep=24):
    x, y = mnist_test(n)
    loss = Classifier(model).loss(x, y)
    idx = np.argsort(-loss)[:keep]
    assert loss[idx].min() > 1e-3
    return x[idx], y[idx]


def _assert_same(ours, theirs, grad=None, max_fraction=1e-3, atol=1e-6):
    """Equal within ``atol`` except for rare sign ties (see the module docstring)."""
    differ = np.abs(ours - theirs) > atol
    assert differ.mean() <= max_fraction, f"{differ.sum()} of {differ.size} values differ"
    if grad is not None and differ.any():
        scale = np.abs(grad).reshape(len(grad), -1).max(axis=1).reshape(-1, 1, 1, 1)
        assert (np.abs(grad) / scale)[differ].max() < 1e-3, "a difference at a clear gradient"
    return differ.sum()


def test_same_logits(pair):
    model, clf, _ = pair
    x, _ = mnist_test(32)
    np.testing.assert_allclose(clf.predict(x), Classifier(model).predict(x), atol=1e-4)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_fgsm_equals_art(pair, eps):
    model, clf, _ = pair
    x, y = mnist_test(64)
    ours = FGSM(model, eps=eps).generate(x, y)
    theirs = ArtFGM(clf, norm=np.inf, eps=eps).generate(x, _onehot(y))
    _assert_same(ours, theirs, Classifier(model).loss_gradient(x, y))
    assert np.abs(ours - x).max() > 0.5 * eps  # the attack did move the inputs
    # untargeted without labels: both attack the model's own prediction
    _assert_same(FGSM(model, eps=eps).generate(x), ArtFGM(clf, norm=np.inf, eps=eps).generate(x))


def test_targeted_fgsm_equals_art(pair):
    model, clf, _ = pair
    x, y = mnist_test(32)
    t = (y + 3) % 10
    ours = FGSM(model, eps=0.2, targeted=True).generate(x, t)
    theirs = ArtFGM(clf, norm=np.inf, eps=0.2, targeted=True).generate(x, _onehot(t))
    _assert_same(ours, theirs, Classifier(model).loss_gradient(x, t))


def test_fgm_l2_equals_art(pair):
    model, clf, _ = pair
    x, y = _well_conditioned(model)
    ours = FastGradientMethod(model, norm=2, eps=2.0).generate(x, y)
    theirs = ArtFGM(clf, norm=2, eps=2.0).generate(x, _onehot(y))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_linf_without_random_start_equals_art(pair, targeted):
    model, clf, _ = pair
    x, y = mnist_test(48)
    labels = (y + 1) % 10 if targeted else y
    kw = {"eps": 0.2, "eps_step": 0.02, "max_iter": 10, "targeted": targeted}
    ours = ProjectedGradientDescent(model, norm=np.inf, **kw).generate(x, labels)
    theirs = ArtPGD(clf, norm=np.inf, num_random_init=0, verbose=False, **kw).generate(
        x, _onehot(labels)
    )
    _assert_same(ours, theirs, atol=1e-5)
    assert np.abs(ours - x).max() > 0.1  # ten steps of 0.02 did move the inputs


def test_pgd_l2_without_random_start_equals_art(pair):
    model, clf, _ = pair
    x, y = _well_conditioned(model)
    kw = {"eps": 2.0, "eps_step": 0.25, "max_iter": 10}
    ours = PGD(model, norm=2, **kw).generate(x, y)
    theirs = ArtPGD(clf, norm=2, num_random_init=0, verbose=False, **kw).generate(x, _onehot(y))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.slow
def test_hopskipjump_comparable_to_art(pair):
    model, clf, counting = pair
    x, y = mnist_test(8)
    counting.count = 0
    theirs = ArtHSJ(clf, norm=2, max_iter=10, max_eval=1000, init_eval=100, verbose=False)
    x_art = theirs.generate(x)
    art_queries = counting.count / len(x)
    d_art = np.linalg.norm((x_art - x).reshape(len(x), -1), axis=1)
    ours = HopSkipJump(model, max_queries=int(art_queries), seed=0)
    x_ours = ours.generate(x)
    assert ours.queries_.max() <= art_queries
    assert np.all(Classifier(model).predict_labels(x_ours) != Classifier(model).predict_labels(x))
    assert np.median(ours.distances_) <= 1.25 * np.median(d_art)


@pytest.mark.slow
def test_nes_comparable_to_art_square_attack(pair):
    """NES against ART's SquareAttack (a stronger score-based L-inf attack) at eps 0.2.

    ART counts queries in total, so its budget here is the *mean* per example; NES gets a
    per-example cap of 5x that mean and must succeed about as often while spending, on
    average, at most 1.5x ART's queries. ART's SquareAttack draws from numpy's global
    generator, seeded here so that its query count is reproducible.
    """
    model, clf, counting = pair
    x, y = mnist_test(10)
    counting.count = 0
    np.random.seed(0)  # noqa: NPY002 -- ART's SquareAttack samples from the global RNG
    x_sq = ArtSquare(
        clf, norm=np.inf, eps=0.2, max_iter=300, nb_restarts=1, verbose=False
    ).generate(x, _onehot(y))
    art_mean_queries = counting.count / len(x)
    art_success = np.mean(clf.predict(x_sq).argmax(1) != y)
    nes = NES(
        model,
        eps=0.2,
        eps_step=0.02,
        samples=10,
        momentum=0.9,
        max_queries=int(5 * art_mean_queries),
        seed=0,
    )
    nes.generate(x, y)
    assert nes.queries_.mean() <= 1.5 * art_mean_queries
    assert nes.success_.mean() >= art_success - 0.15
