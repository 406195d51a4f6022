"""Poisoning federated learning: malicious clients with boosted updates (chapter 11).

In federated learning (chapter 09) the server never sees the clients' data, only their
updates -- so a compromised device can send anything. Two classic attacks:

* **Data poisoning on the client**: train honestly, but on poisoned data (flipped labels,
  a backdoor trigger).
* **Model replacement** (Bagdasaryan et al. 2020; Bhagoji et al. 2019 "boosting"): the
  server averages ``m`` updates, so one client's contribution is divided by ``m``; the
  attacker scales its update by ``boost ~ m / eta`` to survive the average, which then
  replaces the global model by the attacker's. With ``poison="sign_flip"`` the client sends
  ``-boost`` times its honest update (pure sabotage).

:class:`MaliciousClients` wraps any client update function of :mod:`tinyodl.federated`
(extension point 1 of ``docs/architecture.md``): the clients whose ``cid`` is in
``malicious`` poison and boost; the others run the honest function unchanged. The defenses
are the robust aggregators of chapter 09 (coordinate median, trimmed mean, Krum), measured
by ``tinyodl bench security`` (part ``federated``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tinyodl.attacks.poisoning import BackdoorPatch

POISONS = ("label_flip", "sign_flip", "backdoor", "none")


class MaliciousClients:
    """Client update function in which the clients ``malicious`` poison and boost.

    Parameters
    ----------
    honest : callable
        The honest update function (e.g. ``tinyodl.federated.LocalSGD(1, 10, 0.1)``):
        ``honest(job) -> LocalResult``.
    malicious : iterable of int
        Client ids under the attacker's control.
    boost : float, default 10.0
        Factor applied to the malicious update (1 = no boosting).
    poison : {"label_flip", "sign_flip", "backdoor", "none"}
        ``label_flip``: train on ``flip(y)``; ``sign_flip``: send the negated honest update;
        ``backdoor``: train with ``patch`` stamped on every example, labelled its target;
        ``none``: the honest update, only boosted.
    flip : callable, optional
        ``y -> y'`` for ``label_flip`` (default ``(y + 1) % 10``).
    patch : BackdoorPatch, optional
        For ``backdoor``.
    """

    def __init__(
        self,
        honest: Callable[[Any], Any],
        malicious: Iterable[int],
        boost: float = 10.0,
        poison: str = "label_flip",
        flip: Callable[[np.ndarray], np.ndarray] | None = None,
        patch: BackdoorPatch | None = None,
    ) -> None:
        if poison not in POISONS:
            raise ValueError(f"MaliciousClients: poison must be one of {POISONS}, got {poison!r}")
        if poison == "backdoor" and patch is None:
            raise ValueError("MaliciousClients: poison='backdoor' needs a BackdoorPatch")
        self.honest, self.malicious = honest, frozenset(int(c) for c in malicious)
        self.boost, self.poison = float(boost), poison
        self.flip = flip or (lambda y: (y + 1) % 10)
        self.patch = patch

    def work(self, num_examples: int) -> int:
        """Examples processed per update (the honest function's, for simulated time)."""
        return self.honest.work(num_examples) if hasattr(self.honest, "work") else num_examples

    def __call__(self, job: Any) -> Any:
        if job.cid not in self.malicious:
            return self.honest(job)
        if self.poison == "label_flip":
            job = dataclasses.replace(job, y=self.flip(np.asarray(job.y)))
        elif self.poison == "backdoor":
            job = dataclasses.replace(
                job, x=self.patch.apply(job.x), y=np.full_like(job.y, self.patch.target)
            )
        result = self.honest(job)
        scale = -self.boost if self.poison == "sign_flip" else self.boost
        return dataclasses.replace(result, delta=(scale * result.delta).astype(np.float32))

    def __repr__(self) -> str:
        return (
            f"MaliciousClients({self.honest!r}, {len(self.malicious)} malicious, "
            f"boost={self.boost}, poison={self.poison!r})"
        )


__all__ = ["POISONS", "MaliciousClients"]
