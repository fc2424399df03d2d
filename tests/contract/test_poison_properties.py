"""Property: no order-request body can crash the consumer or get lost.

Arbitrary bodies go through the real ``OrchestratorHandlers.on_start``, a real
``SagaRunner`` and the consume ``Boundary`` on the in-memory transport. Each message is
either processed (its saga exists and its first command was published) or dead-lettered
as invalid input with a reason, never both, never neither; one refused for an invalid
field with a readable id is also answered with ``order.failed`` / ``INVALID_REQUEST``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from contracts.envelope import CAUSATION_HEADER, MAX_BODY_BYTES, WireMessage, new_message_id
from contracts.reasons import PlatformReason
from contracts.registry import ORDER_FAILED, ORDER_REQUESTED
from contracts.topology import Topology, dead_letter_queue
from infra.adapters.memory_bus import InMemoryBroker, InMemoryTransport
from infra.consumer import (
    ERROR_KIND_HEADER,
    ORIGINAL_SIZE_HEADER,
    REASON_HEADER,
    TRUNCATED_BODY_BYTES,
    Boundary,
    RetryLimits,
)
from infra.settings import CommonSettings
from infra.transport import Delivery
from orchestrator.app import definitions
from orchestrator.handlers import OrchestratorHandlers
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.outbox import OutboxPublisher
from orchestrator.runner import SagaRunner
from orchestrator.settings import OrchestratorSettings
from orchestrator.store_memory import MemorySagaStore
from sagas.order import NAME as ORDER_SAGA
from sagas.order import order_saga
from tests.plan import PLAN

TOPOLOGY = Topology("props")
PROPERTIES = settings(max_examples=200, deadline=None)
FAST = RetryLimits(unexpected_attempts=3, backoff=0.001, backoff_max=0.01)
INVALID_INPUT = {"CodecError", "InvalidMessage", "Refused"}
# Replaced by an order id unique within the example, so that valid requests never collide.
FRESH_ID = "<fresh>"
VALID_BODY = {"customer_id": "c-1", "items": [{"sku": "sku-1", "quantity": 1, "unit_price": "9.99"}]}

# --- strategies --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
identifiers = st.sampled_from(["c-1", "A.b_9", "x" * 64, "x" * 65, "", "has space", "ü", "../x"])
quantities = st.one_of(st.integers(-2, 10_002), st.integers(), st.sampled_from([1.0, 1.5, "2", True]),
                       json_values)
prices = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["12.50", "0", "-1", "0.001", "1000000", "1000000.01", "1e400", "NaN", " 1"]),
    st.floats(), st.integers(), json_values)
items = st.fixed_dictionaries(
    {"sku": identifiers, "quantity": quantities, "unit_price": prices},
    optional={"note": json_values})
orders = st.fixed_dictionaries(
    {},
    optional={"customer_id": identifiers | json_values,
              "items": st.lists(items, max_size=6) | json_values | st.lists(items, min_size=50,
                                                                            max_size=52),
              "order_id": st.just(FRESH_ID) | identifiers | json_values,
              "coupon": json_values})


def _padded_to(size: int) -> bytes:
    """A valid order request padded with whitespace to ``size`` bytes."""
    body = json.dumps(VALID_BODY).encode()
    return body + b" " * (size - len(body))


bodies: st.SearchStrategy[bytes | Any] = st.one_of(
    st.binary(max_size=64),
    json_values,
    orders,
    orders.map(lambda o: {**VALID_BODY, **o}),  # mostly valid, with a few fields replaced
    st.integers(MAX_BODY_BYTES - 2, MAX_BODY_BYTES + 2).map(_padded_to),
)


@dataclass(frozen=True, slots=True)
class Request:
    """One generated order request."""

    body: bytes
    type: str | None


def _finish(index: int, body: bytes | Any, type_: str | None) -> Request:
    if isinstance(body, bytes):
        return Request(body, type_)
    if isinstance(body, dict) and body.get("order_id") == FRESH_ID:
        body = {**body, "order_id": f"o-{index}"}
    return Request(json.dumps(body).encode(), type_)


requests = st.lists(
    st.tuples(bodies, st.sampled_from([ORDER_REQUESTED, ORDER_REQUESTED, None, "", "order.other"])),
    min_size=1, max_size=4,
).map(lambda drawn: [_finish(i, body, type_) for i, (body, type_) in enumerate(drawn)])


# --- the consumer under test -------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of one example's messages."""

    sent: list[WireMessage]
    started: dict[str, WireMessage]  # request message id -> its first command
    dead: dict[str, WireMessage]  # request message id -> its dead-letter copy
    sagas: int
    survivor_started: bool
    refusals: dict[str, WireMessage]  # order.failed outcomes by order id


async def feed(generated: list[Request]) -> Outcome:
    """Send the requests through the boundary-wrapped real handler, then one valid request."""
    broker = InMemoryBroker()
    publisher, consumer = broker.connect(), broker.connect()
    await publisher.declare(TOPOLOGY, PLAN)
    store = MemorySagaStore(definitions(OrchestratorSettings(common=CommonSettings(store="memory"))))
    runner, outbox = _runner(consumer, store)
    settled: asyncio.Queue[None] = asyncio.Queue()
    handlers = OrchestratorHandlers(runner, outbox, {ORDER_SAGA: TOPOLOGY.orders_exchange})
    wrapped = Boundary(consumer, TOPOLOGY, limits=FAST).wrap(
        partial(handlers.on_start, order_saga()))
    failed = await publisher.temporary_queue(TOPOLOGY.orders_exchange, (ORDER_FAILED,))

    async def handle(delivery: Delivery) -> None:
        await wrapped(delivery)
        settled.put_nowait(None)

    await consumer.consume(TOPOLOGY.requests_queue, handle, prefetch=8)
    sent = [WireMessage(r.body, message_id=new_message_id(), type=r.type) for r in generated]
    survivor = WireMessage(json.dumps({**VALID_BODY, "order_id": "survivor"}).encode(),
                           message_id=new_message_id())
    try:
        for m in [*sent, survivor]:
            await publisher.publish(TOPOLOGY.orders_exchange, ORDER_REQUESTED, m)
        for _ in range(len(sent) + 1):
            await asyncio.wait_for(settled.get(), 5)
        started = _by_causation(await _drain(publisher, TOPOLOGY.command_queue("order")))
        dead = {str(m.message_id): m
                for m in await _drain(publisher, dead_letter_queue(TOPOLOGY.requests_queue))}
        sagas = len(await store.find(None, 1000))
        refusals = {str(json.loads(m.body)["order_id"]): m
                    for m in await _drain(publisher, failed)}
    finally:
        await consumer.close()
        await publisher.close()
    return Outcome(sent, started, dead, sagas, str(survivor.message_id) in started, refusals)


def _runner(transport: InMemoryTransport,
            store: MemorySagaStore) -> tuple[SagaRunner, OutboxPublisher]:
    settings_ = OrchestratorSettings(common=CommonSettings(store="memory"))
    metrics = OrchestratorMetrics(CollectorRegistry())
    outbox = OutboxPublisher(transport, store, metrics, time.time)
    return SagaRunner(registry=definitions(settings_), store=store, outbox=outbox,
                      topology=TOPOLOGY, metrics=metrics, clock=time.time), outbox


async def _drain(transport: InMemoryTransport, queue: str) -> list[WireMessage]:
    taken = []
    while (m := await transport.get(queue)) is not None:
        taken.append(m)
    return taken


def _by_causation(commands: list[WireMessage]) -> dict[str, WireMessage]:
    return {str(m.headers.get(CAUSATION_HEADER)): m for m in commands}


# --- the property ------------------------------------------------------------------------------


def _assert_answered(outcome: Outcome, m: WireMessage) -> None:
    """A refused request was answered with order.failed / INVALID_REQUEST under its key."""
    named = _order_id(m.body)
    key = (named if isinstance(named, str) and named
           else uuid.uuid5(uuid.NAMESPACE_URL, f"request:{m.message_id}").hex)
    answer = outcome.refusals.get(key)
    assert answer is not None, (key, m.body)
    assert json.loads(answer.body)["reason_code"] == PlatformReason.INVALID_REQUEST


def _order_id(body: bytes) -> object:
    """The order id a request body names, if it is a JSON object that names one."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get("order_id") if isinstance(value, dict) else None


@PROPERTIES
@given(generated=requests)
def test_every_order_request_is_processed_or_dead_lettered(generated: list[Request]) -> None:
    """No body crashes the consumer; each request has its saga xor is dead-lettered as invalid."""
    outcome = asyncio.run(feed(generated))

    started_orders = {m.correlation_id for m in outcome.started.values()}
    processed = 0
    for m in outcome.sent:
        key = str(m.message_id)
        if key in outcome.dead:
            dead = outcome.dead[key]
            assert key not in outcome.started, dead.headers
            if len(m.body) > MAX_BODY_BYTES:  # only its start is kept, and its size
                assert dead.body == m.body[:TRUNCATED_BODY_BYTES]
                assert dead.headers.get(ORIGINAL_SIZE_HEADER) == len(m.body)
            else:
                assert dead.body == m.body
            assert str(dead.headers.get(REASON_HEADER, "")).strip()
            assert dead.headers.get(ERROR_KIND_HEADER) in INVALID_INPUT, dead.headers
            if dead.headers.get(ERROR_KIND_HEADER) == "Refused":
                _assert_answered(outcome, m)
        else:
            # Started its saga, or was a repeat of an order id that an earlier request started.
            assert key in outcome.started or f"order:{_order_id(m.body)}" in started_orders, m
            processed += 1
    assert set(outcome.dead) <= {str(m.message_id) for m in outcome.sent}
    assert processed + len(outcome.dead) == len(outcome.sent)
    assert all(c.type == "order.create" for c in outcome.started.values())
    assert outcome.survivor_started
    assert outcome.sagas == len(outcome.started)
