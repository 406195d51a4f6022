"""Flower interop: tinyodl clients and strategies inside a real Flower 1.42 deployment.

tinyodl simulates a federation in one process; Flower (Beutel et al. 2020) runs one on real
machines. This module puts the *same* tinyodl parts into Flower's current app model:

* a **ClientApp** whose ``train`` handler runs :meth:`FederatedServer.client_update` -- the
  tinyodl client update (``LocalSGD``, compression, the client's seed) -- on the node's
  partition (``--node-config "partition-id=K num-partitions=N"``), and answers ``query``
  messages with its partition id;
* a **ServerApp** whose strategy (:class:`TinyodlStrategy`, a ``flwr.serverapp.strategy.
  Strategy``) asks every node for its partition id once, then each round lets tinyodl's
  selection policy choose client ids, sends the global vector to their nodes, and hands the
  replies to tinyodl's aggregator (:meth:`FederatedServer.finish_round`). Minimum reports,
  hooks and byte accounting work as in the simulation.

Both sides build the federation from the run configuration (:func:`build_federation`: the
shipped MNIST subset, partitioned with the run's seed), so a Flower run and
``build_federation(config).run(rounds)`` in one process compute the same numbers in the same
order: the test ``tests/test_federated_flower.py`` starts a SuperLink and two SuperNodes on
localhost and checks the final global model is bit-equal to tinyodl's own simulation.

How to run (Flower 1.42, offline; see chapter 09 and ``docs/architecture.md``)::

    python -m tinyodl.federated.flower write-app APP_DIR       # pyproject.toml + the two apps
    export FLWR_DISABLE_UPDATE_CHECK=1 FLWR_TELEMETRY_ENABLED=0 FLWR_HOME=$PWD/.flwr
    flower-superlink --insecure --disable-runtime-dependency-installation --port 9093 &
    flower-supernode --insecure --superlink 127.0.0.1:9093 --port 9101 \\
        --node-config "partition-id=0 num-partitions=2" &
    flower-supernode --insecure --superlink 127.0.0.1:9093 --port 9102 \\
        --node-config "partition-id=1 num-partitions=2" &
    # $FLWR_HOME/config.toml:  [superlink.tinyodl]  address = "127.0.0.1:9093"  insecure = true
    flwr run APP_DIR tinyodl --stream

For thousands of simulated clients inside Flower, its Simulation Engine (``flwr run`` on a
local-simulation federation, extra ``flwr[simulation]``, which brings Ray) runs the same
ClientApp; for thousands of clients on one machine without Flower, use
:class:`~tinyodl.federated.FederatedServer` directly. Needs the extra ``fl``
(``pip install "tinyodl[fl]"``, which pins ``flwr==1.42.0``). Chapter 09.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

try:
    from flwr.app import (
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MessageType,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import Strategy
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tinyodl.federated.flower needs Flower: pip install 'tinyodl[fl]' (flwr==1.42.0)"
    ) from err

from tinyodl.federated.server import FederatedServer

__all__ = [
    "DEFAULT_RUN_CONFIG",
    "TinyodlStrategy",
    "build_federation",
    "make_client_app",
    "make_server_app",
    "write_app",
]

#: The run configuration (``[tool.flwr.app.config]``) and its defaults.
DEFAULT_RUN_CONFIG: dict[str, Any] = {
    "num-rounds": 2,
    "num-clients": 2,
    "seed": 0,
    "num-examples": 1200,  # first examples of the shipped MNIST subset
    "partition": "iid",  # iid | pathological | dirichlet
    "alpha": 0.5,
    "model": "mlp_2nn",
    "lr": 0.05,
    "local-epochs": 1,
    "batch-size": 10,  # 0 = the whole local dataset (FedSGD)
    "fraction": 1.0,
    "aggregator": "mean",  # mean | median | trimmed-mean | krum | fedavgm
    "min-reports": 1,
    "output": "",  # where the ServerApp saves the final global vector (.npy)
}


def _config(run_config: dict[str, Any] | None) -> dict[str, Any]:
    cfg = dict(DEFAULT_RUN_CONFIG)
    cfg.update(run_config or {})
    unknown = sorted(set(cfg) - set(DEFAULT_RUN_CONFIG))
    if unknown:
        raise ValueError(f"tinyodl flower app: unknown run-config keys {unknown}")
    return cfg


def build_federation(run_config: dict[str, Any] | None = None) -> FederatedServer:
    """The :class:`FederatedServer` a run configuration describes (same on every node).

    Data: the first ``num-examples`` images of the shipped MNIST subset, partitioned over
    ``num-clients`` clients with ``seed``; model, client update, selection and aggregator
    from the configuration.
    """
    from tinyodl import models
    from tinyodl.data import load_mnist, to_float
    from tinyodl.federated import (
        CoordinateMedian,
        FedAvgM,
        Krum,
        LocalSGD,
        RandomSelection,
        TrimmedMean,
        WeightedMean,
        dirichlet_partition,
        iid_partition,
        make_clients,
        pathological_partition,
    )

    cfg = _config(run_config)
    images, labels = load_mnist("train")
    n, k, seed = int(cfg["num-examples"]), int(cfg["num-clients"]), int(cfg["seed"])
    x, y = to_float(images[:n]), labels[:n].astype(np.int64)
    parts = {
        "iid": lambda: iid_partition(n, k, seed=seed),
        "pathological": lambda: pathological_partition(y, k, 2, seed=seed),
        "dirichlet": lambda: dirichlet_partition(y, k, float(cfg["alpha"]), seed=seed),
    }[cfg["partition"]]()
    aggregators = {
        "mean": WeightedMean,
        "median": CoordinateMedian,
        "trimmed-mean": lambda: TrimmedMean(0.2),
        "krum": lambda: Krum(1),
        "fedavgm": lambda: FedAvgM(0.9),
    }
    batch = int(cfg["batch-size"]) or None
    return FederatedServer(
        getattr(models, cfg["model"])(seed=seed),
        x,
        y,
        make_clients(parts, seed=seed),
        update_fn=LocalSGD(int(cfg["local-epochs"]), batch, float(cfg["lr"])),
        aggregator=aggregators[cfg["aggregator"]](),
        selection=RandomSelection(float(cfg["fraction"])),
        min_reports=int(cfg["min-reports"]),
        seed=seed,
    )


# ------------------------------------------------------------------------------ client side


def make_client_app() -> ClientApp:
    """A ClientApp running tinyodl's client update for the node's ``partition-id``."""
    app = ClientApp()
    cache: dict[str, FederatedServer] = {}

    def federation(context: Context) -> FederatedServer:
        key = repr(sorted(context.run_config.items()))
        if key not in cache:  # one per run configuration, reused across rounds
            cache.clear()
            cache[key] = build_federation(dict(context.run_config))
        return cache[key]

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        cid = int(context.node_config["partition-id"])
        return Message(RecordDict({"info": MetricRecord({"cid": cid})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        server = federation(context)
        cid = int(context.node_config["partition-id"])
        round_ = int(msg.content["config"]["server-round"])
        global_params = msg.content["arrays"].to_numpy_ndarrays()[0]
        update = server.client_update(cid, round_, global_params)
        metrics = {"cid": cid, "num-examples": update.num_examples, "bytes-up": update.bytes_up}
        metrics.update({k: float(v) for k, v in update.metrics.items()})
        content = RecordDict(
            {"arrays": ArrayRecord([update.delta]), "metrics": MetricRecord(metrics)}
        )
        return Message(content, reply_to=msg)

    return app


# ------------------------------------------------------------------------------ server side


class TinyodlStrategy(Strategy):
    """A Flower strategy that delegates selection and aggregation to a FederatedServer.

    Parameters
    ----------
    server : FederatedServer
        Its selection policy picks client ids, its aggregator combines the replies and its
        history records every round (bytes, failures, metrics).
    """

    def __init__(self, server: FederatedServer) -> None:
        self.server = server
        self.node_of: dict[int, int] = {}  # cid -> Flower node id
        self._pending: tuple | None = None

    def summary(self) -> None:
        from flwr.supercore import log

        log(20, "tinyodl strategy: %r, %r", self.server.selection, self.server.aggregator)

    def _discover(self, grid: Grid, timeout: float = 600.0) -> None:
        """Ask every node which client (partition) it holds, until all clients are known."""
        import time

        deadline = time.monotonic() + timeout
        wanted = len(self.server.clients)
        while len(self.node_of) < wanted:
            nodes = [n for n in grid.get_node_ids() if n not in self.node_of.values()]
            if nodes:
                ask = [
                    Message(
                        content=RecordDict({"q": ConfigRecord({"ask": "cid"})}),
                        message_type=MessageType.QUERY,
                        dst_node_id=n,
                    )
                    for n in nodes
                ]
                for reply in grid.send_and_receive(ask, timeout=60):
                    if not reply.has_error():
                        cid = int(reply.content["info"]["cid"])
                        self.node_of[cid] = reply.metadata.src_node_id
            if len(self.node_of) < wanted:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"TinyodlStrategy: only clients {sorted(self.node_of)} of {wanted} "
                        "connected"
                    )
                time.sleep(1.0)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._discover(grid)
        if server_round != self.server.round_ + 1:
            raise RuntimeError(
                f"TinyodlStrategy: Flower round {server_round} but tinyodl round "
                f"{self.server.round_ + 1}"
            )
        ctx, probes = self.server.begin_round()
        self._pending = (ctx, probes)
        config = ConfigRecord({**dict(config), "server-round": server_round})
        vec = ArrayRecord([self.server.global_params_])
        return [
            Message(
                content=RecordDict({"arrays": vec, "config": config}),
                message_type=MessageType.TRAIN,
                dst_node_id=self.node_of[cid],
            )
            for cid in ctx.selected
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        from tinyodl.federated.client import ClientUpdate

        ctx, probes = self._pending
        results, failed = {}, {}
        for reply in replies:
            if reply.has_error():
                continue
            m = reply.content["metrics"]
            cid = int(m["cid"])
            delta = reply.content["arrays"].to_numpy_ndarrays()[0].astype(np.float32)
            metrics = {
                k: float(v) for k, v in m.items() if k not in ("cid", "num-examples", "bytes-up")
            }
            update = ClientUpdate(cid, delta, int(m["num-examples"]), metrics, int(m["bytes-up"]))
            results[cid] = (update, {}, {})
        for cid in ctx.selected:
            if cid not in results:
                failed[cid] = "no reply from its Flower node (error or timeout)"
        record = self.server.finish_round(ctx, results, failed, probes)
        summary = {"bytes-up": record["bytes_up"], "reported": len(record["reported"])}
        summary.update(record["metrics"])
        return ArrayRecord([self.server.global_params_]), MetricRecord(summary)

    def configure_evaluate(self, server_round, arrays, config, grid) -> Iterable[Message]:
        return []  # the server evaluates centrally (evaluate_fn), clients do not

    def aggregate_evaluate(self, server_round, replies) -> MetricRecord | None:
        return None


def make_server_app() -> ServerApp:
    """A ServerApp running tinyodl's selection and aggregation via :class:`TinyodlStrategy`."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = _config(dict(context.run_config))
        server = build_federation(cfg)
        strategy = TinyodlStrategy(server)
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord([server.global_params_]),
            num_rounds=int(cfg["num-rounds"]),
        )
        if cfg["output"]:
            out = Path(cfg["output"])
            tmp = out.with_name(out.name + ".tmp.npy")
            np.save(tmp, server.global_params_)
            tmp.replace(out)

    return app


# ------------------------------------------------------------------------------ the app folder

_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "tinyodl-flower-app"
version = "1.0.0"
description = "tinyodl's FedAvg client and strategy as a Flower app (chapter 09)"
license = "MIT"
dependencies = ["flwr==1.42.0", "tinyodl"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "tinyodl"

[tool.flwr.app.components]
serverapp = "tinyodl_flower_app.server_app:app"
clientapp = "tinyodl_flower_app.client_app:app"

[tool.flwr.app.config]
{config}
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_app(folder: str | Path, run_config: dict[str, Any] | None = None) -> Path:
    """Write a Flower app project (``pyproject.toml`` + a two-module package) to ``folder``.

    ``flwr new`` needs the internet; this writes the same structure by hand. The modules only
    import the apps from this module, so the logic stays in tinyodl.
    """
    folder = Path(folder)
    cfg = _config(run_config)
    package = folder / "tinyodl_flower_app"
    package.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(f"{k} = {_toml_value(v)}" for k, v in cfg.items())
    (folder / "pyproject.toml").write_text(_PYPROJECT.format(config=lines), encoding="utf-8")
    (package / "__init__.py").write_text('"""tinyodl on Flower."""\n', encoding="utf-8")
    (package / "client_app.py").write_text(
        "from tinyodl.federated.flower import make_client_app\n\napp = make_client_app()\n",
        encoding="utf-8",
    )
    (package / "server_app.py").write_text(
        "from tinyodl.federated.flower import make_server_app\n\napp = make_server_app()\n",
        encoding="utf-8",
    )
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyodl.federated.flower")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write-app", help="write the Flower app project to a folder")
    w.add_argument("folder")
    args = parser.parse_args(argv)
    print(write_app(args.folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
