"""Operator actions through the admin queue: retry and resolve a saga that needs attention,
cancel one that runs, and answers for every action, good or bad.

The real orchestrator on the in-memory broker and store; the test plays the participants
and the operator, each as its own broker user.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from client.orders import request_message
from contracts.admin import ADMIN_ACTION, ADMIN_RESULT, Action, AdminAction
from contracts.commands import Operation, Outcome
from contracts.envelope import Envelope, WireMessage, encode, new_message_id, utcnow
from contracts.orders import OrderItem, OrderRequested
from contracts.registry import ORDER_FAILED, ORDER_REQUESTED, ORDER_RESOLVED
from contracts.topology import Topology, dead_letter_queue
from engine.state import OpKey, SagaState, SagaStatus
from infra.adapters.memory_bus import InMemoryBroker, InMemoryTransport
from infra.consumer import REASON_HEADER
from infra.settings import CommonSettings
from orchestrator.app import build, definitions
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.settings import OrchestratorSettings
from orchestrator.store_memory import MemorySagaStore
from tests.contract.participants import answer_commands
from tests.contract.test_boundary import eventually
from tests.plan import PLAN

TOPOLOGY = Topology("admin")
SAGA = "order:o-1"
WAIT = 5.0
STUCK = ("reserve_stock", Operation.CONFIRM)


def succeed(key: OpKey) -> Outcome:
    """Every command succeeds."""
    return Outcome.SUCCEEDED


def confirm_fails(key: OpKey) -> Outcome:
    """The stock confirm fails for good; everything else succeeds."""
    return Outcome.PERMANENT_ERROR if key == STUCK else Outcome.SUCCEEDED


@dataclass
class System:
    """The orchestrator, an operator, a client, and the broker to play services on."""

    broker: InMemoryBroker
    store: MemorySagaStore
    metrics: OrchestratorMetrics
    operator: InMemoryTransport
    client: InMemoryTransport
    results: str  # the operator's queue of admin.result
    outcomes: str  # the client's queue of order.failed and order.resolved

    async def order(self) -> None:
        """Ask for an order saga."""
        await self.client.publish(TOPOLOGY.orders_exchange, ORDER_REQUESTED, request_message(
            OrderRequested(order_id="o-1", customer_id="c-1", items=(
                OrderItem(sku="SKU-A", quantity=1, unit_price=Decimal("5.00")),))))
        await eventually(lambda: self.store.load(SAGA), WAIT)

    async def state(self) -> SagaState[Any]:
        """The saga's stored state."""
        record = await self.store.load(SAGA)
        assert record is not None
        return record.state

    async def serve(self, answer: Callable[[OpKey], Outcome], until: Callable[[SagaState[Any]], bool],
                    ) -> SagaState[Any]:
        """Answer every command of the saga as ``answer`` says until ``until`` holds."""
        async def step() -> SagaState[Any] | None:
            state = await self.state()
            if until(state):
                return state
            await answer_commands(self.broker, TOPOLOGY, state, answer)
            return None

        return await eventually(step, WAIT)

    async def needs_attention(self) -> None:
        """An order whose stock confirm failed for good."""
        await self.order()
        await self.serve(confirm_fails, lambda s: s.status is SagaStatus.NEEDS_ATTENTION)
        first = await self.outcome()
        assert first.type == ORDER_FAILED
        assert json.loads(first.body)["needs_attention"] is True

    async def act(self, action: Action, note: str = "", saga: str = SAGA,
                  message_id: str | None = None) -> dict[str, Any]:
        """Publish an action as the operator and return the orchestrator's answer."""
        message_id = message_id or new_message_id()
        envelope = Envelope(message_id=message_id, correlation_id=saga, message_type=ADMIN_ACTION,
                            timestamp=utcnow())
        await self.operator.publish(TOPOLOGY.admin_exchange, ADMIN_ACTION, encode(
            envelope, AdminAction(saga_id=saga, action=action, operator="alice", note=note)))
        answer = await eventually(lambda: self.operator.get(self.results), WAIT)
        assert answer.headers["x-causation-id"] == message_id
        body: dict[str, Any] = json.loads(answer.body)
        return body

    async def outcome(self) -> WireMessage:
        """The next order.failed or order.resolved."""
        return await eventually(lambda: self.client.get(self.outcomes), WAIT)

    def actions(self, action: Action, result: str) -> float:
        """saga_operator_actions_total of the order saga."""
        return float(self.metrics.operator_actions.labels("order", action.value, result)
                     ._value.get())


@pytest.fixture
async def system() -> AsyncIterator[System]:
    """The orchestrator running on its own namespace."""
    settings = OrchestratorSettings(common=CommonSettings(store="memory", namespace="admin"))
    registry = definitions(settings)
    store = MemorySagaStore(registry)
    metrics = OrchestratorMetrics(CollectorRegistry())
    broker = InMemoryBroker()
    client, operator = broker.connect("saga-client"), broker.connect("saga-operator")
    await client.declare(TOPOLOGY, PLAN)
    outcomes = await client.temporary_queue(TOPOLOGY.orders_exchange,
                                            (ORDER_FAILED, ORDER_RESOLVED))
    results = await operator.temporary_queue(TOPOLOGY.admin_exchange, (ADMIN_RESULT,))
    orchestrator = build(settings, broker.connect("saga-orchestrator"), store, registry, metrics)
    await orchestrator.start()
    yield System(broker, store, metrics, operator, client, results, outcomes)
    await orchestrator.stop()


async def test_retry_runs_the_failed_confirm_and_announces_the_end(system: System) -> None:
    await system.needs_attention()
    answer = await system.act(Action.RETRY, "stock service redeployed")
    assert answer == {"saga_id": SAGA, "action": "retry", "accepted": True,
                      "status": "committed", "detail": "the saga is committed"}
    state = await system.serve(succeed, lambda s: s.finished)
    assert state.status is SagaStatus.COMPLETED
    assert state.op(*STUCK).attempt == 2
    follow_up = await system.outcome()
    assert follow_up.type == ORDER_RESOLVED
    assert json.loads(follow_up.body) == {"order_id": "o-1", "status": "completed",
                                          "reason_code": None,
                                          "detail": "after an operator's retry"}
    retry = next(e for e in state.history if e.kind == "retry")
    assert (retry.by, retry.detail) == ("alice", "stock service redeployed")
    assert system.actions(Action.RETRY, "accepted") == 1


async def test_resolve_ends_the_saga_resolved(system: System) -> None:
    await system.needs_attention()
    answer = await system.act(Action.RESOLVE, "confirmed the reservation by hand")
    assert answer["accepted"] is True
    assert answer["status"] == "resolved"
    assert (await system.state()).status is SagaStatus.RESOLVED
    follow_up = await system.outcome()
    assert follow_up.type == ORDER_RESOLVED
    assert json.loads(follow_up.body)["detail"] == "confirmed the reservation by hand"


async def test_the_same_action_delivered_again_is_answered_and_not_repeated(
        system: System) -> None:
    await system.needs_attention()
    first = await system.act(Action.RETRY, message_id="act-1")
    version = (await system.state()).version
    again = await system.act(Action.RETRY, message_id="act-1")
    assert first["accepted"] is True
    assert again["accepted"] is True
    assert again["detail"].startswith("already done")
    assert (await system.state()).version == version
    assert system.actions(Action.RETRY, "repeated") == 1


async def test_actions_in_the_wrong_state_are_refused_with_the_state_named(
        system: System) -> None:
    await system.order()
    retry = await system.act(Action.RETRY)
    assert retry["accepted"] is False
    assert retry["status"] == "running"
    assert "the saga is running" in retry["detail"]
    resolve = await system.act(Action.RESOLVE, "nothing to do")
    assert "the saga is running" in resolve["detail"]
    assert system.actions(Action.RESOLVE, "refused") == 1


async def test_an_operator_cancel_undoes_a_running_saga(system: System) -> None:
    await system.order()
    answer = await system.act(Action.CANCEL, "fraud suspected")
    assert answer["accepted"] is True
    assert answer["status"] == "compensating"
    state = await system.serve(succeed, lambda s: s.finished)
    assert state.status is SagaStatus.FAILED
    assert state.failure is not None
    assert state.failure.reason_code == "CANCELLED"
    again = await system.act(Action.CANCEL)
    assert again["accepted"] is True
    assert again["detail"].startswith("already cancelled")


async def test_an_unknown_saga_is_answered_not_found(system: System) -> None:
    answer = await system.act(Action.RETRY, saga="order:nope")
    assert answer == {"saga_id": "order:nope", "action": "retry", "accepted": False,
                      "status": None, "detail": "no saga with id order:nope"}
    assert system.actions(Action.RETRY, "not_found") == 1


@pytest.mark.parametrize("body", [b"not json", b'{"saga_id": "order:o-1", "action": "delete",'
                                  b' "operator": "x"}', b'{"saga_id": "order:o-1"}'])
async def test_a_malformed_action_is_dead_lettered_with_a_reason(
        system: System, body: bytes) -> None:
    await system.operator.publish(TOPOLOGY.admin_exchange, ADMIN_ACTION, WireMessage(
        body, message_id=new_message_id(), correlation_id=SAGA, type=ADMIN_ACTION,
        timestamp=utcnow()))
    dead = await eventually(
        lambda: system.operator.get(dead_letter_queue(TOPOLOGY.admin_queue)), WAIT)
    assert dead.body == body
    assert dead.headers[REASON_HEADER]
