"""The console's JSON API over TCP, in front of the real processes: lists, filters and
pages sagas, shows one with its graph, and sends actions through the admin queue."""

from __future__ import annotations

import httpx
import pytest

from contracts.commands import Operation
from contracts.reasons import PlatformReason
from engine.state import OpStatus, SagaStatus
from tests.contract.test_boundary import eventually
from tests.e2e.conftest import TOKEN, Console
from tests.e2e.harness import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def waiting_at_shipping(d: Deployment, order_id: str) -> None:
    """Until the order's saga waits for shipping, before its commit point."""
    async def waiting() -> bool | None:
        record = await d.stores.sagas.load(f"order:{order_id}")
        op = None if record is None else record.state.op("schedule_shipment", Operation.FORWARD)
        return (op is not None and op.status is OpStatus.WAITING) or None

    assert await eventually(waiting, 30.0)


async def cancelled(d: Deployment, order_id: str, operator: str) -> None:
    """Until the saga failed with CANCELLED, by ``operator``; then the books must agree."""
    async def failed() -> bool | None:
        return (await d.saga(order_id)).state.status is SagaStatus.FAILED or None

    assert await eventually(failed, 60.0), d.cluster.logs()
    state = (await d.saga(order_id)).state
    assert state.failure is not None
    assert state.failure.reason_code == PlatformReason.CANCELLED
    assert any(e.kind == "cancel" and e.by == operator for e in state.history)
    report = await d.settled(60)
    assert report.ok, report.violations


async def test_list_filter_page_show_and_act(console: Console) -> None:
    d = console.deployment
    for order_id in ("done-1", "done-2"):
        await d.order(order_id, "alice", ("apple", 1, "1.00"))
        assert (await d.outcomes({order_id}))[order_id].label == "completed"
    await d.reconfigure("shipping", {"SAGA_FAULT_LATENCY_MS": "15000"})
    await d.order("slow", "alice", ("apple", 1, "1.00"))
    await waiting_at_shipping(d, "slow")

    async with httpx.AsyncClient(base_url=console.url, timeout=30) as http:
        async def ids(**params: str) -> list[str]:
            answer = await http.get("/api/sagas", params=params)
            assert answer.status_code == 200, answer.text
            return [s["saga_id"] for s in answer.json()["sagas"]]

        assert await ids() == ["order:slow", "order:done-2", "order:done-1"]
        assert await ids(status="completed") == ["order:done-2", "order:done-1"]
        assert await ids(status="running,failed") == ["order:slow"]
        assert await ids(q="SLOW") == ["order:slow"]
        assert await ids(definition="transfer") == []
        assert await ids(since="2999-01-01T00:00:00+00:00") == []
        first = (await http.get("/api/sagas", params={"limit": "2"})).json()
        assert [s["saga_id"] for s in first["sagas"]] == ["order:slow", "order:done-2"]
        assert first["sagas"][0]["current"] == "schedule_shipment (forward)"
        assert await ids(limit="2", after=first["next"]) == ["order:done-1"]
        for bad, why in (({"status": "asleep"}, "status: one of"),
                         ({"limit": "0"}, "limit: between 1 and 500"),
                         ({"since": "yesterday"}, "since: an ISO 8601 time"),
                         ({"after": "nonsense"}, "after: the 'next' value")):
            answer = await http.get("/api/sagas", params=bad)
            assert (answer.status_code, answer.json()["error"][:len(why)]) == (400, why)

        slow = (await http.get("/api/sagas/slow")).json()  # a business key is enough
        assert (slow["saga_id"], slow["status"], slow["actions"]) == (
            "order:slow", "running", ["cancel"])
        assert "class schedule_shipment waiting" in slow["graph"]
        assert "class reserve_stock succeeded" in slow["graph"]
        assert [e["kind"] for e in slow["history"]][:1] == ["started"]
        missing = await http.get("/api/sagas/order:nope")
        assert (missing.status_code, missing.json()) == (404, {"error": "no saga with id order:nope"})
        names = {d["name"] for d in (await http.get("/api/definitions")).json()}
        assert {"order", "transfer"} <= names

        # Actions need the token, from anywhere.
        assert (await http.post("/api/sagas/slow/cancel")).status_code == 401
        wrong = await http.post("/api/sagas/slow/cancel", headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        refused = await http.post("/api/sagas/done-1/retry", headers=AUTH, json={})
        assert refused.status_code == 409, refused.text
        assert (refused.json()["accepted"], refused.json()["status"]) == (False, "completed")
        no_note = await http.post("/api/sagas/done-1/resolve", headers=AUTH, json={"note": " "})
        assert no_note.status_code == 400
        assert "resolve needs a note" in no_note.json()["error"]
        assert (await http.post("/api/sagas/nope/cancel", headers=AUTH)).status_code == 404
        assert (await http.post("/api/sagas/slow/frobnicate", headers=AUTH)).status_code == 404
        not_json = await http.post("/api/sagas/slow/cancel", headers=AUTH, content=b"{oops")
        assert (not_json.status_code, not_json.json()["error"]) == (400, "the body is not JSON")

        done = await http.post("/api/sagas/slow/cancel", headers=AUTH,
                               json={"operator": "olga", "note": "customer called"})
        assert done.status_code == 200, done.text
        assert done.json()["accepted"] is True
    await cancelled(d, "slow", "olga")
