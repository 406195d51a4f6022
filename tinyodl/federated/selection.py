"""Which clients train in a round: random, Poisson, resource-aware, power-of-choice.

Algorithm 1 picks ``m = max(C K, 1)`` clients uniformly at random. Real fleets are not
uniform: phones differ in speed and bandwidth, are online only in some hours (charging, on
Wi-Fi, idle) and have a battery to spare. The policies here (extension point 3 in
``docs/architecture.md``):

=============================  ==========================================================
:class:`RandomSelection`        m clients uniformly without replacement (McMahan et al.)
:class:`PoissonSelection`       each client independently with probability q (DP accounting)
:class:`ResourceAwareSelection` only clients available now, with battery, expected to finish
                                before the deadline (in the spirit of FedCS, Nishio &
                                Yonetani 2019); random or fastest-first among them
:class:`PowerOfChoice`          d candidates drawn by data size, the m with the highest local
                                loss on the current model (Cho et al. 2020)
=============================  ==========================================================

Device profiles are simulated (:func:`simulate_profiles`): a client's round time is
``download / down_bandwidth + E n_k / samples_per_second + upload / up_bandwidth``
(:func:`round_seconds`). Chapter 09.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyodl.nn.utils import SeedLike, as_generator

__all__ = [
    "DEVICE_TIERS",
    "DeviceProfile",
    "PoissonSelection",
    "PowerOfChoice",
    "RandomSelection",
    "ResourceAwareSelection",
    "Selection",
    "SelectionContext",
    "round_seconds",
    "simulate_profiles",
]


@dataclass(frozen=True)
class DeviceProfile:
    """A simulated device.

    Attributes
    ----------
    tier : str
    samples_per_second : float
        Training throughput (examples through forward + backward per second).
    up_bytes_per_second, down_bytes_per_second : float
    available_from, available_to : float
        Hours of the day (0-24) when it can train; the window may wrap past midnight
        (22 -> 6). ``0, 24`` is always.
    battery : float
        Charge in [0, 1] at the start of the run.
    """

    tier: str
    samples_per_second: float
    up_bytes_per_second: float
    down_bytes_per_second: float
    available_from: float = 0.0
    available_to: float = 24.0
    battery: float = 1.0

    def available(self, clock: float) -> bool:
        """Whether the device is in its availability window at simulated second ``clock``."""
        hour = (clock / 3600.0) % 24.0
        a, b = self.available_from, self.available_to
        if b - a >= 24.0:
            return True
        return a <= hour < b if a <= b else (hour >= a or hour < b)


#: (name, share of the fleet, samples/s, upload B/s, download B/s) -- orders of magnitude of
#: a microcontroller on a slow radio up to a recent phone on Wi-Fi.
DEVICE_TIERS = (
    ("microcontroller", 0.1, 40.0, 20e3, 50e3),
    ("low-end phone", 0.3, 400.0, 250e3, 1e6),
    ("mid-range phone", 0.4, 1500.0, 1e6, 5e6),
    ("high-end phone", 0.2, 5000.0, 5e6, 20e6),
)


def simulate_profiles(num_clients: int, seed: SeedLike = 0) -> list[DeviceProfile]:
    """Draw a fleet: a tier per device (shares of :data:`DEVICE_TIERS`), speeds jittered
    log-normally (sigma 0.3), an availability window of 4-24 hours starting at a random hour,
    and a battery level uniform in [0.05, 1]."""
    rng = as_generator(seed)
    shares = np.array([t[1] for t in DEVICE_TIERS])
    tiers = rng.choice(len(DEVICE_TIERS), size=num_clients, p=shares / shares.sum())
    jitter = rng.lognormal(0.0, 0.3, size=(num_clients, 3))
    start = rng.uniform(0, 24, size=num_clients)
    length = rng.uniform(4, 24, size=num_clients)
    battery = rng.uniform(0.05, 1.0, size=num_clients)
    profiles = []
    for k in range(num_clients):
        name, _, sps, up, down = DEVICE_TIERS[tiers[k]]
        profiles.append(
            DeviceProfile(
                tier=name,
                samples_per_second=float(sps * jitter[k, 0]),
                up_bytes_per_second=float(up * jitter[k, 1]),
                down_bytes_per_second=float(down * jitter[k, 2]),
                available_from=float(start[k]),
                available_to=float((start[k] + length[k]) % 24 if length[k] < 24 else 24.0),
                battery=float(battery[k]),
            )
        )
    return profiles


def round_seconds(
    profile: DeviceProfile | None, work: float, bytes_down: float, bytes_up: float
) -> float:
    """Simulated seconds for one client round: download + ``work`` examples + upload."""
    if profile is None:
        return 0.0
    return (
        bytes_down / profile.down_bytes_per_second
        + work / profile.samples_per_second
        + bytes_up / profile.up_bytes_per_second
    )


@dataclass
class SelectionContext:
    """What a selection policy sees (see ``docs/architecture.md``, extension point 3).

    ``local_loss(cid)`` evaluates the current global model on that client's data (the
    server accounts the model download and a 4-byte reply); ``estimate_seconds(cid)`` is the
    client's expected round time from its profile (0 without one).
    """

    round: int
    rng: np.random.Generator
    clients: Sequence[Any]
    clock: float
    deadline: float | None
    model_bytes: int
    local_loss: Callable[[int], float]
    estimate_seconds: Callable[[int], float]

    @property
    def num_clients(self) -> int:
        return len(self.clients)


class Selection:
    """Base class of client-selection policies: ``select(ctx) -> sorted list of cids``."""

    def select(self, ctx: SelectionContext) -> list[int]:
        raise NotImplementedError

    @staticmethod
    def _count(fraction: float, num_clients: int) -> int:
        """Algorithm 1's m = max(C K, 1) (rounded to the nearest integer)."""
        return min(max(int(round(fraction * num_clients)), 1), num_clients)


def _check_fraction(name: str, fraction: float) -> float:
    if not 0 < fraction <= 1:
        raise ValueError(f"{name}: fraction must be in (0, 1], got {fraction}")
    return float(fraction)


class RandomSelection(Selection):
    """m = max(C K, 1) clients uniformly at random, without replacement (Algorithm 1)."""

    def __init__(self, fraction: float = 0.1) -> None:
        self.fraction = _check_fraction("RandomSelection", fraction)

    def select(self, ctx: SelectionContext) -> list[int]:
        m = self._count(self.fraction, ctx.num_clients)
        return sorted(int(c) for c in ctx.rng.choice(ctx.num_clients, size=m, replace=False))

    def __repr__(self) -> str:
        return f"RandomSelection(C={self.fraction})"


class PoissonSelection(Selection):
    """Each client independently with probability ``q`` (may select none)."""

    def __init__(self, q: float) -> None:
        self.q = _check_fraction("PoissonSelection", q)

    def select(self, ctx: SelectionContext) -> list[int]:
        return [int(c) for c in np.flatnonzero(ctx.rng.random(ctx.num_clients) < self.q)]


class ResourceAwareSelection(Selection):
    """Pick among clients that can take part now: available, charged, fast enough.

    Parameters
    ----------
    fraction : float
        C: target m = max(C K, 1) clients.
    min_battery : float
        Clients below this charge are never asked.
    strategy : {"random", "fastest"}
        Among the eligible: uniformly at random (keeps the data unbiased among them), or the
        m with the shortest expected round time (finishes soonest, over-samples fast devices
        and so their data).

    Eligible = available at the round's start, battery >= ``min_battery``, and expected round
    time <= the deadline (if the server has one). Fewer eligible than m: all of them.
    """

    def __init__(
        self, fraction: float = 0.1, min_battery: float = 0.2, strategy: str = "random"
    ) -> None:
        if strategy not in ("random", "fastest"):
            raise ValueError(f"ResourceAwareSelection: strategy {strategy!r} not random/fastest")
        self.fraction = _check_fraction("ResourceAwareSelection", fraction)
        self.min_battery, self.strategy = min_battery, strategy

    def eligible(self, ctx: SelectionContext) -> list[int]:
        out = []
        for client in ctx.clients:
            p = client.profile
            if p is not None and (not p.available(ctx.clock) or p.battery < self.min_battery):
                continue
            if ctx.deadline is not None and ctx.estimate_seconds(client.cid) > ctx.deadline:
                continue
            out.append(client.cid)
        return out

    def select(self, ctx: SelectionContext) -> list[int]:
        m = self._count(self.fraction, ctx.num_clients)
        pool = self.eligible(ctx)
        if len(pool) <= m:
            return sorted(pool)
        if self.strategy == "fastest":
            times = [(ctx.estimate_seconds(c), c) for c in pool]
            return sorted(c for _, c in sorted(times)[:m])
        return sorted(int(c) for c in ctx.rng.choice(pool, size=m, replace=False))


class PowerOfChoice(Selection):
    """Power-of-choice (Cho et al. 2020): the m highest-loss clients among d candidates.

    Candidates are drawn without replacement with probability proportional to n_k; each
    computes its loss on the current global model (one download, a 4-byte reply). Biasing
    towards high loss speeds up convergence on non-IID data at the cost of extra downloads.
    """

    def __init__(self, fraction: float = 0.1, d: int | None = None) -> None:
        self.fraction = _check_fraction("PowerOfChoice", fraction)
        self.d = d

    def select(self, ctx: SelectionContext) -> list[int]:
        k = ctx.num_clients
        m = self._count(self.fraction, k)
        d = min(max(self.d or 2 * m, m), k)
        sizes = np.array([c.num_examples for c in ctx.clients], dtype=np.float64)
        candidates = ctx.rng.choice(k, size=d, replace=False, p=sizes / sizes.sum())
        scored = sorted((-ctx.local_loss(int(c)), int(c)) for c in candidates)
        return sorted(c for _, c in scored[:m])

    def __repr__(self) -> str:
        return f"PowerOfChoice(C={self.fraction}, d={self.d})"
