"""``sagactl up`` runs the whole system until SIGTERM: every process, the console, a
supervisor that starts a killed process again, and a clean stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from contracts.topology import Topology
from harness.processes import ROOT, free_port
from infra.adapters.rabbit import RabbitTransport
from tests.contract.test_boundary import eventually
from tests.e2e.test_cli import sagactl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
PROCESS_LINE = re.compile(r"^(\S+)\s+pid (\d+)\s+(http://\S+)$", re.M)


def launch(args: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    """``sagactl ARGS`` in the background, its output in ``out``."""
    with out.open("w") as sink:
        return subprocess.Popen([sys.executable, "-m", "sagactl", *args], cwd=ROOT, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_up_runs_supervises_and_stops_everything(
        amqp_url: str, topology: Topology, rabbit: RabbitTransport, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SAGA_AMQP_URL": amqp_url, "SAGA_NAMESPACE": topology.namespace}
    env.pop("SAGA_MONGO_URL", None)  # stand-ins, in the data folder
    out = tmp_path / "up.out"
    up = launch(["up", "--data", str(tmp_path / "data"), "--console-port", str(port)], env, out)
    try:
        async def running() -> bool | None:
            assert up.poll() is None, out.read_text()
            return "running; Ctrl-C stops everything" in out.read_text() or None

        assert await eventually(running, 120)
        text = out.read_text()
        pids = {name: int(pid) for name, pid, _ in PROCESS_LINE.findall(text)}
        assert {"orchestrator", "inventory", "payment", "shipping", "order", "notification",
                "account", "console"} <= set(pids), text
        assert "broker         amqp://guest:***@" in text

        # An order of a customer and a SKU nobody seeded runs its saga to the end: failed, by
        # whichever of the two parallel prepares refuses first.
        order = await sagactl({"SAGA_AMQP_URL": amqp_url, "SAGA_NAMESPACE": topology.namespace},
                              "submit", "--customer", "c-1", "--item", "nothing:1:1.00",
                              "--order-id", "up-1", "--wait", "--timeout", "60")
        assert order.returncode == 1, order
        assert re.search(r"^failed: (UNKNOWN_SKU|UNKNOWN_CUSTOMER): ", order.stdout, re.M), order
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            saga = (await http.get("/api/sagas/up-1")).json()
        assert (saga["saga_id"], saga["status"]) == ("order:up-1", "failed")

        os.kill(pids["shipping"], signal.SIGKILL)

        async def restarted() -> bool | None:
            return "shipping exited with code -9; starting it again" in out.read_text() or None

        assert await eventually(restarted, 30)
    finally:
        up.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(up.wait, 60)
    assert code in (0, 143), out.read_text()
    assert out.read_text().rstrip().endswith("stopped")
    assert not [name for name, pid in pids.items() if name != "shipping" and alive(pid)]
