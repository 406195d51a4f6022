"""The federated server: rounds of select, broadcast, train, (compress), aggregate.

McMahan et al. (2017), Algorithm 1, server side::

    initialise w_0
    for each round t = 1, 2, ...:
        m   <- max(C K, 1);  S_t <- random set of m clients
        for each client k in S_t in parallel:  w_{t+1}^k <- ClientUpdate(k, w_t)
        m_t <- sum_{k in S_t} n_k
        w_{t+1} <- sum_{k in S_t} (n_k / m_t) w_{t+1}^k

:class:`FederatedServer` runs exactly this with the default parts (``RandomSelection``,
``LocalSGD``, ``WeightedMean``), written with model differences:
``w_{t+1} = w_t + sum_k (n_k / m_t) (w_{t+1}^k - w_t)``. Around it sit what a real
deployment needs and the notebook measures: byte accounting, compression with error
feedback, simulated device time and a deadline, dropped and crashing clients with a
minimum-report rule, atomic checkpoints with exact resume, split models, and hooks for the
privacy and security chapters (``docs/architecture.md``, "Federated engine").

Memory: the server holds the data once, the global vector, one worker model per thread and
the current round's updates; a client is only its indices and seed. Chapter 09.
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyodl.checkpoint import load_checkpoint, save_checkpoint
from tinyodl.federated.aggregation import Aggregator, WeightedMean
from tinyodl.federated.client import (
    Client,
    ClientJob,
    ClientUpdate,
    LocalSGD,
    ParamLayout,
    SimulatedCrash,
)
from tinyodl.federated.compression import Compressor, payload_bytes
from tinyodl.federated.faults import FaultPlan, Faults, RoundFailedError
from tinyodl.federated.selection import (
    RandomSelection,
    Selection,
    SelectionContext,
    round_seconds,
)
from tinyodl.nn import build_layer, layer_spec
from tinyodl.train import evaluate

__all__ = ["FederatedServer", "Hook", "RoundContext", "rounds_to_target"]


@dataclass
class RoundContext:
    """What aggregators and hooks see of the current round (``docs/architecture.md``)."""

    round: int
    global_params: np.ndarray
    rng: np.random.Generator
    selected: list[int]
    num_clients: int
    server: Any
    clock: float = 0.0


class Hook:
    """Per-round hooks (extension point 4); override what you need."""

    def on_round_start(self, server: FederatedServer, ctx: RoundContext) -> None:
        pass

    def on_updates(
        self, server: FederatedServer, ctx: RoundContext, updates: list[ClientUpdate]
    ) -> list[ClientUpdate]:
        return updates

    def on_round_end(self, server: FederatedServer, record: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        pass


def rounds_to_target(accuracies: Sequence[float | None], target: float) -> int | None:
    """Rounds needed to reach ``target`` on the monotone-ised curve (McMahan et al.).

    ``accuracies[i]`` is the test accuracy after round ``i + 1`` (None where not evaluated).
    The monotone-ised curve is the running maximum; the answer is the first round where it
    is >= target, or None if it never is.
    """
    best = -math.inf
    for i, acc in enumerate(accuracies):
        if acc is not None:
            best = max(best, acc)
        if best >= target:
            return i + 1
    return None


def _copy_model(model: Any) -> Any:
    twin = build_layer(layer_spec(model))
    twin.load_state_dict(model.state_dict())
    for (_, p), (_, q) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        q.trainable = p.trainable
    return twin


class FederatedServer:
    """A federated-learning server over simulated clients (chapter 09).

    Parameters
    ----------
    model : tinyodl.nn.Sequential
        Its initial parameters are ``w_0``; it is also the (first) worker model.
    x, y : ndarray
        All clients' training data (N, ...) float32 and (N,) int; clients index into them.
    clients : list of Client
        ``clients[k].cid == k``.
    update_fn : callable, default ``LocalSGD(1, 10, 0.1)``
        The client update (extension point 1).
    aggregator : Aggregator, default WeightedMean()
    selection : Selection, default RandomSelection(0.1)
    compressor : Compressor or None
        Uplink compression of the deltas (None: float32, 4 bytes a value).
    error_feedback : bool
        Keep the compression residual on each client and add it to its next update.
    faults : Faults or None
    min_reports : int or float
        Minimum number of reporting clients (a float in (0, 1]: that fraction of the
        selected, rounded up); fewer raises :class:`RoundFailedError`.
    deadline : float or None
        Simulated seconds after which a client's report is ignored (straggler).
    round_period : float or None
        Simulated seconds between round starts (None: a round starts when the last ends).
    hooks : sequence of Hook
    split : SplitModel or None
    workers : int
        Threads, each with its own worker model (results never depend on it).
    seed : int

    Attributes
    ----------
    global_params_ : ndarray (d,) float32
    round_ : int
        Completed rounds.
    clock_ : float
        Simulated seconds elapsed.
    history_ : list of dict
        One record per round (``docs/architecture.md``).
    client_state_ : dict cid -> dict name -> ndarray
    bytes_up_, bytes_down_ : int
        Totals.
    """

    def __init__(
        self,
        model: Any,
        x: np.ndarray,
        y: np.ndarray,
        clients: Sequence[Client],
        update_fn: Any = None,
        aggregator: Aggregator | None = None,
        selection: Selection | None = None,
        compressor: Compressor | None = None,
        error_feedback: bool = False,
        faults: Faults | None = None,
        min_reports: int | float = 1,
        deadline: float | None = None,
        round_period: float | None = None,
        hooks: Sequence[Hook] = (),
        split: Any = None,
        workers: int = 1,
        seed: int = 0,
    ) -> None:
        self.model, self.x, self.y, self.clients = model, x, np.asarray(y), list(clients)
        self.update_fn = update_fn if update_fn is not None else LocalSGD(1, 10, 0.1)
        self.aggregator = aggregator if aggregator is not None else WeightedMean()
        self.selection = selection if selection is not None else RandomSelection(0.1)
        self.compressor, self.error_feedback, self.faults = compressor, error_feedback, faults
        self.min_reports, self.deadline, self.round_period = min_reports, deadline, round_period
        self.hooks, self.split, self.workers, self.seed = list(hooks), split, workers, int(seed)
        self._check_inputs()
        self.layout = ParamLayout(model, split.shared if split is not None else None)
        if split is not None:
            split.bind(model, self.layout, self.seed)
        self.global_params_ = self.layout.get().copy()
        self._buffers = dict(model.named_buffers())
        self._buffers = {k: v.copy() for k, v in self._buffers.items()}
        self._workers: queue.Queue = queue.Queue()
        self._workers.put((model, self.layout))
        for _ in range(workers - 1):
            twin = _copy_model(model)
            self._workers.put((twin, ParamLayout(twin, self.layout_shared())))
        self._shuffle_execution = False  # tests: run clients in a random order
        self.round_, self.clock_ = 0, 0.0
        self.history_: list[dict[str, Any]] = []
        self.client_state_: dict[int, dict[str, np.ndarray]] = {}
        self.bytes_up_ = self.bytes_down_ = 0

    # ---------------------------------------------------------------- checks and helpers
    def _check_inputs(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"FederatedServer: x has {len(self.x)} rows, y has {len(self.y)}")
        if self.y.dtype.kind not in "iu":
            raise ValueError(f"FederatedServer: y must hold integer labels, got {self.y.dtype}")
        if not self.clients:
            raise ValueError("FederatedServer: no clients")
        for k, c in enumerate(self.clients):
            if c.cid != k:
                raise ValueError(f"FederatedServer: clients[{k}] has cid {c.cid}; expected {k}")
            if len(c.indices) and (c.indices.min() < 0 or c.indices.max() >= len(self.y)):
                raise ValueError(
                    f"FederatedServer: client {k} indexes outside the {len(self.y)} examples"
                )
        if self.workers < 1:
            raise ValueError(f"FederatedServer: workers must be >= 1, got {self.workers}")
        if isinstance(self.min_reports, float) and not 0 < self.min_reports <= 1:
            raise ValueError(
                f"FederatedServer: min_reports fraction {self.min_reports} not in (0, 1]"
            )

    def layout_shared(self) -> list[str] | None:
        return None if self.split is None else self.split.shared

    @property
    def num_params(self) -> int:
        """d, the length of the shared (federated) parameter vector."""
        return self.layout.size

    @property
    def download_bytes(self) -> int:
        """Bytes one client downloads per round (float32 shared vector, + a server head)."""
        extra = 0 if self.split is None else self.split.download_bytes(self.layout)
        return 4 * self.layout.size + extra

    def _expected_upload(self) -> int:
        if self.compressor is None:
            return 4 * self.layout.size
        probe = self.compressor.compress(
            np.zeros(self.layout.size, np.float32), np.random.default_rng(0)
        )
        return payload_bytes(probe)

    def _work(self, n: int) -> float:
        work = getattr(self.update_fn, "work", None)
        return float(work(n)) if callable(work) else float(n)

    def estimate_seconds(self, cid: int) -> float:
        """A client's expected simulated round time from its profile."""
        c = self.clients[cid]
        return round_seconds(
            c.profile, self._work(c.num_examples), self.download_bytes, self._expected_upload()
        )

    def _required(self, num_selected: int) -> int:
        if isinstance(self.min_reports, float):
            return math.ceil(self.min_reports * num_selected)
        return int(self.min_reports)

    def load_global(self, model: Any = None, layout: ParamLayout | None = None) -> Any:
        """Put the global parameters (and a split model's server head) into a model."""
        model, layout = (self.model, self.layout) if model is None else (model, layout)
        layout.set(self.global_params_)
        if self.split is not None:
            self.split.load_for_eval(layout)
        return model

    # ---------------------------------------------------------------- one client
    def _run_client(self, cid: int, t: int, plan: FaultPlan, worker) -> tuple:
        model, layout = worker
        client = self.clients[cid]
        state = dict(self.client_state_.get(cid, {}))
        layout.set(self.global_params_)
        if self._buffers:
            model.load_state_dict(self._buffers, strict=False)
        if self.split is not None:
            self.split.prepare(model, layout, state)
        read_only = self.global_params_.view()
        read_only.flags.writeable = False
        job = ClientJob(
            cid=cid,
            round=t,
            model=model,
            x=self.x[client.indices],
            y=self.y[client.indices],
            global_params=read_only,
            rng=np.random.default_rng([client.seed, t]),
            state=state,
            layout=layout,
            crash_after_steps=plan.crash_after_steps,
        )
        try:
            result = self.update_fn(job)
            if plan.crash_after_steps is not None:
                raise SimulatedCrash(f"client {cid} crashed before uploading (simulated fault)")
            extras, extra_up = (
                ({}, 0) if self.split is None else self.split.finish(job, layout, state)
            )
        finally:
            for _, p in layout.private:
                p.trainable = True
        delta = np.asarray(result.delta)
        if delta.shape != (layout.size,) or delta.dtype.kind != "f":
            raise ValueError(
                f"client {cid}: the update function returned a delta of {delta.dtype} "
                f"{delta.shape}, expected float ({layout.size},)"
            )
        if not np.isfinite(delta).all():
            raise FloatingPointError(f"client {cid}: the update is not finite")
        delta = delta.astype(np.float32, copy=False)
        if self.compressor is None:
            received, nbytes = delta, 4 * delta.size
        else:
            vec = delta + state["residual"] if "residual" in state else delta
            payload = self.compressor.compress(vec, np.random.default_rng([client.seed, t, 1]))
            received = self.compressor.decompress(payload, delta.size)
            nbytes = payload_bytes(payload)
            if self.error_feedback:
                state["residual"] = (vec - received).astype(np.float32)
        nbytes += extra_up
        sim = round_seconds(
            client.profile, self._work(result.num_examples), self.download_bytes, nbytes
        )
        update = ClientUpdate(
            cid, received, int(result.num_examples), dict(result.metrics), int(nbytes), sim
        )
        return update, state, extras

    def _run_clients(self, selected: list[int], t: int, plans: dict[int, FaultPlan]):
        results: dict[int, tuple] = {}
        failed: dict[int, str] = {}
        todo = [c for c in selected if not plans.get(c, FaultPlan()).drop]
        for c in selected:
            if plans.get(c, FaultPlan()).drop:
                failed[c] = "dropped out (simulated fault)"
        if self._shuffle_execution:
            todo = list(np.random.default_rng().permutation(todo))

        def one(cid: int):
            worker = self._workers.get()
            try:
                return cid, self._run_client(int(cid), t, plans.get(cid, FaultPlan()), worker), None
            except Exception as err:  # a crashing client is a fault, not the server's end
                return cid, None, f"raised {type(err).__name__}: {err}"
            finally:
                self._workers.put(worker)

        if self.workers > 1 and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                outcomes = list(pool.map(one, todo))
        else:
            outcomes = [one(c) for c in todo]
        for cid, out, err in outcomes:
            if err is not None:
                failed[int(cid)] = err
            elif self.deadline is not None and out[0].sim_seconds > self.deadline:
                failed[int(cid)] = (
                    f"straggler: {out[0].sim_seconds:.1f} s > deadline {self.deadline:.1f} s"
                )
            else:
                results[int(cid)] = out
        return results, failed

    # ---------------------------------------------------------------- one round
    def _local_loss(self, cid: int, counters: dict[str, int]) -> float:
        counters["down"] += self.download_bytes
        counters["up"] += 4
        model, layout = self._workers.get()
        try:
            self.load_global(model, layout)
            c = self.clients[cid]
            loss, _ = evaluate(model, self.x[c.indices], self.y[c.indices])
            return float(loss)
        finally:
            self._workers.put((model, layout))

    def begin_round(self) -> tuple[RoundContext, dict[str, int]]:
        """Select the clients of round ``round_ + 1`` and run the round-start hooks.

        Returns the round context and the byte counters of selection probes. Used by
        :meth:`run_round` and by the Flower strategy (``tinyodl.federated.flower``), which
        trains the selected clients elsewhere and then calls :meth:`finish_round`.
        """
        t = self.round_ + 1
        rng = np.random.default_rng([self.seed, 1, t])
        clock = (t - 1) * self.round_period if self.round_period else self.clock_
        probes = {"down": 0, "up": 0}
        sel_ctx = SelectionContext(
            round=t,
            rng=rng,
            clients=self.clients,
            clock=clock,
            deadline=self.deadline,
            model_bytes=self.download_bytes,
            local_loss=lambda cid: self._local_loss(cid, probes),
            estimate_seconds=self.estimate_seconds,
        )
        selected = [int(c) for c in self.selection.select(sel_ctx)]
        if selected != sorted(set(selected)) or any(
            not 0 <= c < len(self.clients) for c in selected
        ):
            raise ValueError(f"{self.selection!r} returned invalid client ids {selected[:20]}")
        read_only = self.global_params_.view()
        read_only.flags.writeable = False
        ctx = RoundContext(t, read_only, rng, selected, len(self.clients), self)
        ctx.clock = clock
        for hook in self.hooks:
            hook.on_round_start(self, ctx)
        return ctx, probes

    def client_update(self, cid: int, round: int, global_params: np.ndarray) -> ClientUpdate:
        """Run one client's update on given global parameters, as a round would.

        For running a client elsewhere (a Flower ClientApp): the same code path, the same
        randomness (``default_rng([client.seed, round])``). The client's state
        (``client_state_[cid]``) is updated.
        """
        global_params = np.asarray(global_params, dtype=np.float32)
        if global_params.shape != self.global_params_.shape:
            raise ValueError(
                f"client_update: expected global parameters of shape "
                f"{self.global_params_.shape}, got {global_params.shape}"
            )
        self.global_params_ = global_params.copy()
        worker = self._workers.get()
        try:
            update, state, _ = self._run_client(int(cid), int(round), FaultPlan(), worker)
        finally:
            self._workers.put(worker)
        self.client_state_[int(cid)] = state
        return update

    def run_round(
        self, x_test: np.ndarray | None = None, y_test: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Run round ``round_ + 1``; return its record (also appended to ``history_``).

        Raises :class:`RoundFailedError` (nothing changed) if too few clients report.
        """
        start = time.perf_counter()
        ctx, probes = self.begin_round()
        t, selected = ctx.round, ctx.selected
        plans = (
            self.faults.plan(selected, np.random.default_rng([self.seed, 2, t]))
            if self.faults
            else {}
        )
        results, failed = self._run_clients(selected, t, plans)
        return self.finish_round(ctx, results, failed, probes, x_test, y_test, start)

    def finish_round(
        self,
        ctx: RoundContext,
        results: dict[int, tuple],
        failed: dict[int, str],
        probes: dict[str, int],
        x_test: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
        start: float | None = None,
    ) -> dict[str, Any]:
        """Check the minimum report, aggregate, commit and record round ``ctx.round``.

        ``results`` maps each reporting cid to ``(ClientUpdate, new client state, extras)``;
        ``failed`` maps the others to a reason.
        """
        start = time.perf_counter() if start is None else start
        t, selected, clock = ctx.round, ctx.selected, ctx.clock
        required = self._required(len(selected))
        if len(results) < required:
            raise RoundFailedError(t, len(results), required, failed)
        updates = [results[c][0] for c in sorted(results)]
        for hook in self.hooks:
            updates = hook.on_updates(self, ctx, updates)
        if updates:
            step = np.asarray(self.aggregator.aggregate(updates, ctx))
        else:
            step = np.zeros_like(self.global_params_)
        if step.shape != self.global_params_.shape or not np.isfinite(step).all():
            raise FloatingPointError(
                f"round {t}: {self.aggregator!r} returned a step of shape {step.shape} "
                "that is not a finite vector like the global parameters"
            )
        # --- commit: nothing above changed the server's state
        self.global_params_ = (self.global_params_ + step.astype(np.float32)).astype(np.float32)
        for cid in sorted(results):
            self.client_state_[cid] = results[cid][1]
        split_info = {}
        if self.split is not None:
            extras = [results[c][2] for c in sorted(results)]
            model, layout = self._workers.get()
            try:
                split_info = self.split.server_update(model, layout, extras, t)
            finally:
                self._workers.put((model, layout))
        reported = [u.cid for u in updates]
        bytes_up = sum(results[c][0].bytes_up for c in results) + probes["up"]
        bytes_down = self.download_bytes * len(selected) + probes["down"]
        sim = max((results[c][0].sim_seconds for c in results), default=0.0)
        if self.deadline is not None and failed:
            sim = max(sim, self.deadline)  # the server waited until the deadline
        self.round_, self.clock_ = t, clock + sim
        self.bytes_up_ += bytes_up
        self.bytes_down_ += bytes_down
        record = {
            "round": t,
            "selected": selected,
            "reported": reported,
            "failed": {str(c): r for c, r in sorted(failed.items())},
            "num_examples": int(sum(u.num_examples for u in updates)),
            "metrics": self._mean_metrics(updates),
            "bytes_up": int(bytes_up),
            "bytes_down": int(bytes_down),
            "sim_seconds": float(sim),
            **split_info,
        }
        if x_test is not None:
            record["test_loss"], record["test_accuracy"] = self.evaluate(x_test, y_test)
        record["wall_seconds"] = time.perf_counter() - start
        for hook in self.hooks:
            hook.on_round_end(self, record)
        self.history_.append(record)
        return record

    @staticmethod
    def _mean_metrics(updates: list[ClientUpdate]) -> dict[str, float]:
        total = sum(u.num_examples for u in updates)
        keys = sorted({k for u in updates for k in u.metrics})
        return (
            {
                k: float(
                    sum(u.num_examples * u.metrics[k] for u in updates if k in u.metrics) / total
                )
                for k in keys
            }
            if total
            else {}
        )

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Loss and accuracy of the global model on (x, y)."""
        model = self.load_global()
        return evaluate(model, x, y)

    def global_model(self) -> Any:
        """The worker model loaded with the global parameters (shared object, not a copy)."""
        return self.load_global()

    # ---------------------------------------------------------------- many rounds
    def run(
        self,
        rounds: int,
        x_test: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
        eval_every: int = 1,
        target: float | None = None,
        checkpoint_path: str | Path | None = None,
        checkpoint_every: int = 1,
        resume: bool = False,
        on_failure: str = "raise",
        progress: bool = True,
    ) -> FederatedServer:
        """Run until ``rounds`` rounds have completed in total (a resumed run continues).

        Parameters
        ----------
        rounds : int
            Total number of rounds.
        x_test, y_test : ndarray, optional
            Evaluate the global model every ``eval_every`` rounds (and after the last).
        target : float, optional
            Stop as soon as the test accuracy reaches it.
        checkpoint_path : path, optional
            Atomic checkpoint after every ``checkpoint_every`` rounds; with ``resume=True``
            an existing one is loaded first.
        on_failure : {"raise", "skip"}
            What a :class:`RoundFailedError` does: stop the run, or count the round as failed
            (global model unchanged, recorded with ``"round_failed"``) and go on.
        """
        if on_failure not in ("raise", "skip"):
            raise ValueError(f"run: on_failure must be 'raise' or 'skip', got {on_failure!r}")
        if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
            self.load(checkpoint_path)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=rounds, initial=self.round_, desc="rounds", leave=False)
        try:
            while self.round_ < rounds:
                t = self.round_ + 1
                wants_eval = x_test is not None and (t % eval_every == 0 or t == rounds)
                try:
                    record = self.run_round(*((x_test, y_test) if wants_eval else (None, None)))
                except RoundFailedError as err:
                    if on_failure == "raise":
                        raise
                    record = {
                        "round": t,
                        "round_failed": str(err),
                        "failed": {str(c): r for c, r in err.failed.items()},
                    }
                    self.round_ = t
                    self.history_.append(record)
                if bar is not None:
                    bar.update(1)
                    if "test_accuracy" in record:
                        bar.set_postfix(acc=f"{record['test_accuracy']:.4f}")
                if checkpoint_path is not None and t % checkpoint_every == 0:
                    self.save(checkpoint_path)
                if target is not None and record.get("test_accuracy", -1.0) >= target:
                    break
        finally:
            if bar is not None:
                bar.close()
        return self

    def accuracy_curve(self) -> list[float | None]:
        """Test accuracy after each round (None where not evaluated)."""
        return [r.get("test_accuracy") for r in self.history_]

    # ---------------------------------------------------------------- checkpoints
    def _fingerprint(self) -> dict[str, Any]:
        return {"num_clients": len(self.clients), "num_params": self.layout.size, "seed": self.seed}

    def save(self, path: str | Path) -> None:
        """Atomically checkpoint the global model and the round state (no pickle)."""
        arrays: dict[str, np.ndarray] = {"global": self.global_params_}
        for k, v in self.aggregator.state_dict().items():
            arrays[f"aggregator/{k}"] = v
        for i, hook in enumerate(self.hooks):
            for k, v in hook.state_dict().items():
                arrays[f"hook{i}/{k}"] = v
        if self.split is not None:
            for k, v in self.split.state_dict().items():
                arrays[f"split/{k}"] = v
        for cid, state in self.client_state_.items():
            for k, v in state.items():
                arrays[f"client/{cid}/{k}"] = v
        metadata = {
            "fingerprint": self._fingerprint(),
            "round": self.round_,
            "clock": self.clock_,
            "bytes_up": self.bytes_up_,
            "bytes_down": self.bytes_down_,
            "history": self.history_,
        }
        save_checkpoint(path, arrays, metadata)

    def load(self, path: str | Path) -> FederatedServer:
        """Restore a checkpoint written by :meth:`save` (same federation and seed)."""
        arrays, meta = load_checkpoint(path)
        if meta.get("fingerprint") != self._fingerprint():
            raise ValueError(
                f"FederatedServer.load: {path} is for {meta.get('fingerprint')}, "
                f"this server is {self._fingerprint()}"
            )
        groups: dict[str, dict[str, np.ndarray]] = {}
        clients: dict[int, dict[str, np.ndarray]] = {}
        for key, value in arrays.items():
            if key.startswith("client/"):
                _, cid, name = key.split("/", 2)
                clients.setdefault(int(cid), {})[name] = value
            elif "/" in key:
                group, name = key.split("/", 1)
                groups.setdefault(group, {})[name] = value
        self.global_params_ = arrays["global"].astype(np.float32)
        self.aggregator.load_state_dict(groups.get("aggregator", {}))
        for i, hook in enumerate(self.hooks):
            hook.load_state_dict(groups.get(f"hook{i}", {}))
        if self.split is not None:
            self.split.load_state_dict(groups.get("split", {}))
        self.client_state_ = clients
        self.round_, self.clock_ = int(meta["round"]), float(meta["clock"])
        self.bytes_up_, self.bytes_down_ = int(meta["bytes_up"]), int(meta["bytes_down"])
        self.history_ = list(meta["history"])
        return self
