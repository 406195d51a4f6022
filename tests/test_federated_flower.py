"""A real Flower 1.42 deployment on localhost gives tinyodl's own simulation, bit for bit.

One SuperLink and two SuperNodes run as separate processes (``--insecure``, offline), the
tinyodl app is submitted with ``flwr run``, and the global model after two rounds must equal
``build_federation(config).run(2)`` computed in this process. Nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is the extra 'fl' (pip install 'tinyodl[fl]')")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> set[int]:
    """All descendants of ``pid`` (from /proc), to stop what Flower starts in new sessions."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent_of[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, q in parent_of.items() if q in frontier} - found
        found |= frontier
    return found


def _with_ports(ports: list[int]) -> set[int]:
    """Processes whose command line names one of this test's ports."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(f"127.0.0.1:{p}" in cmd or f"--port {p}" in cmd for p in ports):
                pids.add(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stop(pids: set[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)


def _flwr(args: list[str], env: dict, cwd: Path, timeout: float = 120) -> dict:
    proc = subprocess.run(
        [str(BIN / "flwr"), *args, "--format", "json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"flwr {args}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}") from None


def test_flower_deployment_equals_the_simulation(tmp_path):
    from threadpoolctl import threadpool_limits

    from tinyodl.federated.flower import build_federation, write_app

    env = {
        **os.environ,
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    Path(env["FLWR_HOME"]).mkdir()
    link, n0, n1 = _free_port(), _free_port(), _free_port()
    (Path(env["FLWR_HOME"]) / "config.toml").write_text(
        f'[superlink]\ndefault = "tinyodl"\n\n[superlink.tinyodl]\n'
        f'address = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    output = tmp_path / "final.npy"
    config = {"num-rounds": 2, "num-clients": 2, "lr": 0.05, "output": str(output)}
    app = write_app(tmp_path / "app", config)
    started: list[subprocess.Popen] = []
    logs = []

    def start(name: str, args: list[str]) -> None:
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed in finally)
        logs.append(log)
        started.append(
            subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        )

    try:
        start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--port",
                str(link),
            ],
        )
        deadline = time.monotonic() + 60
        while True:  # the SuperLink's health endpoint
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{link}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "superlink.log").read_text()[-3000:]
            assert started[0].poll() is None, (tmp_path / "superlink.log").read_text()[-3000:]
            time.sleep(0.3)
        for k, port in enumerate((n0, n1)):
            start(
                f"supernode{k}",
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{link}",
                    "--port",
                    str(port),
                    "--node-config",
                    f"partition-id={k} num-partitions=2",
                ],
            )
        submitted = _flwr(["run", str(app), "tinyodl"], env, app)
        assert submitted.get("success") is True, submitted
        run_id = str(submitted["run-id"])
        status, deadline = "", time.monotonic() + 400
        while time.monotonic() < deadline:  # `flwr run` exits 0 even if the ServerApp fails
            runs = _flwr(["ls", "tinyodl", "--run-id", run_id], env, app).get("runs", [])
            status = runs[0]["status"] if runs else ""
            if status.startswith("finished"):
                break
            time.sleep(2)
        assert status == "finished:completed", (
            status,
            (tmp_path / "superlink.log").read_text()[-3000:],
            (tmp_path / "supernode0.log").read_text()[-3000:],
        )
        flower_model = np.load(output)
    finally:
        ours = {p.pid for p in started}
        everything = set(ours)
        for pid in ours:
            everything |= _children(pid)
        everything |= _with_ports([link, n0, n1])
        _stop(everything)
        for p in started:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
        leftovers = [pid for pid in everything | _with_ports([link, n0, n1]) if _alive(pid)]
        assert not leftovers, f"processes left running: {leftovers}"

    with threadpool_limits(limits=1):
        server = build_federation(config)
        server.run(2, progress=False)
    assert flower_model.dtype == np.float32 and flower_model.shape == server.global_params_.shape
    np.testing.assert_array_equal(flower_model, server.global_params_)  # bit-equal
