"""DP-FedAvg: user-level differential privacy for federated averaging, fixed or adaptive clip.

Chapter 10, section "DP-FedAvg"; a plug-in of the chapter 09 engine (``tinyodl.federated``,
extension points 2 and 4 of ``docs/architecture.md``). McMahan et al. (2018) make a whole
*user* (all of a device's examples) the unit of privacy: each round, with clients sampled
by Poisson sampling at rate q (``PoissonSelection(q)``),

    Delta_i <- Delta_i * min(1, C / ||Delta_i||)             clip each client's model update
    s        = (sum_i Delta_i + N(0, z_Delta^2 C^2 I)) / (q K)  noise once, fixed denominator

so one user changes the sum by at most C, and a round is a Poisson-subsampled Gaussian
mechanism: the accountant of DP-SGD applies with q and the noise multiplier, one step per
round (:func:`dpfedavg_epsilon`).

**Adaptive clipping** (Andrew et al. 2021) tracks a quantile gamma of the update norms instead
of fixing C. Each client also reports b_i = 1[||Delta_i|| <= C] -- whether its update was
*not* clipped -- and the server updates, with a noisy count,

    b~ = (sum_i b_i + N(0, sigma_b^2)) / (q K),    C <- C exp(-eta_C (b~ - gamma)).

Too many unclipped updates (b~ > gamma) shrink C, too few grow it. The count is a second
Gaussian query on the same users (sensitivity 1/2 after centring b_i - 1/2), so the noise
budget z is split: the update gets ``z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` and the pair
together is exactly a Gaussian mechanism with multiplier z (GUIDE section 5), accounted as
such. The paper's default is ``sigma_b = q K / 20``.

:class:`DPFedAvg` is the aggregator (the server clips: the trusted-server model of McMahan
et al.; with secure aggregation the clients would clip and report b_i); :class:`PrivacyHook`
writes the running epsilon into every round record. One caveat of the engine: a round in
which no client reports skips the aggregator, so it adds no noise; with Poisson selection
that happens with probability ``(1 - q)^K`` (about 1e-53 for the benchmark's q = 0.02,
K = 6,000), outside the accountant's model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinyodl.federated.aggregation import Aggregator
from tinyodl.federated.server import Hook
from tinyodl.privacy.accountant import RDPAccountant

__all__ = ["DPFedAvg", "PrivacyHook", "dpfedavg_epsilon", "split_noise_multiplier"]


def split_noise_multiplier(noise_multiplier: float, clip_count_stddev: float) -> float:
    """``z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)``: what is left for the update.

    Raises ``ValueError`` if the count alone would use up the budget (``2 sigma_b <= z``).
    """
    z, sb = float(noise_multiplier), float(clip_count_stddev)
    if not z > 0:
        raise ValueError(f"split_noise_multiplier: noise_multiplier must be > 0, got {z}")
    if not 2 * sb > z:
        raise ValueError(
            f"split_noise_multiplier: the clip-count noise sigma_b={sb} must exceed z/2={z / 2} "
            "(the count would use the whole privacy budget)"
        )
    return (z**-2 - (2 * sb) ** -2) ** -0.5


def dpfedavg_epsilon(
    q: float, noise_multiplier: float, rounds: int, delta: float, prior: RDPAccountant | None = None
) -> float:
    """User-level epsilon of ``rounds`` DP-FedAvg rounds: Poisson-subsampled Gaussian steps
    with the *total* noise multiplier z (the adaptive clip's count included)."""
    acc = RDPAccountant(prior.orders if prior is not None else None)
    if prior is not None:
        acc.compose(prior.rdp_, 1, "prior")
    acc.compose_subsampled_gaussian(q, noise_multiplier, int(rounds))
    return acc.epsilon(delta)


class DPFedAvg(Aggregator):
    """Server aggregation of DP-FedAvg (an ``Aggregator`` of ``tinyodl.federated``).

    Use it with ``PoissonSelection(q)`` and ``min_reports=0`` (a Poisson round may select
    nobody); ``expected_clients = q K``.

    Parameters
    ----------
    clip_norm : float
        C (the initial C with ``adaptive=True``).
    noise_multiplier : float
        z, the total noise multiplier (split with the count when adaptive).
    expected_clients : float
        q K, the fixed denominator (the expected number of clients per round).
    adaptive : bool, default False
        Geometric quantile tracking of C (Andrew et al. 2021).
    target_quantile : float, default 0.5
        gamma, the fraction of updates that should stay unclipped.
    clip_learning_rate : float, default 0.2
        eta_C.
    clip_count_stddev : float, optional
        sigma_b; default ``expected_clients / 20``.
    server_lr : float, default 1.0
        The step is ``server_lr`` times the noisy average.

    Attributes
    ----------
    clip_norm_ : float
        The current C.
    update_noise_multiplier_ : float
        z_Delta (z itself with a fixed clip).
    history_ : list of dict
        Per round: ``round``, ``clip_norm`` (used), ``unclipped_fraction`` (true, not
        released), ``noisy_unclipped_fraction`` (released; None for a fixed clip).
    """

    def __init__(
        self,
        clip_norm: float,
        noise_multiplier: float,
        expected_clients: float,
        adaptive: bool = False,
        target_quantile: float = 0.5,
        clip_learning_rate: float = 0.2,
        clip_count_stddev: float | None = None,
        server_lr: float = 1.0,
    ) -> None:
        if not clip_norm > 0 or not expected_clients > 0 or not noise_multiplier >= 0:
            raise ValueError(
                f"DPFedAvg: need clip_norm > 0, expected_clients > 0, noise_multiplier >= 0; got "
                f"{clip_norm}, {expected_clients}, {noise_multiplier}"
            )
        if not 0 < target_quantile < 1:
            raise ValueError(f"DPFedAvg: target_quantile must be in (0, 1), got {target_quantile}")
        self.clip_norm, self.noise_multiplier = float(clip_norm), float(noise_multiplier)
        self.expected_clients, self.adaptive = float(expected_clients), bool(adaptive)
        self.target_quantile, self.clip_learning_rate = (
            float(target_quantile),
            float(clip_learning_rate),
        )
        self.clip_count_stddev = (
            float(clip_count_stddev)
            if clip_count_stddev is not None
            else self.expected_clients / 20
        )
        self.server_lr = float(server_lr)
        if self.adaptive and self.noise_multiplier > 0:
            self.update_noise_multiplier_ = split_noise_multiplier(
                self.noise_multiplier, self.clip_count_stddev
            )
        else:
            self.update_noise_multiplier_ = self.noise_multiplier
        self.clip_norm_ = self.clip_norm
        self.history_: list[dict[str, Any]] = []

    def aggregate(self, updates: list[Any], ctx: Any) -> np.ndarray:
        """Clip each client's delta to the current C, sum, add noise, divide by q K."""
        c = self.clip_norm_
        d = ctx.global_params.shape
        total = np.zeros(d, dtype=np.float64)
        unclipped = 0
        for u in updates:  # sorted by cid: the sum does not depend on arrival order
            delta = u.delta.astype(np.float64)
            norm = float(np.linalg.norm(delta))
            unclipped += int(norm <= c)
            total += delta * min(1.0, c / norm) if norm > 0 else delta
        noise = ctx.rng.standard_normal(d) * (self.update_noise_multiplier_ * c)
        step = self.server_lr * (total + noise) / self.expected_clients
        record = {
            "round": int(ctx.round),
            "clip_norm": c,
            "unclipped_fraction": unclipped / len(updates) if updates else None,
            "noisy_unclipped_fraction": None,
        }
        if self.adaptive:
            count_noise = (
                ctx.rng.normal(0.0, self.clip_count_stddev) if self.noise_multiplier else 0.0
            )
            noisy = (unclipped + count_noise) / self.expected_clients
            self.clip_norm_ = c * math.exp(
                -self.clip_learning_rate * (noisy - self.target_quantile)
            )
            record["noisy_unclipped_fraction"] = noisy
        self.history_.append(record)
        return step.astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The current clip norm (checkpointed by the server)."""
        return {"clip_norm": np.array(self.clip_norm_)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.clip_norm_ = float(state["clip_norm"])

    def __repr__(self) -> str:
        kind = "adaptive" if self.adaptive else "fixed"
        return (
            f"DPFedAvg({kind}, clip_norm={self.clip_norm}, "
            f"noise_multiplier={self.noise_multiplier}, expected_clients={self.expected_clients})"
        )


class PrivacyHook(Hook):
    """A ``tinyodl.federated`` hook that writes the user-level epsilon into each round record.

    Parameters
    ----------
    sample_rate : float
        q of the ``PoissonSelection``.
    noise_multiplier : float
        z (total).
    delta : float
    """

    def __init__(self, sample_rate: float, noise_multiplier: float, delta: float) -> None:
        self.sample_rate, self.noise_multiplier, self.delta = sample_rate, noise_multiplier, delta
        self.rounds_ = 0

    def on_round_end(self, server, record: dict[str, Any]) -> None:
        self.rounds_ += 1
        record["epsilon"] = dpfedavg_epsilon(
            self.sample_rate, self.noise_multiplier, self.rounds_, self.delta
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"rounds": np.array(self.rounds_)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.rounds_ = int(state["rounds"])
