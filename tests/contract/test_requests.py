"""Every start message gets an answer or a dead letter with a reason, and one saga at most.

The real ``OrchestratorHandlers``, runner and consume boundary, on the in-memory broker and
store: an invalid field with a readable id is answered, a request with no idempotency key at
all is refused rather than started twice, and an id reused with other content is answered
with its own reason instead of being dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import pytest
from prometheus_client import CollectorRegistry

from contracts.envelope import CodecError, WireMessage
from contracts.orders import OrderReason
from contracts.reasons import PlatformReason
from contracts.registry import ORDER_FAILED, ORDER_REQUESTED
from contracts.topology import Topology, dead_letter_queue
from infra.adapters.memory_bus import InMemoryBroker, InMemoryTransport
from infra.consumer import REASON_HEADER, Boundary, RetryLimits
from infra.settings import CommonSettings
from infra.transport import Delivery
from orchestrator.app import definitions
from orchestrator.handlers import OrchestratorHandlers
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.outbox import OutboxPublisher
from orchestrator.registry import DefinitionRegistry
from orchestrator.runner import SagaRunner
from orchestrator.settings import OrchestratorSettings
from orchestrator.start import read_request
from orchestrator.store_memory import MemorySagaStore
from sagas.order import NAME as ORDER_SAGA
from sagas.order import order_saga
from tests.plan import PLAN

TOPOLOGY = Topology("requests")
LINE = {"sku": "SKU-A", "quantity": 1, "unit_price": "3.50"}


@dataclass
class Orchestrator:
    """The start-message consumer of the order saga and what it produced."""

    publisher: InMemoryTransport
    store: MemorySagaStore
    failed: str  # a private queue of order.failed outcomes
    settled: asyncio.Queue[None]

    async def send(self, body: Mapping[str, object], message_id: str | None = None) -> None:
        """Publish one request and wait until the consumer is done with it."""
        await self.publisher.publish(TOPOLOGY.orders_exchange, ORDER_REQUESTED, WireMessage(
            json.dumps(body).encode(), message_id=message_id))
        await asyncio.wait_for(self.settled.get(), 5)

    async def drained(self, queue: str) -> list[WireMessage]:
        """Everything in a queue."""
        found = []
        while (m := await self.publisher.get(queue)) is not None:
            found.append(m)
        return found

    async def answers(self) -> list[dict[str, object]]:
        """The order.failed bodies published so far."""
        return [json.loads(m.body) for m in await self.drained(self.failed)]

    async def dead(self) -> list[WireMessage]:
        """The dead letters of the order requests queue."""
        return await self.drained(dead_letter_queue(TOPOLOGY.requests_queue))


@asynccontextmanager
async def serving(
        store_of: Callable[[DefinitionRegistry], MemorySagaStore] = MemorySagaStore,
) -> AsyncIterator[Orchestrator]:
    """The order saga's start consumer, wrapped in the boundary, on an in-memory broker."""
    broker = InMemoryBroker()
    publisher, consumer = broker.connect(), broker.connect()
    await publisher.declare(TOPOLOGY, PLAN)
    settings = OrchestratorSettings(common=CommonSettings(store="memory"))
    registry = definitions(settings)
    store = store_of(registry)
    metrics = OrchestratorMetrics(CollectorRegistry())
    outbox = OutboxPublisher(consumer, store, metrics, time.time)
    runner = SagaRunner(registry=registry, store=store, outbox=outbox, topology=TOPOLOGY,
                        metrics=metrics, clock=time.time)
    handlers = OrchestratorHandlers(runner, outbox, {ORDER_SAGA: TOPOLOGY.orders_exchange})
    wrapped = Boundary(consumer, TOPOLOGY, limits=RetryLimits(backoff=0.001)).wrap(
        partial(handlers.on_start, registry.latest(ORDER_SAGA)))
    settled: asyncio.Queue[None] = asyncio.Queue()

    async def handle(delivery: Delivery) -> None:
        await wrapped(delivery)
        settled.put_nowait(None)

    failed = await publisher.temporary_queue(TOPOLOGY.orders_exchange, (ORDER_FAILED,))
    await consumer.consume(TOPOLOGY.requests_queue, handle, prefetch=1)
    try:
        yield Orchestrator(publisher, store, failed, settled)
    finally:
        await consumer.close()
        await publisher.close()


@pytest.fixture
async def orchestrator() -> AsyncIterator[Orchestrator]:
    """The order saga's start consumer on the in-memory broker and store."""
    async with serving() as running:
        yield running


async def test_an_invalid_field_with_a_readable_id_is_answered(orchestrator: Orchestrator) -> None:
    """The issue's example (a billion units) gets order.failed with INVALID_REQUEST and the
    validation message, the fields it could read, and a copy for operators; no saga."""
    await orchestrator.send({"order_id": "o-big", "customer_id": "c1",
                             "items": [{**LINE, "quantity": 1_000_000_000}]})
    [answer] = await orchestrator.answers()
    assert answer["order_id"] == "o-big"
    assert answer["customer_id"] == "c1"
    assert answer["reason_code"] == PlatformReason.INVALID_REQUEST
    assert "quantity" in str(answer["reason"])
    [copy] = await orchestrator.dead()
    assert "INVALID_REQUEST" in str(copy.headers[REASON_HEADER])
    assert await orchestrator.store.find(None, 10) == []


def test_a_request_with_no_key_at_all_cannot_start_a_saga() -> None:
    """No order_id and no message_id (many AMQP clients set none): it could not be
    deduplicated, so reading it fails with that reason, however often it is redelivered.
    (The in-memory broker, like aiormq, gives every message an id; tests/e2e covers a pika
    client on RabbitMQ.)"""
    start = order_saga().start
    assert start is not None
    message = WireMessage(json.dumps({"customer_id": "c1", "items": [LINE]}).encode())
    for _ in range(2):
        with pytest.raises(CodecError, match="no idempotency key"):
            read_request(start, message)


async def test_a_redelivered_request_keyed_by_its_message_id_starts_one_saga(
        orchestrator: Orchestrator) -> None:
    """Without an order_id, the AMQP message_id is the key: a redelivery is the same saga."""
    body = {"customer_id": "c1", "items": [LINE]}
    await orchestrator.send(body, message_id="m-1")
    await orchestrator.send(body, message_id="m-1")
    assert len(await orchestrator.store.find(None, 10)) == 1


async def test_a_reused_order_id_with_other_content_is_answered_not_dropped(
        orchestrator: Orchestrator) -> None:
    """The second customer's order under a taken id gets DUPLICATE_ORDER_ID; the first
    order's saga is untouched, and an identical repeat is simply ignored."""
    first = {"order_id": "o-1", "customer_id": "c1", "items": [LINE]}
    await orchestrator.send(first)
    await orchestrator.send(first)
    assert await orchestrator.answers() == []
    await orchestrator.send({**first, "customer_id": "c2"})
    [answer] = await orchestrator.answers()
    assert answer["order_id"] == "o-1"
    assert answer["customer_id"] == "c2"
    assert answer["reason_code"] == OrderReason.DUPLICATE_ORDER_ID
    [saga] = await orchestrator.store.find(None, 10)
    assert getattr(saga.state.data, "customer_id", None) == "c1"
    assert await orchestrator.dead() == []
