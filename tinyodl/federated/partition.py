"""How a dataset is split over clients: IID, pathological shards, Dirichlet, quantity skew.

Federated data is rarely independent and identically distributed (IID): a phone sees its
owner's digits, a sensor its own room. McMahan et al. (2017, section 3) used two splits of
MNIST over K = 100 clients, and later work added two more that are now standard:

==========================  =====================================================================
function                    what each client gets
==========================  =====================================================================
:func:`iid_partition`        a uniformly shuffled, equal share (600 examples each for 60,000 / 100)
:func:`pathological_partition`  sort by label, cut into 200 shards of 300, 2 shards per client:
                            most clients see only two digits (the paper's "pathological non-IID")
:func:`dirichlet_partition`  for each class c, proportions p_c ~ Dir(alpha 1_K) over clients (label
                            skew; Hsu et al. 2019): alpha -> inf is IID, alpha = 0.1 is extreme
:func:`quantity_skew_partition`  IID labels, but sizes q ~ Dir(beta 1_K) (Li et al. 2022)
==========================  =====================================================================

A partition is a list of int64 index arrays, one per client, disjoint, each sorted. The
chapter 09 notebook plots their label histograms (:func:`plot_label_histograms`).
"""

from __future__ import annotations

import numpy as np

from tinyodl.nn.utils import SeedLike, as_generator

__all__ = [
    "dirichlet_partition",
    "iid_partition",
    "label_histogram",
    "pathological_partition",
    "plot_label_histograms",
    "quantity_skew_partition",
]


def _check_count(fn: str, num_items: int, num_clients: int) -> None:
    if not isinstance(num_clients, int | np.integer) or num_clients < 1:
        raise ValueError(f"{fn}: num_clients must be a positive integer, got {num_clients!r}")
    if num_items < num_clients:
        raise ValueError(f"{fn}: {num_items} examples cannot be split over {num_clients} clients")


def _labels(fn: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{fn}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    return labels


def iid_partition(num_examples: int, num_clients: int, seed: SeedLike = 0) -> list[np.ndarray]:
    """Shuffle ``range(num_examples)`` and cut it into ``num_clients`` near-equal parts.

    Returns
    -------
    list of ndarray, int64
        ``num_clients`` sorted index arrays; sizes differ by at most one.
    """
    _check_count("iid_partition", num_examples, num_clients)
    order = as_generator(seed).permutation(num_examples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_clients)]


def pathological_partition(
    labels: np.ndarray, num_clients: int = 100, shards_per_client: int = 2, seed: SeedLike = 0
) -> list[np.ndarray]:
    """McMahan et al.'s non-IID split: sort by label, deal out equal shards at random.

    With 60,000 MNIST images, 100 clients and 2 shards each this is the paper's 200 shards of
    300 examples. Examples left over when ``N`` is not a multiple of the shard count are not
    assigned (none for MNIST).

    Parameters
    ----------
    labels : ndarray (N,) of int
    num_clients, shards_per_client : int
    seed : int or Generator
        Which shards each client gets.
    """
    labels = _labels("pathological_partition", labels)
    num_shards = num_clients * shards_per_client
    _check_count("pathological_partition", len(labels), num_shards)
    shard_size = len(labels) // num_shards
    by_label = np.argsort(labels, kind="stable")  # ties keep index order: reproducible
    shards = by_label[: num_shards * shard_size].reshape(num_shards, shard_size)
    deal = as_generator(seed).permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.sort(shards[ids].ravel()).astype(np.int64) for ids in deal]


def dirichlet_partition(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    seed: SeedLike = 0,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Label skew: each class is split over the clients by proportions drawn from Dir(alpha).

    Small ``alpha`` (0.1) gives each client a few dominant classes; large ``alpha`` (100)
    approaches IID. Draws are repeated until every client has at least ``min_size`` examples
    (the usual practice); after ``max_tries`` failed draws a ``ValueError`` says so.
    """
    labels = _labels("dirichlet_partition", labels)
    _check_count("dirichlet_partition", len(labels), num_clients)
    if not alpha > 0:
        raise ValueError(f"dirichlet_partition: alpha must be > 0, got {alpha}")
    rng = as_generator(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for k, piece in enumerate(np.split(idx, cuts)):
                parts[k].append(piece)
        out = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise ValueError(
        f"dirichlet_partition: no draw in {max_tries} tries gave every one of {num_clients} "
        f"clients at least {min_size} examples (alpha={alpha}); raise alpha or lower min_size"
    )


def quantity_skew_partition(
    num_examples: int, num_clients: int, beta: float, seed: SeedLike = 0, min_size: int = 1
) -> list[np.ndarray]:
    """IID labels, unequal sizes: client shares q ~ Dir(beta), at least ``min_size`` each.

    Every client first gets ``min_size`` examples; the rest is dealt by the Dirichlet shares.
    """
    _check_count("quantity_skew_partition", num_examples, num_clients * max(min_size, 1))
    if not beta > 0:
        raise ValueError(f"quantity_skew_partition: beta must be > 0, got {beta}")
    rng = as_generator(seed)
    order = rng.permutation(num_examples)
    q = rng.dirichlet(np.full(num_clients, float(beta)))
    rest = num_examples - num_clients * min_size
    extra = np.floor(q * rest).astype(np.int64)
    extra[: rest - extra.sum()] += 1  # hand out the rounding remainder, one each
    sizes = extra + min_size
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(part).astype(np.int64) for part in np.split(order, cuts)]


def label_histogram(
    parts: list[np.ndarray], labels: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """Counts of each label on each client: int64 array (num_clients, num_classes)."""
    labels = _labels("label_histogram", labels)
    c = int(labels.max()) + 1 if num_classes is None else num_classes
    return np.stack([np.bincount(labels[p], minlength=c)[:c] for p in parts])


def plot_label_histograms(
    partitions: dict[str, list[np.ndarray]],
    labels: np.ndarray,
    max_clients: int = 30,
    num_classes: int | None = None,
):
    """One stacked bar chart per partition: examples of each class on the first clients.

    Parameters
    ----------
    partitions : dict name -> partition
    labels : ndarray (N,)
    max_clients : int
        Clients shown per partition (the first ones).

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    labels = _labels("plot_label_histograms", labels)
    c = int(labels.max()) + 1 if num_classes is None else num_classes
    fig, axes = plt.subplots(
        len(partitions), 1, figsize=(9, 2.2 * len(partitions)), squeeze=False, sharex=True
    )
    colors = plt.get_cmap("tab10" if c <= 10 else "tab20")
    for ax, (name, parts) in zip(axes[:, 0], partitions.items(), strict=True):
        hist = label_histogram(parts[:max_clients], labels, c)
        bottom = np.zeros(len(hist))
        for k in range(c):
            ax.bar(np.arange(len(hist)), hist[:, k], bottom=bottom, color=colors(k), width=0.85)
            bottom += hist[:, k]
        ax.set_ylabel("examples")
        ax.set_title(name, fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("client")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(k)) for k in range(c)]
    fig.legend(handles, [str(k) for k in range(c)], title="label", loc="center right")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    return fig
