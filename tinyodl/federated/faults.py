"""Faults in a round: clients that drop out, crash, or report after the deadline.

In a real fleet a selected phone may lose its connection, be unplugged, crash, or simply be
too slow. The server cannot wait forever: it closes the round at a *deadline* and aggregates
whatever arrived -- if enough did. :class:`Faults` injects the first two kinds, drawn from the
round's fault generator ``default_rng([seed, 2, t])`` in client-id order (so they are the same
in every run and every execution order):

* ``drop_prob``: the client downloads the model and is never heard from again;
* ``crash_prob``: its training raises :class:`~tinyodl.federated.client.SimulatedCrash` after
  a random number of local steps (an exception from a real update function counts the same);

Stragglers come from the device profiles: a client whose simulated round time exceeds the
server's ``deadline`` is cut off. If fewer than ``min_reports`` clients report, the server
raises :class:`RoundFailedError` and leaves the global model as it was. Chapter 09.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FaultPlan", "Faults", "RoundFailedError"]


class RoundFailedError(RuntimeError):
    """Too few clients reported; the global model is unchanged.

    Attributes
    ----------
    round : int
    reported, required : int
    failed : dict cid -> reason
    """

    def __init__(self, round: int, reported: int, required: int, failed: dict[int, str]):
        reasons = "; ".join(f"client {c}: {r}" for c, r in sorted(failed.items())[:10])
        more = f" (+{len(failed) - 10} more)" if len(failed) > 10 else ""
        super().__init__(
            f"round {round} failed: {reported} client(s) reported, at least {required} "
            f"required; the global model is unchanged. Failures: {reasons}{more}"
        )
        self.round, self.reported, self.required, self.failed = round, reported, required, failed


@dataclass(frozen=True)
class FaultPlan:
    """What fault injection decided for one client in one round."""

    drop: bool = False
    crash_after_steps: int | None = None


@dataclass(frozen=True)
class Faults:
    """Fault injection probabilities (independent per selected client and round).

    Attributes
    ----------
    drop_prob : float
        Probability that a selected client drops out (no update).
    crash_prob : float
        Probability that its training raises after ``U{0..max_crash_step}`` local steps.
    max_crash_step : int
    """

    drop_prob: float = 0.0
    crash_prob: float = 0.0
    max_crash_step: int = 20

    def __post_init__(self) -> None:
        for name in ("drop_prob", "crash_prob"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"Faults: {name} must be in [0, 1], got {value}")
        if self.drop_prob + self.crash_prob > 1:
            raise ValueError("Faults: drop_prob + crash_prob must be <= 1")

    def plan(self, selected: list[int], rng: np.random.Generator) -> dict[int, FaultPlan]:
        """One :class:`FaultPlan` per selected client (two draws each, in cid order)."""
        u = rng.random(len(selected))
        steps = rng.integers(0, self.max_crash_step + 1, size=len(selected))
        plans = {}
        for cid, ui, si in zip(selected, u, steps, strict=True):
            if ui < self.drop_prob:
                plans[cid] = FaultPlan(drop=True)
            elif ui < self.drop_prob + self.crash_prob:
                plans[cid] = FaultPlan(crash_after_steps=int(si))
            else:
                plans[cid] = FaultPlan()
        return plans
