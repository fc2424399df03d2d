"""sagactl against a running deployment: submit and wait, status, list, seed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from harness.processes import ROOT
from tests.e2e.conftest import Deploy
from workers.inventory import StockItem

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def sagactl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run sagactl in a subprocess without blocking the event loop."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "sagactl", *args], cwd=ROOT, text=True,
        capture_output=True, timeout=120, env={**os.environ, **env})


async def test_submit_wait_status_and_list(deploy: Deploy) -> None:
    """An operator seeds, submits and waits, then reads the saga's steps and the list."""
    d = await deploy()
    seeded = await sagactl(d.env, "seed", "--sku", "apple=10", "--customer", "alice=100")
    assert seeded.returncode == 0, seeded.stderr
    apple = await d.stores.services["inventory"].get(StockItem, "apple")
    assert apple is not None
    assert apple.on_hand == 10

    done = await sagactl(d.env, "submit", "--customer", "alice", "--item", "apple:2:3.50",
                         "--order-id", "cli-1", "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cli-1", "completed"]

    declined = await sagactl(d.env, "submit", "--customer", "alice", "--item", "apple:1:500.00",
                             "--order-id", "cli-2", "--wait")
    assert declined.returncode == 1
    assert "PAYMENT_DECLINED" in declined.stdout

    status = await sagactl(d.env, "status", "cli-2", "--json")
    assert status.returncode == 0, status.stderr
    saga = json.loads(status.stdout)
    assert saga["status"] == "failed"
    assert saga["failure"]["reason_code"] == "PAYMENT_DECLINED"
    steps = {(s["step"], s["operation"]): s for s in saga["steps"]}
    assert steps[("hold_funds", "forward")]["status"] == "failed"
    assert steps[("reserve_stock", "compensate")]["status"] == "succeeded"
    assert all(s["started_at"] for s in saga["steps"])

    text = await sagactl(d.env, "status", "cli-1")
    assert "completed" in text.stdout
    assert "approve_order" in text.stdout

    listed = await sagactl(d.env, "list", "--state", "failed", "--json")
    assert [s["saga_id"] for s in json.loads(listed.stdout)] == ["order:cli-2"]

    missing = await sagactl(d.env, "status", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "sagactl: no saga with id nope"
