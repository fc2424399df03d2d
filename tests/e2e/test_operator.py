"""Operator actions on real processes: sagactl retries and resolves sagas that need
attention, and refuses what does not fit."""

from __future__ import annotations

import json

import pytest

from client.events import EventWatcher
from contracts.registry import ORDER_RESOLVED
from engine.state import SagaStatus
from tests.e2e.conftest import Deploy
from tests.e2e.test_cli import sagactl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def test_sagactl_retries_and_resolves_what_needs_attention(deploy: Deploy) -> None:
    """Payment declines two orders and inventory cannot undo their reservations: both need
    attention. Once inventory is healthy, a retry undoes one (failed, announced as resolved);
    the other is resolved by hand. The books agree, and the history says who did what."""
    d = await deploy()
    await d.seed({"apple": 100}, {"alice": 1_000})  # 10.00: neither order can be paid
    await d.reconfigure("inventory", {"SAGA_FAULT_COMPENSATION_FAIL": "1"})
    follow_ups = EventWatcher(d.transport, d.topology.orders_exchange, (ORDER_RESOLVED,),
                              "order_id")
    await follow_ups.start()
    for order_id in ("stuck-1", "stuck-2"):
        await d.order(order_id, "alice", ("apple", 1, "50.00"))
    for order_id, outcome in (await d.outcomes({"stuck-1", "stuck-2"})).items():
        assert outcome.failed is not None, order_id
        assert outcome.failed.needs_attention, (order_id, outcome)
    await d.reconfigure("inventory", {"SAGA_FAULT_COMPENSATION_FAIL": "0"})

    retried = await sagactl(d.env, "retry", "stuck-1", "--note", "inventory redeployed",
                            "--operator", "olga")
    assert retried.returncode == 0, retried
    assert "order:stuck-1: retry done" in retried.stdout
    resolved = await sagactl(d.env, "resolve", "stuck-2", "--note", "released by hand",
                             "--operator", "olga")
    assert resolved.returncode == 0, resolved

    assert not await follow_ups.wait_for({"stuck-1", "stuck-2"}, 60), d.cluster.logs()
    assert follow_ups.events["stuck-1"].body["status"] == "failed"
    assert follow_ups.events["stuck-2"].body == {
        "order_id": "stuck-2", "status": "resolved", "reason_code": "PAYMENT_DECLINED",
        "detail": "released by hand"}
    assert (await d.saga("stuck-1")).state.status is SagaStatus.FAILED
    assert (await d.saga("stuck-2")).state.status is SagaStatus.RESOLVED

    shown = await sagactl(d.env, "status", "stuck-1", "--json")
    history = json.loads(shown.stdout)["history"]
    assert next(e for e in history if e["kind"] == "retry")["by"] == "olga"
    text = await sagactl(d.env, "status", "stuck-2")
    assert "resolve" in text.stdout
    assert "released by hand by olga" in text.stdout

    again = await sagactl(d.env, "retry", "stuck-1")
    assert again.returncode == 1
    assert "retry refused: the saga is failed" in again.stdout
    unknown = await sagactl(d.env, "resolve", "nope", "--note", "x")
    assert unknown.returncode == 1
    assert "no saga with id nope" in unknown.stderr
    no_note = await sagactl(d.env, "resolve", "stuck-1")
    assert no_note.returncode == 2
    report = await d.settled()
    assert report.ok, report.violations
