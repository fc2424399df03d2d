"""Cancelling sagas on real processes: with sagactl, and racing the commit point."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from client.events import EventWatcher
from contracts.commands import Operation
from contracts.envelope import WireMessage, new_message_id
from contracts.reasons import PlatformReason
from contracts.registry import ORDER_CANCEL, ORDER_CANCEL_REFUSED, ORDER_COMPLETED, ORDER_FAILED
from engine.state import OpStatus, SagaStatus
from tests.contract.test_boundary import eventually
from tests.e2e.conftest import Deploy
from tests.e2e.harness import Deployment
from tests.e2e.test_cli import sagactl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

STOCK = {"apple": 500}
FUNDS = {"alice": 10_000_000}  # cents


async def _cancel(d: Deployment, order_id: str, reason: str = "race") -> None:
    body = json.dumps({"order_id": order_id, "reason": reason}).encode()
    await d.transport.publish(d.topology.orders_exchange, ORDER_CANCEL, WireMessage(
        body, message_id=new_message_id(), type=ORDER_CANCEL))


async def test_sagactl_cancels_before_the_commit_point_and_not_after(deploy: Deploy) -> None:
    """While shipping is slow, the saga waits before its commit point: sagactl cancel
    undoes it (exit 0). A completed order cannot be cancelled (exit 1, COMMITTED)."""
    d = await deploy()
    await d.seed(STOCK, FUNDS)
    await d.order("done", "alice", ("apple", 1, "1.00"))
    assert (await d.outcomes({"done"}))["done"].label == "completed"
    await d.reconfigure("shipping", {"SAGA_FAULT_LATENCY_MS": "4000"})
    await d.order("slow", "alice", ("apple", 1, "1.00"))

    async def shipping() -> bool | None:
        record = await d.stores.sagas.load("order:slow")
        op = None if record is None else record.state.op("schedule_shipment", Operation.FORWARD)
        return (op is not None and op.status is OpStatus.WAITING) or None

    assert await eventually(shipping, 30.0)

    cancelled = await sagactl(d.env, "cancel", "slow", "--reason", "customer called")
    assert cancelled.returncode == 0, cancelled
    assert "cancelled" in cancelled.stdout
    refused = await sagactl(d.env, "cancel", "order:done")
    assert refused.returncode == 1, refused
    assert "not cancelled: COMMITTED" in refused.stdout
    again = await sagactl(d.env, "cancel", "slow")
    assert again.returncode == 0
    assert "already cancelled" in again.stdout

    state = (await d.saga("slow")).state
    assert state.status is SagaStatus.FAILED
    assert state.failure is not None
    assert state.failure.reason == "customer called"
    report = await d.settled()
    assert report.ok, report.violations


async def test_a_cancel_racing_the_commit_point_loses_or_wins_cleanly(deploy: Deploy) -> None:
    """Cancels sent at random moments around the commit point: for every order exactly one
    of the two wins. Either the saga completed and the cancel was refused (COMMITTED), or
    the cancel was honoured and the order failed with CANCELLED, undone; the books agree."""
    d = await deploy(workers={"SAGA_FAULT_LATENCY_MS": "60"})
    await d.seed(STOCK, FUNDS)
    refusals = EventWatcher(d.transport, d.topology.orders_exchange, (ORDER_CANCEL_REFUSED,),
                            "order_id")
    outcomes = EventWatcher(d.transport, d.topology.orders_exchange,
                            (ORDER_COMPLETED, ORDER_FAILED), "order_id")
    await refusals.start()
    await outcomes.start()
    dice = random.Random(11)
    ids = [f"race-{i}" for i in range(24)]

    async def order_then_cancel(order_id: str) -> None:
        await d.order(order_id, "alice", ("apple", 1, "1.00"))
        await asyncio.sleep(dice.uniform(0.0, 1.2))
        await _cancel(d, order_id)

    await asyncio.gather(*(order_then_cancel(i) for i in ids))
    assert not await outcomes.wait_for(set(ids), 120), d.cluster.logs()
    completed = {i for i in ids if outcomes.events[i].type == ORDER_COMPLETED}
    assert not await refusals.wait_for(completed, 60)
    for order_id in ids:
        outcome = outcomes.events[order_id]
        refusal = refusals.events.get(order_id)
        if outcome.type == ORDER_COMPLETED:
            assert refusal is not None
            assert refusal.body["reason_code"] == "COMMITTED", order_id
        else:
            assert outcome.body["reason_code"] == PlatformReason.CANCELLED, (order_id, outcome)
            assert refusal is None, (order_id, refusal)
    print(f"{len(completed)} completed (cancel refused), {len(ids) - len(completed)} cancelled")
    report = await d.settled()
    assert report.ok, report.violations
