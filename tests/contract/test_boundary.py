"""The consume boundary on both transports, then poison messages through the real handlers.

Every poison message must end up in its queue's dead-letter queue with a readable reason,
none may be lost or left behind, and the consumer must go on handling valid messages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from contracts.commands import Operation, Outcome, StepCommand, StepReply
from contracts.envelope import (
    CAUSATION_HEADER,
    MAX_BODY_BYTES,
    SCHEMA_VERSION_HEADER,
    CodecError,
    Envelope,
    HeaderValue,
    WireMessage,
    encode,
    new_message_id,
)
from contracts.order_steps import ReserveStock, StockLine
from contracts.orders import OrderItem
from contracts.registry import ORDER_REQUESTED, STEP_REPLY
from contracts.topology import Topology, dead_letter_queue
from engine.decide import start
from engine.state import OpStatus
from infra.consumer import (
    ERROR_KIND_HEADER,
    ORIGINAL_SIZE_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    TIME_HEADER,
    TRUNCATED_BODY_BYTES,
    Boundary,
    MessageHandler,
    RetryLimits,
)
from infra.errors import InvalidMessage, TransientError
from infra.settings import CommonSettings
from infra.transport import Delivery, Transport
from orchestrator.app import build, definitions
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.service import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.start import saga_id
from orchestrator.store import OutboxMessage
from orchestrator.store_memory import MemorySagaStore
from sagas.order import OrderSagaData, order_saga
from tests.contract import test_transport as contract
from tests.contract.test_transport import SENT_AT, WAIT, Connect
from workers.app import Worker
from workers.catalog import registered
from workers.inventory import Reservation, StockItem
from workers.metrics import WorkerMetrics
from workers.settings import WorkerSettings
from workers.store_memory import MemoryDocumentStore

# The same parametrised fixtures as the transport contract: every test runs on both adapters.
lazy_rabbit = contract.lazy_rabbit
transport = contract.transport
connect = contract.connect

FAST = RetryLimits(unexpected_attempts=3, backoff=0.001, backoff_max=0.01)
CASE_HEADER = "x-test-case"
SKU = "sku-1"


# --- waiting -----------------------------------------------------------------------------------


async def eventually[T](probe: Callable[[], Awaitable[T | None]], timeout: float = WAIT) -> T:
    """Poll ``probe`` until it returns something, failing the test after ``timeout``.

    The deadline is checked between probes: cancelling a basic.get in flight can wedge aio-pika.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (found := await probe()) is None:
        if loop.time() > deadline:
            raise AssertionError(f"nothing came within {timeout}s")
        await asyncio.sleep(0.02)
    return found


async def next_message(transport: Transport, queue: str, timeout: float = WAIT) -> WireMessage:
    """The next message of ``queue``, waiting for it to arrive."""
    return await eventually(lambda: transport.get(queue), timeout)


async def message_where(transport: Transport, queue: str,
                        wanted: Callable[[WireMessage], bool]) -> WireMessage:
    """The first message of ``queue`` that is ``wanted`` (others are taken and dropped)."""

    async def probe() -> WireMessage | None:
        m = await transport.get(queue)
        return m if m is not None and wanted(m) else None

    return await eventually(probe)


def for_saga(saga_id: str) -> Callable[[WireMessage], bool]:
    """Selects the messages of one saga."""
    return lambda m: m.correlation_id == saga_id


# --- the boundary with a scripted handler ------------------------------------------------------


@dataclass
class Guarded:
    """A boundary-wrapped handler consuming on a connection of its own."""

    consumer: Transport
    queue: str
    calls: list[WireMessage] = field(default_factory=list)
    dead_letters: list[tuple[str, str]] = field(default_factory=list)
    settled: asyncio.Queue[WireMessage] = field(default_factory=asyncio.Queue)

    async def next_settled(self, timeout: float = WAIT) -> WireMessage:
        """The next message the boundary is done with (acked, or dead-lettered and acked)."""
        return await asyncio.wait_for(self.settled.get(), timeout)


async def guard(connect: Connect, topology: Topology, behaviour: MessageHandler,
                dead_letter_topology: Topology | None = None) -> Guarded:
    """Consume the requests queue through a Boundary around ``behaviour``."""
    consumer = await connect()
    g = Guarded(consumer, topology.requests_queue)
    boundary = Boundary(consumer, dead_letter_topology or topology,
                        lambda queue, kind: g.dead_letters.append((queue, kind)), FAST)

    async def record(message: WireMessage) -> None:
        g.calls.append(message)
        await behaviour(message)

    wrapped = boundary.wrap(record)

    async def handle(delivery: Delivery) -> None:
        await wrapped(delivery)
        g.settled.put_nowait(delivery.message)

    await consumer.consume(g.queue, handle, prefetch=1)
    return g


def sample_request(**headers: HeaderValue) -> WireMessage:
    """An order request with every property set."""
    return WireMessage(body=b'{"customer_id": "c-1"}', message_id=new_message_id(),
                       correlation_id="order-1", type=ORDER_REQUESTED, timestamp=SENT_AT,
                       headers={SCHEMA_VERSION_HEADER: 1, "traceparent": "00-aa-bb-01", **headers})


def assert_dead_letter(dead: WireMessage, sent: WireMessage, queue: str, kind: str) -> str:
    """The dead-letter copy keeps body (the start of one over the limit, and its size) and
    properties, and says why; returns the reason."""
    if len(sent.body) > MAX_BODY_BYTES:
        assert dead.body == sent.body[:TRUNCATED_BODY_BYTES]
        assert dead.headers.get(ORIGINAL_SIZE_HEADER) == len(sent.body)
    else:
        assert dead.body == sent.body
        assert ORIGINAL_SIZE_HEADER not in dead.headers
    assert (dead.message_id, dead.correlation_id, dead.type) == (
        sent.message_id, sent.correlation_id, sent.type)
    assert dead.timestamp == sent.timestamp
    for key, value in sent.headers.items():
        assert dead.headers.get(key) == value, key
    assert dead.headers.get(ERROR_KIND_HEADER) == kind
    assert dead.headers.get(QUEUE_HEADER) == queue
    assert isinstance(dead.headers.get(TIME_HEADER), str)
    datetime.fromisoformat(str(dead.headers[TIME_HEADER]))
    reason = dead.headers.get(REASON_HEADER)
    assert isinstance(reason, str)
    assert reason.strip()
    assert len(reason) <= 1000
    return reason


@pytest.mark.parametrize("error", [CodecError("body is not JSON"),
                                   InvalidMessage("quantity must be positive")],
                         ids=["CodecError", "InvalidMessage"])
async def test_invalid_input_is_dead_lettered_once_and_acked(
        transport: Transport, topology: Topology, connect: Connect,
        error: CodecError | InvalidMessage) -> None:
    """Invalid input goes to the DLQ at once, as it was, with its reason; the original is acked."""

    async def refuse(message: WireMessage) -> None:
        raise error

    g = await guard(connect, topology, refuse)
    sent = sample_request(**{"x-custom": "kept"})
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sent)

    await g.next_settled()
    dead = await next_message(transport, dead_letter_queue(g.queue))
    reason = assert_dead_letter(dead, sent, g.queue, type(error).__name__)
    assert reason == error.reason
    assert len(g.calls) == 1
    assert g.dead_letters == [(g.queue, type(error).__name__)]
    await g.consumer.close()
    assert await transport.get(g.queue) is None
    assert await transport.get(dead_letter_queue(g.queue)) is None


async def test_unexpected_exception_is_retried_then_dead_lettered(
        transport: Transport, topology: Topology, connect: Connect) -> None:
    """A handler that keeps crashing gets ``unexpected_attempts`` tries, then a HandlerFailed DLQ copy."""

    async def crash(message: WireMessage) -> None:
        raise RuntimeError("boom")

    g = await guard(connect, topology, crash)
    sent = sample_request()
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sent)

    await g.next_settled()
    dead = await next_message(transport, dead_letter_queue(g.queue))
    reason = assert_dead_letter(dead, sent, g.queue, "HandlerFailed")
    assert "RuntimeError('boom')" in reason
    assert len(g.calls) == FAST.unexpected_attempts
    assert g.dead_letters == [(g.queue, "HandlerFailed")]
    await g.consumer.close()
    assert await transport.get(g.queue) is None


async def test_unexpected_exception_that_stops_is_not_dead_lettered(
        transport: Transport, topology: Topology, connect: Connect) -> None:
    """A crash that does not repeat within the attempts is retried in place and acked."""
    failures = iter([RuntimeError("once")])

    async def crash_once(message: WireMessage) -> None:
        if (e := next(failures, None)) is not None:
            raise e

    g = await guard(connect, topology, crash_once)
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sample_request())

    await g.next_settled()
    assert len(g.calls) == 2
    assert g.dead_letters == []
    await g.consumer.close()
    assert await transport.get(g.queue) is None
    assert await transport.get(dead_letter_queue(g.queue)) is None


class Flaky(TransientError):
    """A dependency that is down for a while."""


async def test_retryable_error_is_retried_in_place_until_it_succeeds(
        transport: Transport, topology: Topology, connect: Connect) -> None:
    """A TransientError is retried past the unexpected-error limit, within one delivery, never DLQ'd."""
    outages = FAST.unexpected_attempts + 2

    async def flaky(message: WireMessage) -> None:
        if len(g.calls) <= outages:
            raise Flaky("database down")

    g = await guard(connect, topology, flaky)
    sent = sample_request()
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sent)

    settled = await g.next_settled()
    assert settled.message_id == sent.message_id
    assert len(g.calls) == outages + 1
    assert g.dead_letters == []
    await g.consumer.close()
    assert g.settled.empty()  # one delivery: the broker never had to redeliver it
    assert await transport.get(g.queue) is None
    assert await transport.get(dead_letter_queue(g.queue)) is None


async def test_message_whose_dead_letter_publish_failed_is_delivered_again(
        transport: Transport, topology: Topology, connect: Connect,
        request: pytest.FixtureRequest) -> None:
    """If the DLQ copy cannot be published, the message goes back to the broker (nothing stuck)."""

    async def refuse(message: WireMessage) -> None:
        raise CodecError("bad body")

    missing_dlx = Topology(f"{topology.namespace}-missing")
    g = await guard(connect, topology, refuse, dead_letter_topology=missing_dlx)
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sample_request())

    await g.next_settled()
    await eventually(lambda: _called_twice(g), WAIT)


async def _called_twice(g: Guarded) -> bool | None:
    return True if len(g.calls) >= 2 else None


# --- the real processes ------------------------------------------------------------------------


@pytest.fixture
async def orchestrator(connect: Connect,
                       topology: Topology) -> AsyncIterator[tuple[Orchestrator, MemorySagaStore]]:
    """The real orchestrator (memory saga store) consuming requests and replies of this namespace."""
    # The test publishes replies itself, as whichever user its connection has: who may
    # answer is tested in test_reply_senders.
    settings = OrchestratorSettings(common=CommonSettings(
        store="memory", namespace=topology.namespace, prefetch=8), reply_users="any")
    registry = definitions(settings)
    store = MemorySagaStore(registry)
    running = build(settings, await connect(), store, registry,
                    OrchestratorMetrics(CollectorRegistry()))
    await running.start()
    yield running, store
    await running.stop()


@pytest.fixture
async def worker(connect: Connect,
                 topology: Topology) -> AsyncIterator[tuple[Worker, MemoryDocumentStore]]:
    """The real inventory worker, with stock of one SKU."""
    store = MemoryDocumentStore()
    await store.put(StockItem(id=SKU, on_hand=1000))
    settings = WorkerSettings(common=CommonSettings(store="memory", namespace=topology.namespace,
                                                    prefetch=8), service="inventory")
    running = Worker(settings=settings, spec=registered()["inventory"], transport=await connect(),
                     store=store, metrics=WorkerMetrics(CollectorRegistry()))
    await running.start()
    yield running, store
    await running.stop()


@dataclass(frozen=True, slots=True)
class Saga:
    """A running saga and the id of the command it waits on (for replies to refer to)."""

    saga_id: str = "no-saga-yet"
    command_id: str = "no-command-yet"


@dataclass(frozen=True, slots=True)
class Poison:
    """A message that must be dead-lettered, and what the DLQ copy must say."""

    name: str
    build: Callable[[Saga], WireMessage]
    reason: str
    kind: str = "CodecError"


# A message without a message_id cannot be produced through the transports: like aiormq,
# both adapters assign one. The codec's refusal of it is tested in tests/test_contracts.py.


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _padded(body: bytes) -> bytes:
    """Valid JSON just over the size limit."""
    return body + b" " * (MAX_BODY_BYTES + 1 - len(body))


# --- order requests: only the body is required ---


def order(order_id: str = "o-valid", **changes: Any) -> dict[str, Any]:
    """A valid order request body."""
    body: dict[str, Any] = {"order_id": order_id, "customer_id": "c-1",
                            "items": [{"sku": SKU, "quantity": 2, "unit_price": "12.50"}]}
    body.update(changes)
    return body


def line(quantity: Any = 2, unit_price: Any = "12.50") -> list[dict[str, Any]]:
    """One order line, possibly a bad one."""
    return [{"sku": SKU, "quantity": quantity, "unit_price": unit_price}]


def order_request(body: bytes, type_: str | None = ORDER_REQUESTED) -> WireMessage:
    """An order request as an outside publisher would send it."""
    return WireMessage(body=body, message_id=new_message_id(), correlation_id=None, type=type_,
                       timestamp=SENT_AT, headers={})


def _request_case(name: str, body: bytes, reason: str, kind: str = "CodecError",
                  type_: str | None = ORDER_REQUESTED) -> Poison:
    return Poison(name, lambda _: order_request(body, type_), reason, kind)


def _refused_case(name: str, body: bytes, reason: str) -> Poison:
    """A request that reads but is invalid: answered with INVALID_REQUEST, a copy kept."""
    return _request_case(name, body, reason, kind="Refused")


REQUEST_POISON = [
    _request_case("not-json", b"\x00not json{", "body is not JSON"),
    _request_case("empty-body", b"", "body is not JSON"),
    _request_case("json-array", b"[1, 2]", "not a JSON object"),
    _request_case("json-null", b"null", "not a JSON object"),
    _request_case("json-string", b'"order"', "not a JSON object"),
    _request_case("bad-order-id", _json(order(order_id="../etc/passwd")), "no valid order_id"),
    _request_case("unknown-type", _json(order()), "unexpected message type",
                  type_="order.exploded"),
    _request_case("over-size", _padded(_json(order())), "exceeds"),
    _refused_case("missing-customer", _json({"order_id": "o-bad", "items": line()}),
                  "customer_id"),
    _refused_case("missing-items", _json({"order_id": "o-bad", "customer_id": "c-1"}), "items"),
    _refused_case("no-items", _json(order(items=[])), "items"),
    _refused_case("too-many-items", _json(order(items=line() * 51)), "items"),
    _refused_case("unknown-field", _json(order(coupon="FREE")), "coupon"),
    _refused_case("zero-quantity", _json(order(items=line(quantity=0))), "quantity"),
    _refused_case("negative-quantity", _json(order(items=line(quantity=-3))), "quantity"),
    _refused_case("huge-quantity", _json(order(items=line(quantity=10**30))), "quantity"),
    _refused_case("fractional-quantity", _json(order(items=line(quantity=1.5))), "quantity"),
    _refused_case("zero-price", _json(order(items=line(unit_price="0"))), "unit_price"),
    _refused_case("negative-price", _json(order(items=line(unit_price="-12.50"))), "unit_price"),
    _refused_case("sub-cent-price", _json(order(items=line(unit_price="0.001"))), "unit_price"),
    _refused_case("huge-price", _json(order(items=line(unit_price="1e400"))), "unit_price"),
    _refused_case("nan-price", _json(order(items=line(unit_price="NaN"))), "unit_price"),
    _refused_case("absurd-total", _json(order(items=[
        {"sku": f"s{i}", "quantity": 10_000, "unit_price": "1000000"} for i in range(50)])),
        "exceeds"),
]


# --- participant replies: the full envelope is required ---


def reply(saga: Saga, **changes: Any) -> WireMessage:
    """A valid reply to the saga's pending command (``create_order`` succeeded)."""
    envelope = Envelope(message_id=new_message_id(), correlation_id=saga.saga_id,
                        causation_id=saga.command_id, message_type=STEP_REPLY, timestamp=SENT_AT)
    payload = StepReply(saga_id=saga.saga_id, step="create_order", operation=Operation.FORWARD,
                        outcome=Outcome.SUCCEEDED)
    return replace(encode(envelope, payload), **changes)


def _reply_body(**changes: Any) -> Callable[[Saga], WireMessage]:
    def make(saga: Saga) -> WireMessage:
        body = {"saga_id": saga.saga_id, "step": "create_order", "operation": "forward",
                "outcome": "succeeded", **changes}
        return reply(saga, body=_json(body))
    return make


def _reply_headers(set_: dict[str, HeaderValue] | None = None,
                   drop: str | None = None) -> Callable[[Saga], WireMessage]:
    def make(saga: Saga) -> WireMessage:
        m = reply(saga)
        merged = {**m.headers, **(set_ or {})}
        return replace(m, headers={k: v for k, v in merged.items() if k != drop})
    return make


REPLY_POISON = [
    Poison("not-json", lambda s: reply(s, body=b"\xff\xfe"), "Invalid JSON"),
    Poison("wrong-shape", lambda s: reply(s, body=b'{"ok": true}'), "invalid StepReply"),
    Poison("unknown-outcome", _reply_body(outcome="maybe"), "outcome"),
    Poison("unknown-type", lambda s: reply(s, type="saga.mystery"), "unexpected message type"),
    Poison("bad-message-id", lambda s: reply(s, message_id="has space"), "message_id"),
    Poison("no-correlation-id", lambda s: reply(s, correlation_id=None),
           "correlation_id is missing"),
    Poison("no-type", lambda s: reply(s, type=None), "type is missing"),
    Poison("no-timestamp", lambda s: reply(s, timestamp=None), "timestamp is missing"),
    Poison("no-schema-version", _reply_headers(drop=SCHEMA_VERSION_HEADER),
           "x-schema-version must be an integer"),
    Poison("text-schema-version", _reply_headers({SCHEMA_VERSION_HEADER: "1"}),
           "x-schema-version must be an integer"),
    Poison("bool-schema-version", _reply_headers({SCHEMA_VERSION_HEADER: True}),
           "x-schema-version must be an integer"),
    Poison("schema-version-99", _reply_headers({SCHEMA_VERSION_HEADER: 99}), "schema_version"),
    Poison("no-causation-id", _reply_headers(drop=CAUSATION_HEADER), "x-causation-id"),
    Poison("saga-id-mismatch", _reply_body(saga_id="someone-else"), "does not match"),
    Poison("unknown-saga", lambda s: reply(replace(s, saga_id="no-such-saga")),
           "no saga with id no-such-saga", kind="UnknownSaga"),
    Poison("over-size", lambda s: reply(s, body=_padded(reply(s).body)), "exceeds"),
]


# --- inventory commands ---


def reserve(saga_id: str = "o-cmd", quantity: int = 2, **changes: Any) -> WireMessage:
    """A valid inventory.reserve.prepare command."""
    envelope = Envelope(message_id=new_message_id(), correlation_id=saga_id,
                        message_type="inventory.reserve.prepare", timestamp=SENT_AT)
    params = ReserveStock(order_id=saga_id, lines=(StockLine(sku=SKU, quantity=quantity),))
    payload = StepCommand(saga_id=saga_id, step="reserve_stock",
                          params=params.model_dump(mode="json"))
    return replace(encode(envelope, payload), **changes)


def _reserve_lines(lines: Any) -> WireMessage:
    body = {"saga_id": "o-cmd", "step": "reserve_stock",
            "params": {"order_id": "o-cmd", "lines": lines}}
    return reserve(body=_json(body))


def _params_case(name: str, lines: Any, reason: str) -> Poison:
    return _command_case(name, lambda: _reserve_lines(lines), reason, kind="InvalidMessage")


def _command_case(name: str, make: Callable[[], WireMessage], reason: str,
                  kind: str = "CodecError") -> Poison:
    return Poison(name, lambda _: make(), reason, kind)


COMMAND_POISON = [
    _command_case("not-json", lambda: reserve(body=b"reserve 2 of sku-1"), "Invalid JSON"),
    _command_case("wrong-shape", lambda: reserve(body=b'{"saga_id": 7}'), "invalid StepCommand"),
    _command_case("other-service-command", lambda: reserve(type="payment.hold.prepare"),
                  "not a command of the inventory service", kind="InvalidMessage"),
    _command_case("unknown-command", lambda: reserve(type="inventory.explode"),
                  "not a command of the inventory service", kind="InvalidMessage"),
    _command_case("no-correlation-id", lambda: reserve(correlation_id=None),
                  "correlation_id is missing"),
    _command_case("text-schema-version", lambda: reserve(headers={SCHEMA_VERSION_HEADER: "one"}),
                  "x-schema-version must be an integer"),
    _command_case("schema-version-99", lambda: reserve(headers={SCHEMA_VERSION_HEADER: 99}),
                  "schema_version"),
    _command_case("saga-id-mismatch", lambda: reserve(correlation_id="o-other"),
                  "does not match its correlation_id", kind="InvalidMessage"),
    _command_case("over-size", lambda: reserve(body=_padded(reserve().body)), "exceeds"),
    _params_case("no-lines", [], "lines"),
    _params_case("zero-quantity", [{"sku": SKU, "quantity": 0}], "quantity"),
    _params_case("negative-quantity", [{"sku": SKU, "quantity": -1}], "quantity"),
    _params_case("absurd-quantity", [{"sku": SKU, "quantity": 2**63}], "quantity"),
]


# --- checks shared by the poison tests ---


def _with_case(message: WireMessage, name: str) -> WireMessage:
    return replace(message, headers={**message.headers, CASE_HEADER: name})


async def expect_dead_letter(transport: Transport, queue: str, sent: WireMessage, case: Poison,
                             timeout: float = WAIT) -> None:
    """The poison message arrives in the queue's DLQ, as sent, with the expected reason."""
    dead = await next_message(transport, dead_letter_queue(queue), timeout)
    assert dead.headers.get(CASE_HEADER) == case.name
    reason = assert_dead_letter(dead, sent, queue, case.kind)
    assert case.reason in reason, f"{case.name}: {reason!r}"
    assert case.kind != "Refused" or reason.startswith("INVALID_REQUEST: "), reason


async def expect_nothing_left(transport: Transport, queue: str, stop: Callable[[], Awaitable[None]]
                              ) -> None:
    """No further dead letters, and once the consumer stops, no poison message comes back.

    A valid message may: its effects show before its ack, and stopping hands it back.
    """
    assert await transport.get(dead_letter_queue(queue)) is None
    await stop()
    while (left := await transport.get(queue)) is not None:
        assert CASE_HEADER not in left.headers, f"poison {left.headers[CASE_HEADER]!r} not settled"


async def start_saga(transport: Transport, topology: Topology, store: MemorySagaStore,
                     order_id: str) -> Saga:
    """Request an order and return its saga with the id of its first command."""
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED,
                            order_request(_json(order(order_id))))
    sid = saga_id("order", order_id)
    command = await message_where(transport, topology.command_queue("order"), for_saga(sid))
    assert command.type == "order.create"
    assert await store.load(sid) is not None
    assert command.message_id is not None
    return Saga(sid, command.message_id)


async def expect_saga_advanced(transport: Transport, topology: Topology, store: MemorySagaStore,
                               saga: Saga) -> None:
    """The saga took the valid reply: create_order succeeded and stock is being reserved."""
    command = await message_where(transport, topology.command_queue("inventory"),
                                  for_saga(saga.saga_id))
    assert command.type == "inventory.reserve.prepare"
    record = await store.load(saga.saga_id)
    assert record is not None
    assert record.state.op("create_order", Operation.FORWARD).status is OpStatus.SUCCEEDED


async def expect_reply(transport: Transport, topology: Topology, command: WireMessage) -> None:
    """The worker handled the command and replied to it."""
    answer = await message_where(transport, topology.replies_queue,
                                 lambda m: m.headers.get(CAUSATION_HEADER) == command.message_id)
    assert StepReply.model_validate_json(answer.body).outcome is Outcome.SUCCEEDED


# --- poison, one message at a time -------------------------------------------------------------


@pytest.mark.parametrize("case", REQUEST_POISON, ids=lambda c: c.name)
async def test_poison_order_request_is_dead_lettered(
        transport: Transport, topology: Topology,
        orchestrator: tuple[Orchestrator, MemorySagaStore], case: Poison) -> None:
    """A bad order request lands in the requests DLQ; the next valid one still starts a saga."""
    running, store = orchestrator
    queue = topology.requests_queue
    sent = _with_case(case.build(Saga()), case.name)

    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sent)

    await expect_dead_letter(transport, queue, sent, case)
    await start_saga(transport, topology, store, "o-after")
    assert [r.state.saga_id for r in await store.find(None, 10)] == ["order:o-after"]
    await expect_nothing_left(transport, queue, running.stop)


@pytest.mark.parametrize("case", REPLY_POISON, ids=lambda c: c.name)
async def test_poison_reply_is_dead_lettered(
        transport: Transport, topology: Topology, request: pytest.FixtureRequest,
        orchestrator: tuple[Orchestrator, MemorySagaStore], case: Poison) -> None:
    """A bad reply lands in the replies DLQ without touching the saga; a valid one then advances it."""
    running, store = orchestrator
    queue = topology.replies_queue
    saga = await start_saga(transport, topology, store, "o-reply")
    sent = _with_case(case.build(saga), case.name)

    await transport.publish(topology.replies_exchange, "reply", sent)

    await expect_dead_letter(transport, queue, sent, case, WAIT)
    record = await store.load(saga.saga_id)
    assert record is not None
    assert record.state.op("create_order", Operation.FORWARD).status is OpStatus.WAITING
    await transport.publish(topology.replies_exchange, "reply", reply(saga))
    await expect_saga_advanced(transport, topology, store, saga)
    await expect_nothing_left(transport, queue, running.stop)


@pytest.mark.parametrize("case", COMMAND_POISON, ids=lambda c: c.name)
async def test_poison_command_is_dead_lettered(
        transport: Transport, topology: Topology, request: pytest.FixtureRequest,
        worker: tuple[Worker, MemoryDocumentStore], case: Poison) -> None:
    """A bad inventory command lands in its DLQ and reserves nothing; a valid one is then handled."""
    running, store = worker
    queue = topology.command_queue("inventory")
    sent = _with_case(case.build(Saga()), case.name)

    await transport.publish(topology.commands_exchange, "inventory", sent)

    await expect_dead_letter(transport, queue, sent, case, WAIT)
    assert await store.all(Reservation) == []
    assert await transport.get(topology.replies_queue) is None
    valid = reserve("o-valid")
    await transport.publish(topology.commands_exchange, "inventory", valid)
    await expect_reply(transport, topology, valid)
    assert [r.id for r in await store.all(Reservation)] == ["o-valid"]
    await expect_nothing_left(transport, queue, running.stop)


# --- poison, all at once -----------------------------------------------------------------------


async def collect_dead_letters(transport: Transport, queue: str, count: int) -> list[WireMessage]:
    """Exactly ``count`` dead letters of ``queue``, waiting for the last of them."""
    found: list[WireMessage] = []

    async def probe() -> bool | None:
        while len(found) < count and (m := await transport.get(dead_letter_queue(queue))):
            found.append(m)
        return True if len(found) == count else None

    await eventually(probe)
    return found


def assert_every_case(dead: list[WireMessage], cases: list[Poison]) -> None:
    """One dead letter per case, each with the reason that case expects."""
    by_case = {d.headers.get(CASE_HEADER): d for d in dead}
    assert sorted(map(str, by_case)) == sorted(c.name for c in cases)
    for case in cases:
        reason = str(by_case[case.name].headers.get(REASON_HEADER))
        assert case.reason in reason, f"{case.name}: {reason!r}"
        assert case.kind != "Refused" or reason.startswith("INVALID_REQUEST: "), reason
        assert by_case[case.name].headers.get(ERROR_KIND_HEADER) == case.kind, case.name


async def test_poison_requests_all_at_once_are_all_accounted_for(
        transport: Transport, topology: Topology,
        orchestrator: tuple[Orchestrator, MemorySagaStore]) -> None:
    """Every bad request of a concurrent burst is dead-lettered once; the valid ones become sagas."""
    running, store = orchestrator
    valid = [order_request(_json(order(f"o-{i}"))) for i in range(3)]
    poison = [_with_case(c.build(Saga()), c.name) for c in REQUEST_POISON]
    for m in [*poison[:10], valid[0], *poison[10:20], valid[1], *poison[20:], valid[2]]:
        await transport.publish(topology.orders_exchange, ORDER_REQUESTED, m)

    dead = await collect_dead_letters(transport, topology.requests_queue, len(poison))

    assert_every_case(dead, REQUEST_POISON)
    for i in range(3):
        await message_where(transport, topology.command_queue("order"),
                            for_saga(saga_id("order", f"o-{i}")))
    assert sorted(r.state.saga_id for r in await store.find(None, 100)) == [
        "order:o-0", "order:o-1", "order:o-2"]
    await expect_nothing_left(transport, topology.requests_queue, running.stop)


async def test_poison_replies_all_at_once_are_all_accounted_for(
        transport: Transport, topology: Topology,
        orchestrator: tuple[Orchestrator, MemorySagaStore]) -> None:
    """Every bad reply of a burst is dead-lettered once, and the one valid reply still counts."""
    running, store = orchestrator
    saga = await start_saga(transport, topology, store, "o-burst")
    cases = REPLY_POISON
    for case in cases:
        await transport.publish(topology.replies_exchange, "reply",
                                _with_case(case.build(saga), case.name))
    await transport.publish(topology.replies_exchange, "reply", reply(saga))

    dead = await collect_dead_letters(transport, topology.replies_queue, len(cases))

    assert_every_case(dead, cases)
    await expect_saga_advanced(transport, topology, store, saga)
    await expect_nothing_left(transport, topology.replies_queue, running.stop)


async def test_poison_commands_all_at_once_are_all_accounted_for(
        transport: Transport, topology: Topology,
        worker: tuple[Worker, MemoryDocumentStore]) -> None:
    """Every bad command of a burst is dead-lettered once, and the valid command is still handled."""
    running, store = worker
    queue = topology.command_queue("inventory")
    cases = COMMAND_POISON
    for case in cases:
        await transport.publish(topology.commands_exchange, "inventory",
                                _with_case(case.build(Saga()), case.name))
    valid = reserve("o-valid")
    await transport.publish(topology.commands_exchange, "inventory", valid)

    dead = await collect_dead_letters(transport, queue, len(cases))

    assert_every_case(dead, cases)
    await expect_reply(transport, topology, valid)
    assert [r.id for r in await store.all(Reservation)] == ["o-valid"]
    await expect_nothing_left(transport, queue, running.stop)


# --- poison the handlers let through -----------------------------------------------------------


async def test_request_with_an_unusable_message_id_is_refused_or_fully_processed(
        transport: Transport, topology: Topology, request: pytest.FixtureRequest,
        orchestrator: tuple[Orchestrator, MemorySagaStore]) -> None:
    """A request whose message id is no valid identifier is dead-lettered, or its saga really starts."""
    sent = replace(order_request(_json(order("o-space"))), message_id="has space")

    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sent)

    async def refused_or_started() -> WireMessage | None:
        dead = await transport.get(dead_letter_queue(topology.requests_queue))
        return dead or await transport.get(topology.command_queue("order"))

    outcome = await eventually(refused_or_started, WAIT)
    assert outcome.type in (ORDER_REQUESTED, "order.create")


async def test_an_outbox_entry_the_broker_refuses_does_not_block_a_restart(
        transport: Transport, topology: Topology, connect: Connect,
        orchestrator: tuple[Orchestrator, MemorySagaStore]) -> None:
    """Recovery re-publishes every outbox at start-up; an entry the broker refuses (its exchange
    is gone) stays for the relay, and the orchestrator still starts and re-sends the others."""
    running, store = orchestrator
    await running.stop()
    now = time.time()
    for sid, exchange in (("o-lost", f"{topology.namespace}.gone"),
                              ("o-kept", topology.commands_exchange)):
        data = OrderSagaData(order_id=sid, customer_id="c-1", items=(
            OrderItem(sku=SKU, quantity=1, unit_price=Decimal("1.00")),), total=Decimal("1.00"))
        decision = start(order_saga(), sid, data, now)
        command = decision.commands[0]
        entry = OutboxMessage(command.message_id, exchange, "order", command.type,
                              command.payload.model_dump_json(), sid, None, now)
        assert await store.create(decision.state, [entry])

    settings = OrchestratorSettings(common=CommonSettings(store="memory",
                                                          namespace=topology.namespace))
    restarted = build(settings, await connect(), store, definitions(settings),
                      OrchestratorMetrics(CollectorRegistry()))
    await restarted.start()
    try:
        resent = await next_message(transport, topology.command_queue("order"), WAIT)
    finally:
        await restarted.stop()
    assert resent.correlation_id == "o-kept"
    lost = await store.load("o-lost")
    assert lost is not None
    assert [m.exchange for m in lost.outbox] == [f"{topology.namespace}.gone"]


async def test_command_with_the_longest_valid_message_id_gets_its_reply(
        transport: Transport, topology: Topology, request: pytest.FixtureRequest,
        worker: tuple[Worker, MemoryDocumentStore]) -> None:
    """A command whose envelope is valid is answered, or refused before it changes anything."""
    _, store = worker
    command = replace(reserve("o-long"), message_id="m" * 200)

    await transport.publish(topology.commands_exchange, "inventory", command)

    dead_or_reply = await eventually(lambda: _reply_or_dead_letter(transport, topology), WAIT)
    if dead_or_reply.type == "inventory.reserve.prepare":
        assert await store.all(Reservation) == [], "refused, yet the stock was reserved"
    else:
        assert dead_or_reply.headers.get(CAUSATION_HEADER) == command.message_id


async def _reply_or_dead_letter(transport: Transport, topology: Topology) -> WireMessage | None:
    dead = await transport.get(dead_letter_queue(topology.command_queue("inventory")))
    return dead or await transport.get(topology.replies_queue)
