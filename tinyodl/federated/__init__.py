"""tinyodl.federated: federated learning on simulated clients (chapter 09).

FedAvg and FedSGD exactly as McMahan et al. (2017), Algorithm 1, for up to thousands of
simulated clients on one machine, with what a deployment adds: partitions of the data
(IID, pathological, Dirichlet, quantity skew), client selection over simulated devices,
faults and deadlines, byte accounting and update compression, robust aggregation, split
models, atomic checkpoints, secure aggregation (Bonawitz et al. 2017), and a bridge to
Flower (``tinyodl.federated.flower``, extra ``fl``). The contract is in
``docs/architecture.md`` ("Federated engine"); the narrative in ``chapters/09_federated``.

>>> from tinyodl import models
>>> from tinyodl.data import load_mnist, to_float
>>> from tinyodl.federated import FederatedServer, LocalSGD, iid_partition, make_clients
>>> images, labels = load_mnist("train")
>>> x = to_float(images)
>>> clients = make_clients(iid_partition(len(labels), 100, seed=0), seed=0)
>>> server = FederatedServer(models.mlp_2nn(0), x, labels, clients, LocalSGD(1, 10, 0.1))
>>> server.run(rounds=2, progress=False).round_
2
"""

from tinyodl.energy import EnergyHook  # energy per round per client (issue 15)
from tinyodl.federated.aggregation import (
    Aggregator,
    ClippedMean,
    CoordinateMedian,
    FedAvgM,
    Krum,
    TrimmedMean,
    WeightedMean,
    clip_by_norm,
    krum_scores,
    weighted_mean,
)
from tinyodl.federated.client import (
    Client,
    ClientJob,
    ClientUpdate,
    LocalResult,
    LocalSGD,
    ParamLayout,
    SimulatedCrash,
    make_clients,
)
from tinyodl.federated.compression import (
    Compressor,
    Int8Quantization,
    NoCompression,
    TopK,
    payload_bytes,
)
from tinyodl.federated.faults import FaultPlan, Faults, RoundFailedError
from tinyodl.federated.partition import (
    dirichlet_partition,
    iid_partition,
    label_histogram,
    pathological_partition,
    plot_label_histograms,
    quantity_skew_partition,
)
from tinyodl.federated.selection import (
    DEVICE_TIERS,
    DeviceProfile,
    PoissonSelection,
    PowerOfChoice,
    RandomSelection,
    ResourceAwareSelection,
    Selection,
    SelectionContext,
    round_seconds,
    simulate_profiles,
)
from tinyodl.federated.server import FederatedServer, Hook, RoundContext, rounds_to_target
from tinyodl.federated.split import SplitModel

__all__ = [
    "DEVICE_TIERS",
    "Aggregator",
    "Client",
    "ClientJob",
    "ClientUpdate",
    "ClippedMean",
    "Compressor",
    "CoordinateMedian",
    "DeviceProfile",
    "EnergyHook",
    "FaultPlan",
    "Faults",
    "FedAvgM",
    "FederatedServer",
    "Hook",
    "Int8Quantization",
    "Krum",
    "LocalResult",
    "LocalSGD",
    "NoCompression",
    "ParamLayout",
    "PoissonSelection",
    "PowerOfChoice",
    "RandomSelection",
    "ResourceAwareSelection",
    "RoundContext",
    "RoundFailedError",
    "Selection",
    "SelectionContext",
    "SimulatedCrash",
    "SplitModel",
    "TopK",
    "TrimmedMean",
    "WeightedMean",
    "clip_by_norm",
    "dirichlet_partition",
    "iid_partition",
    "krum_scores",
    "label_histogram",
    "make_clients",
    "pathological_partition",
    "payload_bytes",
    "plot_label_histograms",
    "quantity_skew_partition",
    "round_seconds",
    "rounds_to_target",
    "simulate_profiles",
    "weighted_mean",
]
