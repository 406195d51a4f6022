"""The on-device setting shared by chapters 03-13: pretrain in the cloud, adapt on the device.

A model is pretrained "in the cloud" on plenty of data; then, "on the device", it must adapt
to data it never saw, from a small labelled set, within the device's memory. Two tasks make
this concrete on MNIST (chapters 03 and 08 introduce them; 04, 11, 12 and the demo reuse them):

==========  =====================================  ===========================================
task        cloud (pretraining)                    device (adaptation, evaluation)
==========  =====================================  ===========================================
``"A"``     digits 0-4                             digits 5-9: 100 images per class (seeded),
            (new classes)                          evaluated on the test images of 5-9
``"B"``     all ten digits, clean                  all ten digits written by a new "writer"
            (a new writer)                         (:class:`WriterShift`): 20 images per class,
                                                   evaluated on the shifted test images
==========  =====================================  ===========================================

Labels stay the digits themselves (task A's labels are 5..9) and every model has ten
outputs, so one architecture (``mcunet_tiny``) serves both tasks; the model pretrained for
task A has never been asked to output 5..9, so its accuracy on task A before adaptation is 0.

Where the data come from. The *device* owns the 12,000 training images shipped with tinyodl
(:func:`tinyodl.data.load_mnist`): adaptation sets are drawn from them. The *cloud* owns
the other 48,000 images of the full MNIST training split (:func:`cloud_data`, needs the
full data from a path), so pretraining never sees an image the device adapts on. Test
images: the shipped 2,000 by default, the full 10,000 with ``path=``.

Pretrained weights ship inside the package (``tinyodl/datasets/pretrained/*.npz``, plain
arrays loaded without pickle) and are loaded with :func:`pretrained`; they were produced by
``scripts/pretrain.py`` (its docstring gives the exact command). Nothing pretrains at test
or demo time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from tinyodl.checkpoint import load_checkpoint
from tinyodl.data import load_mnist, read_idx, to_float
from tinyodl.data.mnist import SUBSET_PREFIX, shipped_dir

__all__ = [
    "PRETRAINED_DIR",
    "TASKS",
    "Task",
    "TaskSpec",
    "WriterShift",
    "calibration_images",
    "cloud_data",
    "load_task",
    "pretrained",
    "pretrained_info",
    "pretrained_path",
    "replace_head",
]


@dataclass(frozen=True)
class TaskSpec:
    """What defines a task: its classes in the cloud and on the device, and the shift."""

    name: str
    title: str
    source_classes: tuple[int, ...]
    target_classes: tuple[int, ...]
    per_class: int
    shifted: bool
    new_head: bool


#: The two on-device tasks, by name.
TASKS: dict[str, TaskSpec] = {
    "A": TaskSpec(
        "A",
        "new classes: pretrain on 0-4, adapt to 5-9",
        tuple(range(5)),
        tuple(range(5, 10)),
        100,
        False,
        True,
    ),
    "B": TaskSpec(
        "B",
        "a new writer: all digits under a fixed writer shift",
        tuple(range(10)),
        tuple(range(10)),
        20,
        True,
        False,
    ),
}

#: Folder of the shipped pretrained weights.
PRETRAINED_DIR = shipped_dir() / "pretrained"


# ----------------------------------------------------------------------------- writer shift


@dataclass(frozen=True)
class WriterShift:
    """A deterministic "new writer": slant, rotation, a fixed elastic warp and a thick pen.

    Every image goes through the same geometric map -- the writer's style -- followed by
    stroke thickening. Output pixel ``(y, x)`` (centre ``c = 13.5``) samples the input, with
    bilinear interpolation, at::

        [y']   [cos t  -sin t] [y - c]   [c]
        [x'] = [sin t   cos t] [x - c] + [c] + shear * [0, y - c] + alpha * d(y, x)

    where ``t = rotation`` in degrees and ``d`` is a smooth random displacement field
    (Simard et al. 2003, "elastic distortion"): uniform noise in [-1, 1] drawn from
    ``numpy.random.default_rng(seed)``, Gaussian-smoothed with ``elastic_sigma`` and scaled
    so that its largest component is 1. Then a grey dilation with a
    ``thickness x thickness`` square thickens the strokes. The map depends on ``seed`` and
    the parameters only, never on the images or their order.

    Parameters
    ----------
    rotation : float, default 30
        Degrees; with image rows pointing down, positive turns the digit clockwise.
    shear : float, default 0.3
        Horizontal slant per row.
    elastic_alpha : float, default 3
        Largest displacement of the elastic field, in pixels.
    elastic_sigma : float, default 4
        Smoothness of the field (Gaussian sigma, pixels).
    thickness : int, default 3
        Side of the dilation square; 1 leaves the strokes as they are.
    seed : int, default 0
        Seeds the elastic field: a different seed is a different writer.
    """

    rotation: float = 30.0
    shear: float = 0.3
    elastic_alpha: float = 3.0
    elastic_sigma: float = 4.0
    thickness: int = 3
    seed: int = 0

    def sampling_grid(self, size: int = 28) -> np.ndarray:
        """Where each output pixel samples the input: float64 (2, size, size) of (y', x')."""
        rng = np.random.default_rng(self.seed)
        noise = rng.uniform(-1.0, 1.0, size=(2, size, size))
        d = np.stack(
            [ndimage.gaussian_filter(n, self.elastic_sigma, mode="constant") for n in noise]
        )
        peak = np.abs(d).max()
        d *= self.elastic_alpha / peak if peak > 0 else 0.0
        yy, xx = np.meshgrid(
            np.arange(size, dtype=float), np.arange(size, dtype=float), indexing="ij"
        )
        c = (size - 1) / 2.0
        t = np.deg2rad(self.rotation)
        y0, x0 = yy - c, xx - c
        ys = np.cos(t) * y0 - np.sin(t) * x0 + c + d[0]
        xs = np.sin(t) * y0 + np.cos(t) * x0 + self.shear * y0 + c + d[1]
        return np.stack([ys, xs])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Apply the shift to uint8 images (N, H, W) with H == W; returns uint8 (N, H, W)."""
        images = np.asarray(images)
        if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
            raise ValueError(
                f"WriterShift: expected uint8 images (N, H, H), got {images.dtype} {images.shape}"
            )
        if self.thickness < 1:
            raise ValueError(f"WriterShift: thickness must be >= 1, got {self.thickness}")
        n, size = images.shape[0], images.shape[1]
        grid = self.sampling_grid(size)
        coords = np.empty((3, n, size, size))
        coords[0] = np.arange(n, dtype=float)[:, None, None]
        coords[1:] = grid[:, None]
        warped = ndimage.map_coordinates(images.astype(float), coords, order=1, mode="constant")
        if self.thickness > 1:
            warped = ndimage.grey_dilation(warped, size=(1, self.thickness, self.thickness))
        return np.clip(np.rint(warped), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True, repr=False)
class Task:
    """One on-device adaptation problem, ready to train on (see :func:`load_task`).

    Attributes
    ----------
    spec : TaskSpec
    per_class, seed : int
        Size and seed of the adaptation sample.
    shift : WriterShift or None
        The writer of task B (applied to ``x_train`` and ``x_test``).
    x_train : float32 (N, 1, 28, 28) in [0, 1]
        The small labelled set the device adapts on (``per_class`` images per target class).
    y_train : int64 (N,)
        Digit labels.
    train_index : int64 (N,)
        Position of each adaptation image in the full MNIST training split.
    x_test, y_test
        Held-out test images of the target classes (shipped subset, or full MNIST).
    """

    spec: TaskSpec
    per_class: int
    seed: int
    shift: WriterShift | None
    x_train: np.ndarray
    y_train: np.ndarray
    train_index: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = field(default="shipped subset")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def classes(self) -> tuple[int, ...]:
        """The digits the device must recognise."""
        return self.spec.target_classes

    def pretrained(self) -> Any:
        """A fresh copy of the shipped model this task starts from (evaluation mode)."""
        return pretrained(self.name)

    def starting_model(self, seed: int = 0) -> Any:
        """The model adaptation starts from: the pretrained one, with a freshly initialised
        head (seeded) when the classes are new (task A; see :func:`replace_head`)."""
        model = self.pretrained()
        return replace_head(model, seed) if self.spec.new_head else model

    def accuracy(self, model: Any, batch_size: int = 500) -> float:
        """Test accuracy of ``model`` (evaluated in evaluation mode, ten-way arg-max)."""
        from tinyodl.train import evaluate

        return evaluate(model, self.x_test, self.y_test, batch_size)[1]

    def __repr__(self) -> str:
        return (
            f"Task({self.name!r}: {self.spec.title}; {len(self.y_train)} adaptation images "
            f"({self.per_class}/class, seed {self.seed}), {len(self.y_test)} test images "
            f"from the {self.source})"
        )


def _spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]


def shipped_train_index() -> np.ndarray:
    """Positions (int64) of the shipped training images in the full MNIST training split."""
    return read_idx(shipped_dir() / f"{SUBSET_PREFIX}train-indices-idx1-int.gz").astype(np.int64)


def _stratified_sample(labels, classes, per_class, seed) -> np.ndarray:
    """``per_class`` indices of each class, drawn with ``default_rng(seed)``, in file order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"load_task: class {c} has {len(members)} images, need {per_class}")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def load_task(
    name: str,
    per_class: int | None = None,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    shift: WriterShift | None = None,
) -> Task:
    """Build task ``"A"`` or ``"B"``: the adaptation set and the test set.

    Parameters
    ----------
    name : {"A", "B"}
    per_class : int, optional
        Labelled images per target class on the device (default 100 for A, 20 for B), drawn
        from the shipped training images with ``numpy.random.default_rng(seed)``: for each
        target class in increasing order, ``rng.choice(<its images>, per_class,
        replace=False)``; the result is kept in file order.
    seed : int, default 0
        Seed of that draw (benchmarks use seeds 0, 1, 2).
    path : path-like, optional
        Folder of the full MNIST: the test set becomes its full test split (the target
        classes of it). The adaptation pool is the shipped training images either way (the
        same bytes as those images of the full files), so it never overlaps the cloud's.
    shift : WriterShift, optional
        Task B's writer (default ``WriterShift()``); ignored for task A.

    Returns
    -------
    Task
    """
    spec = _spec(name)
    per_class = spec.per_class if per_class is None else int(per_class)
    if per_class < 1:
        raise ValueError(f"load_task: per_class must be >= 1, got {per_class}")
    images, labels = load_mnist("train")
    keep = _stratified_sample(labels, spec.target_classes, per_class, seed)
    x_tr, y_tr = images[keep], labels[keep]
    x_te, y_te = load_mnist("test", path=path)
    test_keep = np.isin(y_te, spec.target_classes)
    x_te, y_te = x_te[test_keep], y_te[test_keep]
    writer = (shift or WriterShift()) if spec.shifted else None
    if writer is not None:
        x_tr, x_te = writer(x_tr), writer(x_te)
    return Task(
        spec=spec,
        per_class=per_class,
        seed=int(seed),
        shift=writer,
        x_train=to_float(x_tr),
        y_train=y_tr.astype(np.int64),
        train_index=shipped_train_index()[keep],
        x_test=to_float(x_te),
        y_test=y_te.astype(np.int64),
        source="shipped subset" if path is None else f"full MNIST at {path}",
    )


def cloud_data(
    name: str, path: str | os.PathLike, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """The cloud's pretraining data for task ``name``, from the full MNIST at ``path``.

    ``split="train"``: the full training images *not* shipped with tinyodl (48,000; the
    device's 12,000 are left out), of the task's source classes. ``split="test"``: the full
    test images of the source classes (clean), for reporting the pretrained accuracy.

    Returns
    -------
    x : float32 (N, 1, 28, 28) in [0, 1]
    y : int64 (N,)
    """
    spec = _spec(name)
    images, labels = load_mnist(split, path=path)
    keep = np.isin(labels, spec.source_classes)
    if split == "train":
        keep[shipped_train_index()] = False
    return to_float(images[keep]), labels[keep].astype(np.int64)


def calibration_images(name: str, n: int = 256, seed: int = 0) -> np.ndarray:
    """``n`` clean shipped training images of task ``name``'s *source* classes (float32).

    What post-training quantization calibrates on: unlabelled data like the cloud's (for
    task A the digits 0-4, which the device never adapts on). Drawn with
    ``default_rng(seed)``, in file order.
    """
    spec = _spec(name)
    images, labels = load_mnist("train")
    pool = np.flatnonzero(np.isin(labels, spec.source_classes))
    if not 0 < n <= len(pool):
        raise ValueError(f"calibration_images: n must be in 1..{len(pool)}, got {n}")
    keep = np.sort(np.random.default_rng(seed).choice(pool, size=n, replace=False))
    return to_float(images[keep])


# ----------------------------------------------------------------------------- pretrained


def pretrained_path(name: str) -> Path:
    """File of the shipped ``mcunet_tiny`` pretrained for task ``name``."""
    _spec(name)
    return PRETRAINED_DIR / f"mcunet_tiny_task{name}.npz"


def pretrained_info(name: str) -> dict[str, Any]:
    """Metadata stored with the weights: command, seed, data, epochs, accuracies, ..."""
    _, metadata = load_checkpoint(pretrained_path(name))
    return metadata


def replace_head(model: Any, seed: int = 0) -> Any:
    """Replace every Linear layer of ``model["classifier"]`` by a fresh one (in place).

    New classes need a new head: the pretrained head of task A was trained only to push
    digits 5-9 down, and starting from it makes fine-tuning slow and unstable.
    """
    from tinyodl import nn

    head = model["classifier"]
    rng = np.random.default_rng(seed)
    for local, layer in head.children().items():
        if isinstance(layer, nn.Linear):
            shape = (layer.in_features, layer.out_features)
            fresh = nn.Linear(*shape, seed=int(rng.integers(2**31)), dtype=layer.dtype.name)
            head.replace(local, fresh.train(layer.training))
    return model


def pretrained(name: str) -> Any:
    """A fresh ``mcunet_tiny`` with the shipped weights for task ``name`` (evaluation mode).

    Every call returns a new model (adapting it never changes the next one). Batchnorm
    running statistics are part of the weights. The file is read without pickle.
    """
    from tinyodl import models

    arrays, metadata = load_checkpoint(pretrained_path(name))
    builder = getattr(models, metadata["architecture"])
    model = builder(**metadata["architecture_kwargs"])
    model.load_state_dict(arrays)
    return model.eval()
