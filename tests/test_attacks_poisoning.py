"""Chapter 11: data poisoning (label flipping, data insertion, backdoor patch)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl import models, nn
from tinyodl.attacks.poisoning import BackdoorPatch, fake_inputs, flip_labels, insert_data


@settings(max_examples=30, deadline=None)
@given(fraction=st.floats(0, 1), seed=st.integers(0, 10_000), n=st.integers(1, 300))
def test_random_flip_changes_exactly_the_fraction_to_other_classes(fraction, seed, n):
    y = np.random.default_rng(seed).integers(0, 10, size=n)
    out, flipped = flip_labels(y, fraction, seed=seed)
    assert flipped.sum() == round(fraction * n)
    assert np.all(out[flipped] != y[flipped]) and np.all(out[~flipped] == y[~flipped])
    assert out.min() >= 0 and out.max() < 10 and out.dtype == y.dtype


def test_targeted_flip_moves_the_source_class_to_the_target():
    y = np.repeat(np.arange(10), 20)
    out, flipped = flip_labels(y, 0.5, seed=0, mode="targeted", source=7, target=1)
    assert flipped.sum() == 10 and np.all(y[flipped] == 7) and np.all(out[flipped] == 1)
    out, flipped = flip_labels(y, 0.1, seed=0, mode="targeted", target=3)  # every other class
    assert flipped.sum() == 18 and np.all(out[flipped] == 3) and not np.any(y[flipped] == 3)
    with pytest.raises(ValueError, match="target"):
        flip_labels(y, 0.1, mode="targeted")
    with pytest.raises(ValueError, match="fraction"):
        flip_labels(y, 1.5)
    with pytest.raises(ValueError, match="mode"):
        flip_labels(y, 0.1, mode="swap")
    a, _ = flip_labels(y, 0.3, seed=4)
    b, _ = flip_labels(y, 0.3, seed=4)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["noise", "pixelated", "garbage"])
def test_insert_data_adds_the_fraction_and_marks_it(kind):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    xs, ys, inserted = insert_data(x, y, 0.25, kind=kind, seed=1)
    assert xs.shape == (50, 1, 28, 28) and ys.shape == (50,) and inserted.sum() == 10
    assert xs.dtype == x.dtype and xs.min() >= 0 and xs.max() <= 1
    # the originals are all still there, unchanged
    originals = {a.tobytes() for a in x}
    assert sum(a.tobytes() in originals for a in xs[~inserted]) == 40
    with pytest.raises(ValueError, match="kind"):
        fake_inputs(3, "audio", x)


def test_pixelated_inputs_are_constant_on_4x4_blocks():
    x = np.random.default_rng(0).uniform(size=(5, 1, 28, 28)).astype(np.float32)
    p = fake_inputs(3, "pixelated", x, seed=0)
    blocks = p.reshape(3, 1, 7, 4, 7, 4)
    assert np.allclose(blocks, blocks[:, :, :, :1, :, :1], atol=1e-6)


def test_backdoor_patch_stamps_only_its_window():
    patch = BackdoorPatch(target=0, size=3, position="bottom-right", margin=1)
    x = np.zeros((2, 1, 28, 28), np.float32)
    out = patch.apply(x)
    assert out.sum() == 2 * 9 and np.all(out[:, :, 24:27, 24:27] == 1) and x.sum() == 0
    tl = BackdoorPatch(target=0, size=2, position="top-left", margin=0).apply(x)
    assert np.all(tl[:, :, :2, :2] == 1) and tl.sum() == 8
    with pytest.raises(ValueError, match="fit"):
        BackdoorPatch(target=0, size=30).apply(x)
    with pytest.raises(ValueError, match="position"):
        BackdoorPatch(target=0, position="middle")


def test_backdoor_poison_relabels_stamped_examples_to_the_target():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.5, size=(100, 1, 28, 28)).astype(np.float32)
    y = np.arange(100) % 10
    patch = BackdoorPatch(target=2, size=4)
    xs, ys, mask = patch.poison(x, y, 0.2, seed=0)
    assert mask.sum() == 20 and np.all(ys[mask] == 2) and np.all(y[mask] != 2)
    np.testing.assert_array_equal(xs[mask], patch.apply(x[mask]))
    np.testing.assert_array_equal(xs[~mask], x[~mask])
    np.testing.assert_array_equal(ys[~mask], y[~mask])


def test_attack_success_rate_counts_non_target_images_classified_as_target():
    patch = BackdoorPatch(target=4, size=4)
    model = nn.Sequential([nn.Flatten(), nn.Linear(784, 10, seed=0)])
    model[1].params["weight"].data[...] = 0
    model[1].params["bias"].data[...] = 0
    model[1].params["bias"].data[4] = 1.0  # always predicts the target
    x = np.zeros((20, 1, 28, 28), np.float32)
    y = np.arange(20) % 10
    assert patch.attack_success_rate(model, x, y) == 1.0
    model[1].params["bias"].data[4] = -1.0  # never
    assert patch.attack_success_rate(model, x, y) == 0.0
    with pytest.raises(ValueError, match="target"):
        patch.attack_success_rate(models.mlp_2nn(), x[:2], np.array([4, 4]))


# ----------------------------------------------------------------------------- federated


def test_malicious_clients_poison_and_boost_only_their_own_updates():
    from dataclasses import dataclass, field

    from tinyodl.attacks import MaliciousClients

    @dataclass
    class Job:  # the fields of tinyodl.federated.ClientJob this wrapper touches
        cid: int
        x: np.ndarray
        y: np.ndarray

    @dataclass
    class Result:  # tinyodl.federated.LocalResult
        delta: np.ndarray
        num_examples: int
        metrics: dict = field(default_factory=dict)

    seen = {}

    def honest(job):
        seen[job.cid] = (job.x.copy(), job.y.copy())
        return Result(np.full(3, float(job.y.sum()), np.float32), len(job.y))

    x, y = np.zeros((4, 1, 28, 28), np.float32), np.array([0, 1, 2, 9])
    attack = MaliciousClients(honest, malicious=[7], boost=10.0, poison="label_flip")
    assert np.all(attack(Job(3, x, y)).delta == 12.0)  # honest client untouched
    np.testing.assert_array_equal(seen[3][1], y)
    out = attack(Job(7, x, y))
    np.testing.assert_array_equal(seen[7][1], [1, 2, 3, 0])  # trained on (y + 1) % 10
    assert out.delta.dtype == np.float32 and np.all(out.delta == 60.0)  # boosted x10
    flip = MaliciousClients(honest, malicious=[7], boost=2.0, poison="sign_flip")
    assert np.all(flip(Job(7, x, y)).delta == -24.0)
    patch = BackdoorPatch(target=5, size=2)
    door = MaliciousClients(honest, malicious=[7], boost=1.0, poison="backdoor", patch=patch)
    door(Job(7, x, y))
    np.testing.assert_array_equal(seen[7][0], patch.apply(x))
    np.testing.assert_array_equal(seen[7][1], [5, 5, 5, 5])
    with pytest.raises(ValueError, match="BackdoorPatch"):
        MaliciousClients(honest, [7], poison="backdoor")
    with pytest.raises(ValueError, match="poison"):
        MaliciousClients(honest, [7], poison="gradient ascent")


def test_boosted_clients_break_the_mean_but_not_the_median():
    federated = pytest.importorskip("tinyodl.federated")
    from security_helpers import blobs, tiny_mlp

    from tinyodl.attacks import MaliciousClients, adversarial_accuracy

    x, y = blobs(600, seed=1)
    xt, yt = blobs(300, seed=2)
    clients = federated.make_clients(federated.iid_partition(len(y), 10, seed=0), seed=0)
    acc = {}
    for name, aggregator in (
        ("mean", federated.WeightedMean),
        ("median", federated.CoordinateMedian),
    ):
        for attacked in (False, True):
            update = federated.LocalSGD(1, 10, 0.3)
            if attacked:
                update = MaliciousClients(
                    update, malicious={0}, boost=10.0, flip=lambda labels: (labels + 1) % 3
                )
            server = federated.FederatedServer(
                tiny_mlp(0),
                x,
                y,
                clients,
                update_fn=update,
                aggregator=aggregator(),
                selection=federated.RandomSelection(1.0),
                seed=0,
            )
            server.run(5, progress=False)
            model = tiny_mlp(0)
            from tinyodl.nn import vector_to_parameters

            vector_to_parameters(server.global_params_, model)
            acc[name, attacked] = adversarial_accuracy(model, None, xt, yt)
    assert acc["mean", False] > 0.9 and acc["median", False] > 0.9
    assert acc["mean", True] < acc["mean", False] - 0.2  # one boosted client in ten wrecks it
    assert acc["median", True] > 0.9
