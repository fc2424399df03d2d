"""Cancelling a saga: honoured before the commit point, refused with a reason after it, and
answered whatever the request names.

The real orchestrator on the in-memory broker and store; the test plays the participants,
answering each command as its service's broker user.
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
from contracts.commands import Operation, Outcome
from contracts.envelope import WireMessage, new_message_id
from contracts.orders import OrderItem, OrderRequested
from contracts.reasons import PlatformReason
from contracts.registry import (
    ORDER_CANCEL,
    ORDER_CANCEL_REFUSED,
    ORDER_FAILED,
    ORDER_REQUESTED,
)
from contracts.topology import Topology, dead_letter_queue
from engine.state import OpStatus, SagaState, SagaStatus
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

TOPOLOGY = Topology("cancel")
SAGA = "order:o-1"
WAIT = 5.0


@dataclass
class System:
    """The orchestrator's store and metrics, a client, and the broker to play services on."""

    broker: InMemoryBroker
    store: MemorySagaStore
    metrics: OrchestratorMetrics
    client: InMemoryTransport
    answers: str  # a queue of order.failed and order.cancel_refused

    async def order(self, order_id: str = "o-1") -> None:
        """Ask for an order saga."""
        await self.client.publish(TOPOLOGY.orders_exchange, ORDER_REQUESTED, request_message(
            OrderRequested(order_id=order_id, customer_id="c-1", items=(
                OrderItem(sku="SKU-A", quantity=1, unit_price=Decimal("5.00")),))))
        await eventually(lambda: self.store.load(f"order:{order_id}"), WAIT)

    async def cancel(self, body: dict[str, Any]) -> None:
        """Publish a cancel request as a client would."""
        await self.client.publish(TOPOLOGY.orders_exchange, ORDER_CANCEL, WireMessage(
            json.dumps(body).encode(), message_id=new_message_id(), type=ORDER_CANCEL))

    async def state(self) -> SagaState[Any]:
        """The saga's stored state."""
        record = await self.store.load(SAGA)
        assert record is not None
        return record.state

    async def serve(self, until: Callable[[SagaState[Any]], bool],
                    only: tuple[str, ...] = ()) -> SagaState[Any]:
        """Answer every command of the saga with success (only to ``only`` steps, if given)
        until its state satisfies ``until``."""
        async def step() -> SagaState[Any] | None:
            state = await self.state()
            if until(state):
                return state
            await answer_commands(self.broker, TOPOLOGY, state, lambda key: (
                None if only and key[0] not in only else Outcome.SUCCEEDED))
            return None

        return await eventually(step, WAIT)

    async def answer(self) -> WireMessage:
        """The next order.failed or order.cancel_refused."""
        return await eventually(lambda: self.client.get(self.answers), WAIT)

    def cancels(self, result: str) -> float:
        """saga_cancels_total of the order saga with this result."""
        return float(self.metrics.cancels.labels("order", result)._value.get())


@pytest.fixture
async def system() -> AsyncIterator[System]:
    """The orchestrator running on its own namespace."""
    settings = OrchestratorSettings(common=CommonSettings(store="memory", namespace="cancel"))
    registry = definitions(settings)
    store = MemorySagaStore(registry)
    metrics = OrchestratorMetrics(CollectorRegistry())
    broker = InMemoryBroker()
    client = broker.connect("saga-client")
    await client.declare(TOPOLOGY, PLAN)
    answers = await client.temporary_queue(TOPOLOGY.orders_exchange,
                                           (ORDER_FAILED, ORDER_CANCEL_REFUSED))
    orchestrator = build(settings, broker.connect("saga-orchestrator"), store, registry, metrics)
    await orchestrator.start()
    yield System(broker, store, metrics, client, answers)
    await orchestrator.stop()


async def test_a_cancel_before_the_commit_point_undoes_the_saga(system: System) -> None:
    """Created but not yet reserved and paid: the cancel is honoured, everything done is
    undone, and the answer is order.failed with CANCELLED and the client's reason. A second
    cancel changes nothing and is not answered again."""
    await system.order()
    await system.serve(lambda s: s.op("create_order", Operation.FORWARD).status is OpStatus.SUCCEEDED,
                       only=("create_order",))
    await system.cancel({"order_id": "o-1", "reason": "changed my mind"})

    state = await system.serve(lambda s: s.finished)
    assert state.status is SagaStatus.FAILED
    assert state.failure is not None
    assert (state.failure.reason_code, state.failure.reason) == (PlatformReason.CANCELLED,
                                                                 "changed my mind")
    assert state.op("create_order", Operation.COMPENSATE).status is OpStatus.SUCCEEDED
    answer = await system.answer()
    assert answer.type == ORDER_FAILED
    assert json.loads(answer.body)["reason_code"] == "CANCELLED"
    assert system.cancels("honoured") == 1

    await system.cancel({"order_id": "o-1"})
    assert await eventually(lambda: _at_least(system.cancels("repeated"), 1), WAIT)
    assert await system.client.get(system.answers) is None


async def test_a_cancel_after_the_commit_point_is_refused(system: System) -> None:
    """A completed saga cannot be cancelled: order.cancel_refused says COMMITTED and the
    saga's status; the saga is untouched."""
    await system.order()
    await system.serve(lambda s: s.status is SagaStatus.COMPLETED)
    await system.cancel({"order_id": "o-1", "reason": "too late"})

    refused = await system.answer()
    assert refused.type == ORDER_CANCEL_REFUSED
    assert json.loads(refused.body) == {"order_id": "o-1", "reason_code": "COMMITTED",
                                        "status": "completed",
                                        "detail": "the saga is completed"}
    assert refused.correlation_id == SAGA
    assert (await system.state()).status is SagaStatus.COMPLETED
    assert system.cancels("refused") == 1


@pytest.mark.parametrize(("body", "code"), [
    ({"order_id": "o-nope"}, "NOT_FOUND"),
    ({"order_id": "o-1", "reason": "x" * 600}, "INVALID_REQUEST"),
    ({"order_id": "o-1", "why": "unknown field"}, "INVALID_REQUEST"),
])
async def test_a_cancel_that_names_a_saga_is_always_answered(
        system: System, body: dict[str, Any], code: str) -> None:
    await system.order()
    await system.cancel(body)
    refused = await system.answer()
    assert refused.type == ORDER_CANCEL_REFUSED
    assert json.loads(refused.body)["reason_code"] == code
    assert (await system.state()).status is SagaStatus.RUNNING


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"reason": "no id"}',
                                  b'{"order_id": "../x"}'])
async def test_a_cancel_naming_no_saga_is_dead_lettered_with_its_reason(
        system: System, body: bytes) -> None:
    await system.client.publish(TOPOLOGY.orders_exchange, ORDER_CANCEL, WireMessage(
        body, message_id=new_message_id(), type=ORDER_CANCEL))
    queue = dead_letter_queue(TOPOLOGY.cancels_queue_of("order"))
    dead = await eventually(lambda: system.client.get(queue), WAIT)
    assert dead.body == body
    assert str(dead.headers[REASON_HEADER])


async def _at_least(value: float, wanted: float) -> bool | None:
    return value >= wanted or None
