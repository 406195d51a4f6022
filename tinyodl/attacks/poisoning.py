"""Data poisoning of on-device training (chapter 11, textbook section 12.6.1).

A device that learns from the data it sees can be taught the wrong thing. The attacks here
change the *training* data (an evasion attack changes the test input instead):

* **Label flipping** (:func:`flip_labels`): a fraction of the examples get a wrong label --
  ``mode="random"`` (any other class) or ``mode="targeted"`` (a chosen source class becomes
  a chosen target, e.g. 7 -> 1).
* **Data insertion** (:func:`insert_data`): fake or distorted inputs join the training set
  -- uniform noise, pixelated copies of real images, blank "garbage" frames -- with random
  labels.
* **Backdoor** (:class:`BackdoorPatch`, BadNets, Gu et al. 2017): a small trigger patch is
  stamped on a fraction of the training images, which are relabelled to the target class;
  the model behaves normally on clean inputs and predicts the target whenever the trigger
  is present. Its *attack-success rate* is the fraction of triggered test images (not of
  the target class) classified as the target.

Malicious federated clients (model replacement with boosted updates) are in
:mod:`tinyodl.attacks.federated`. The defenses (anomaly detection that drops suspected
poisoned batches, input validation, robust aggregation) are in :mod:`tinyodl.defenses`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.nn.utils import as_generator

SeedLike = int | np.random.Generator | None


def _check_fraction(fn: str, fraction: float) -> float:
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{fn}: fraction must be in [0, 1], got {fraction}")
    return fraction


def flip_labels(
    y: np.ndarray,
    fraction: float,
    seed: SeedLike = 0,
    mode: str = "random",
    source: int | None = None,
    target: int | None = None,
    num_classes: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip a fraction of the labels.

    Parameters
    ----------
    y : ndarray (N,) int
    fraction : float in [0, 1]
        ``mode="random"``: ``round(fraction * N)`` examples, chosen uniformly, each get a
        label drawn uniformly from the *other* classes. ``mode="targeted"``:
        ``round(fraction * n_source)`` examples of class ``source`` (of every class but
        ``target`` when ``source`` is None) are relabelled ``target``.
    seed : int or Generator
    mode : {"random", "targeted"}
    source, target : int, optional
        Classes of the targeted flip (``target`` required).
    num_classes : int, default 10

    Returns
    -------
    y_poisoned : ndarray (N,) of ``y``'s dtype (a copy)
    flipped : ndarray (N,) bool
        True where the label was changed.
    """
    fraction = _check_fraction("flip_labels", fraction)
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"flip_labels: y must be 1-D int labels, got {y.shape} {y.dtype}")
    rng = as_generator(seed)
    out, flipped = y.copy(), np.zeros(len(y), dtype=bool)
    if mode == "random":
        chosen = rng.choice(len(y), size=int(round(fraction * len(y))), replace=False)
        shift = rng.integers(1, num_classes, size=len(chosen))  # never 0: always another class
        out[chosen] = (y[chosen] + shift) % num_classes
    elif mode == "targeted":
        if target is None or not 0 <= target < num_classes:
            raise ValueError(f"flip_labels: mode='targeted' needs a target class, got {target}")
        pool = np.flatnonzero(y == source if source is not None else y != target)
        chosen = rng.choice(pool, size=int(round(fraction * len(pool))), replace=False)
        out[chosen] = target
    else:
        raise ValueError(f"flip_labels: mode must be 'random' or 'targeted', got {mode!r}")
    flipped[chosen] = out[chosen] != y[chosen]
    return out, flipped


def fake_inputs(n: int, kind: str, like: np.ndarray, seed: SeedLike = 0) -> np.ndarray:
    """``n`` fake inputs shaped like ``like``'s examples (float, in [0, 1]).

    ``"noise"``: uniform random pixels. ``"pixelated"``: real images of ``like`` averaged
    over 4x4 blocks and scaled back up (distorted, still image-like). ``"garbage"``: blank
    or saturated frames with random rectangles.
    """
    rng = as_generator(seed)
    shape = (n, *like.shape[1:])
    if kind == "noise":
        return rng.uniform(0, 1, size=shape).astype(like.dtype)
    if kind == "pixelated":
        src = like[rng.integers(0, len(like), size=n)]
        h, w = src.shape[-2:]
        b = 4
        crop = src[..., : h - h % b, : w - w % b]
        blocks = crop.reshape(*crop.shape[:-2], h // b, b, w // b, b).mean(axis=(-3, -1))
        out = np.zeros_like(src)
        out[..., : h - h % b, : w - w % b] = np.repeat(np.repeat(blocks, b, -2), b, -1)
        return out
    if kind == "garbage":
        out = np.repeat(rng.choice([0.0, 1.0], size=n)[:, None], int(np.prod(shape[1:])), 1)
        out = out.reshape(shape).astype(like.dtype)
        h, w = shape[-2:]
        for img in out:
            r, c = rng.integers(0, h // 2), rng.integers(0, w // 2)
            img[..., r : r + h // 2, c : c + w // 2] = rng.uniform()
        return out
    raise ValueError(f"fake_inputs: kind must be 'noise', 'pixelated' or 'garbage', got {kind!r}")


def insert_data(
    x: np.ndarray,
    y: np.ndarray,
    fraction: float,
    kind: str = "noise",
    seed: SeedLike = 0,
    num_classes: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add ``round(fraction * N)`` fake inputs (:func:`fake_inputs`) with random labels.

    Returns
    -------
    x_poisoned, y_poisoned : the N + k examples, shuffled together
    inserted : ndarray (N + k,) bool, True for the fake ones
    """
    fraction = _check_fraction("insert_data", fraction)
    rng = as_generator(seed)
    k = int(round(fraction * len(x)))
    fake = fake_inputs(k, kind, x, rng)
    labels = rng.integers(0, num_classes, size=k).astype(np.asarray(y).dtype)
    order = rng.permutation(len(x) + k)
    xs = np.concatenate([x, fake])[order]
    ys = np.concatenate([y, labels])[order]
    inserted = np.concatenate([np.zeros(len(x), bool), np.ones(k, bool)])[order]
    return xs, ys, inserted


class BackdoorPatch:
    """A BadNets trigger: a ``size`` x ``size`` square of ``value`` in a corner.

    Parameters
    ----------
    target : int
        The class the backdoor makes the model predict.
    size : int, default 4
    value : float, default 1.0
    position : {"bottom-right", "top-left", "top-right", "bottom-left"}
    margin : int, default 1
        Pixels between the patch and the image border.
    """

    POSITIONS = ("bottom-right", "top-left", "top-right", "bottom-left")

    def __init__(
        self,
        target: int,
        size: int = 4,
        value: float = 1.0,
        position: str = "bottom-right",
        margin: int = 1,
    ) -> None:
        if position not in self.POSITIONS:
            raise ValueError(f"BackdoorPatch: position must be one of {self.POSITIONS}")
        if size < 1 or margin < 0:
            raise ValueError(f"BackdoorPatch: need size >= 1 and margin >= 0, got {size}, {margin}")
        self.target, self.size, self.value = int(target), int(size), float(value)
        self.position, self.margin = position, int(margin)

    def _window(self, h: int, w: int) -> tuple[slice, slice]:
        s, m = self.size, self.margin
        if s + m > min(h, w):
            raise ValueError(f"BackdoorPatch: a {s}x{s} patch does not fit a {h}x{w} image")
        rows = slice(h - m - s, h - m) if "bottom" in self.position else slice(m, m + s)
        cols = slice(w - m - s, w - m) if "right" in self.position else slice(m, m + s)
        return rows, cols

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A copy of ``x`` (N, C, H, W) with the trigger stamped on every image."""
        out = np.array(x, copy=True)
        rows, cols = self._window(*out.shape[-2:])
        out[..., rows, cols] = self.value
        return out

    def poison(
        self, x: np.ndarray, y: np.ndarray, fraction: float, seed: SeedLike = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stamp and relabel ``round(fraction * N)`` examples not already of the target.

        Returns copies ``(x_poisoned, y_poisoned, poisoned_mask)``.
        """
        fraction = _check_fraction("BackdoorPatch.poison", fraction)
        rng = as_generator(seed)
        pool = np.flatnonzero(np.asarray(y) != self.target)
        chosen = rng.choice(pool, size=min(int(round(fraction * len(y))), len(pool)), replace=False)
        xs, ys = np.array(x, copy=True), np.array(y, copy=True)
        xs[chosen] = self.apply(x[chosen])
        ys[chosen] = self.target
        mask = np.zeros(len(y), dtype=bool)
        mask[chosen] = True
        return xs, ys, mask

    def attack_success_rate(self, model: Any, x: np.ndarray, y: np.ndarray) -> float:
        """Fraction of triggered test images whose true class is not the target that the
        model classifies as the target."""
        from tinyodl.train import predict

        keep = np.asarray(y) != self.target
        if not keep.any():
            raise ValueError("BackdoorPatch.attack_success_rate: every test label is the target")
        return float(np.mean(predict(model, self.apply(x[keep])) == self.target))


__all__ = ["BackdoorPatch", "fake_inputs", "flip_labels", "insert_data"]
