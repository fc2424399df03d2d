"""One contract for every Transport adapter: the in-memory broker and RabbitMQ.

Each test runs twice, on a fresh in-memory broker and on the real broker in a namespace of
its own. Where RabbitMQ is known to differ, the rabbit case is a strict xfail naming the bug.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from contracts.envelope import HeaderValue, WireMessage, new_message_id
from contracts.registry import ORDER_COMPLETED, ORDER_FAILED, ORDER_REQUESTED
from contracts.topology import REPLY_KEY, Topology, partition_key
from infra.adapters.memory_bus import InMemoryBroker, InMemoryTransport
from infra.adapters.rabbit import RabbitTransport
from infra.errors import PublishFailed
from infra.transport import Delivery, Transport
from tests.plan import PLAN

BACKENDS = ("memory", "rabbit")
# Long enough for a loaded broker; only ever waited out in full when a test fails.
WAIT = 10.0
# AMQP timestamps have whole-second precision, so the contract is stated in whole seconds.
SENT_AT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

Connect = Callable[[], Awaitable[Transport]]


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def lazy_rabbit(request: pytest.FixtureRequest) -> RabbitTransport | None:
    """The ``rabbit`` fixture for the rabbit case only (an async fixture cannot set it up lazily)."""
    node = request.node
    wanted = node.callspec.params.get("transport") if isinstance(node, pytest.Function) else None
    return request.getfixturevalue("rabbit") if wanted == "rabbit" else None


@pytest.fixture(params=BACKENDS)
async def transport(lazy_rabbit: RabbitTransport | None,
                    topology: Topology) -> AsyncIterator[Transport]:
    """The transport under test, with this test's topology declared."""
    if lazy_rabbit is not None:
        yield lazy_rabbit
        return
    memory = InMemoryBroker().connect()
    await memory.declare(topology, PLAN)
    yield memory
    await memory.undeclare(topology, PLAN)
    await memory.close()


@pytest.fixture
async def connect(transport: Transport, request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    """Opens further connections to the same broker (one per consumer); all closed afterwards."""
    url = request.getfixturevalue("amqp_url") if isinstance(transport, RabbitTransport) else ""
    opened: list[Transport] = []

    async def open_connection() -> Transport:
        if isinstance(transport, InMemoryTransport):
            other: Transport = transport.broker.connect()
        else:
            rabbit = RabbitTransport(url, connection_name="pytest-consumer", connect_timeout=10)
            await rabbit.connect()
            other = rabbit
        opened.append(other)
        return other

    yield open_connection
    for other in opened:
        await other.close()


# --- helpers -----------------------------------------------------------------------------------


def message(type_: str = ORDER_REQUESTED, body: bytes = b'{"n": 1}',
            headers: dict[str, HeaderValue] | None = None) -> WireMessage:
    """A message with every property set, and a unique id."""
    return WireMessage(body=body, message_id=new_message_id(), correlation_id="order-1",
                       type=type_, timestamp=SENT_AT,
                       headers={"x-schema-version": 1} if headers is None else headers,
                       reply_to=partition_key(3))


def assert_same(received: WireMessage, sent: WireMessage) -> None:
    """Body and properties arrive as sent; the broker may only add headers of its own."""
    assert received.body == sent.body
    assert received.message_id == sent.message_id
    assert received.correlation_id == sent.correlation_id
    assert received.type == sent.type
    assert received.timestamp == sent.timestamp
    assert received.reply_to == sent.reply_to
    missing = {k: v for k, v in sent.headers.items() if received.headers.get(k, ...) != v}
    assert not missing, f"headers changed or lost: sent {missing}, got {dict(received.headers)}"


class Collector:
    """A consumer that hands every delivery to the test, acknowledging it first if asked."""

    def __init__(self, *, ack: bool = True) -> None:
        self.deliveries: asyncio.Queue[Delivery] = asyncio.Queue()
        self._ack = ack

    async def handle(self, delivery: Delivery) -> None:
        """The transport handler."""
        if self._ack:
            await delivery.ack()
        self.deliveries.put_nowait(delivery)

    async def next(self, timeout: float = WAIT) -> Delivery:
        """The next delivery, failing the test if none comes in time."""
        return await asyncio.wait_for(self.deliveries.get(), timeout)


async def drain(transport: Transport, queue: str) -> list[WireMessage]:
    """Take every ready message off a queue."""
    taken = []
    while (m := await transport.get(queue)) is not None:
        taken.append(m)
    return taken


# --- routing -----------------------------------------------------------------------------------


async def test_order_request_reaches_the_requests_queue_intact(
        transport: Transport, topology: Topology, connect: Connect) -> None:
    """order.requested on the orders exchange is delivered to the requests queue unchanged."""
    sent = message(headers={"x-schema-version": 1, "traceparent": "00-abc-def-01",
                            "x-text": "héllo", "x-int": -70_000, "x-big": 2**40, "x-bool": True,
                            "x-none": None})
    collector = Collector()
    await (await connect()).consume(topology.requests_queue, collector.handle, prefetch=10)

    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sent)

    delivery = await collector.next()
    assert delivery.queue == topology.requests_queue
    assert not delivery.redelivered
    assert_same(delivery.message, sent)


async def test_commands_are_routed_by_service_name(transport: Transport, topology: Topology) -> None:
    """The commands exchange is direct: each service's queue gets its own commands and no other."""
    sent = {s: message(type_=f"{s}.test") for s in PLAN.services}
    for service, m in sent.items():
        await transport.publish(topology.commands_exchange, service, m)

    for service, m in sent.items():
        received = await drain(transport, topology.command_queue(service))
        assert [r.message_id for r in received] == [m.message_id], service


async def test_command_for_inventory_does_not_reach_payment(
        transport: Transport, topology: Topology) -> None:
    """A command keyed ``inventory`` reaches the inventory queue only."""
    sent = message(type_="inventory.prepare")
    await transport.publish(topology.commands_exchange, "inventory", sent)

    assert await transport.get(topology.command_queue("payment")) is None
    received = await transport.get(topology.command_queue("inventory"))
    assert received is not None
    assert_same(received, sent)


async def test_replies_and_unknown_keys_are_routed_exactly(
        transport: Transport, topology: Topology) -> None:
    """Only the ``reply`` key reaches the replies queue; an unbound key reaches nothing."""
    assert not await transport.publish(topology.replies_exchange, "not-a-binding",
                                       message(type_="x"), must_route=False)
    sent = message(type_="saga.reply")
    await transport.publish(topology.replies_exchange, REPLY_KEY, sent)

    assert [m.message_id for m in await drain(transport, topology.replies_queue)] == [sent.message_id]


async def test_topic_wildcard_on_a_temporary_queue(transport: Transport, topology: Topology) -> None:
    """``order.*`` on the orders exchange matches one word only, and no other exchange's keys."""
    tmp = await transport.temporary_queue(topology.orders_exchange, ("order.*",))
    wanted = [message(type_=ORDER_COMPLETED), message(type_=ORDER_FAILED),
              message(type_=ORDER_REQUESTED)]
    for m in wanted:
        assert m.type is not None
        await transport.publish(topology.orders_exchange, m.type, m)
    for exchange, key in ((topology.orders_exchange, "order.completed.extra"),
                          (topology.orders_exchange, "orders.completed"),
                          (topology.commands_exchange, ORDER_COMPLETED)):
        assert not await transport.publish(exchange, key, message(), must_route=False)

    received = await drain(transport, tmp)

    assert [m.message_id for m in received] == [m.message_id for m in wanted]
    assert received[0].type == ORDER_COMPLETED


async def test_hash_wildcard_matches_zero_or_more_words(
        transport: Transport, topology: Topology) -> None:
    """``order.#`` matches ``order``, ``order.completed`` and ``order.a.b``, but not ``orders``."""
    tmp = await transport.temporary_queue(topology.orders_exchange, ("order.#",))
    keys = ["order", "order.completed", "order.a.b", "orders", "x.order"]
    for key in keys:
        await transport.publish(topology.orders_exchange, key, message(type_=key),
                                must_route=False)

    assert [m.type for m in await drain(transport, tmp)] == keys[:3]


# --- acknowledgements and flow control ---------------------------------------------------------


async def test_unacked_message_is_redelivered_after_its_consumer_closes(
        transport: Transport, topology: Topology, connect: Connect) -> None:
    """A delivery never acknowledged goes back to its queue, flagged as redelivered."""
    first_consumer = await connect()
    holder = Collector(ack=False)
    await first_consumer.consume(topology.requests_queue, holder.handle, prefetch=1)
    sent = message()
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sent)
    first = await holder.next()
    assert not first.redelivered

    await first_consumer.close()
    collector = Collector()
    await (await connect()).consume(topology.requests_queue, collector.handle, prefetch=1)

    again = await collector.next()
    assert again.redelivered
    assert_same(again.message, sent)


async def test_requeue_redelivers_the_message(
        transport: Transport, topology: Topology, connect: Connect) -> None:
    """``requeue()`` hands the message back; the next delivery is flagged and can be acked."""
    seen: asyncio.Queue[tuple[bool, WireMessage]] = asyncio.Queue()

    async def requeue_once(delivery: Delivery) -> None:
        redelivered = delivery.redelivered  # as the handler sees it on arrival
        if redelivered:
            await delivery.ack()
        else:
            await delivery.requeue()
        seen.put_nowait((redelivered, delivery.message))

    consumer = await connect()
    await consumer.consume(topology.requests_queue, requeue_once, prefetch=1)
    sent = message()
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sent)

    first_flag, _ = await asyncio.wait_for(seen.get(), WAIT)
    second_flag, again = await asyncio.wait_for(seen.get(), WAIT)
    assert (first_flag, second_flag) == (False, True)
    assert_same(again, sent)
    await consumer.close()
    assert await transport.get(topology.requests_queue) is None


async def test_prefetch_bounds_unacked_deliveries(
        transport: Transport, topology: Topology, connect: Connect) -> None:
    """With prefetch 2 and five messages queued, exactly two handlers run until one acks."""
    release, two_running = asyncio.Event(), asyncio.Event()
    running: list[str] = []
    peak = 0
    done: asyncio.Queue[str] = asyncio.Queue()

    async def slow(delivery: Delivery) -> None:
        nonlocal peak
        running.append(str(delivery.message.message_id))
        peak = max(peak, len(running))
        if len(running) == 2:
            two_running.set()
        await release.wait()
        running.remove(str(delivery.message.message_id))
        await delivery.ack()
        done.put_nowait(str(delivery.message.message_id))

    sent = [message() for _ in range(5)]
    for m in sent:
        await transport.publish(topology.orders_exchange, ORDER_REQUESTED, m)
    await (await connect()).consume(topology.requests_queue, slow, prefetch=2)

    await asyncio.wait_for(two_running.wait(), WAIT)
    await asyncio.sleep(0.2)  # room for a third delivery, which must not come
    assert len(running) == 2
    release.set()
    finished = [await asyncio.wait_for(done.get(), WAIT) for _ in sent]
    assert sorted(finished) == sorted(str(m.message_id) for m in sent)
    assert peak == 2


# --- get, failures and clean-up ----------------------------------------------------------------


async def test_get_returns_none_on_an_empty_queue(transport: Transport, topology: Topology) -> None:
    """basic.get on an empty queue is None, and a taken message is gone for good."""
    assert await transport.get(topology.requests_queue) is None
    sent = message()
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sent)

    received = await transport.get(topology.requests_queue)

    assert received is not None
    assert_same(received, sent)
    assert await transport.get(topology.requests_queue) is None


async def test_depth_counts_ready_messages(transport: Transport, topology: Topology) -> None:
    """depth() sees published messages and stops counting a message once it is taken."""
    assert await transport.depth(topology.requests_queue) == 0
    for _ in range(3):
        await transport.publish(topology.orders_exchange, ORDER_REQUESTED, message())
    assert await _eventually(lambda: transport.depth(topology.requests_queue), 3)
    assert await transport.get(topology.requests_queue) is not None
    assert await _eventually(lambda: transport.depth(topology.requests_queue), 2)


async def _eventually(read: Callable[[], Awaitable[int]], expected: int) -> bool:
    """The broker's counters lag a publish confirm by a moment."""
    for _ in range(50):
        if await read() == expected:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_publish_to_an_unknown_exchange_raises_publish_failed(
        transport: Transport, topology: Topology) -> None:
    """An exchange that does not exist is a PublishFailed, as it is never confirmed."""
    with pytest.raises(PublishFailed):
        await transport.publish(f"{topology.namespace}.no-such-exchange", "key", message())


async def test_a_failed_publish_does_not_break_the_next_one(
        transport: Transport, topology: Topology, request: pytest.FixtureRequest) -> None:
    """After a publish to an unknown exchange, the next publish to a real one succeeds."""
    with pytest.raises(PublishFailed):
        await transport.publish(f"{topology.namespace}.no-such-exchange", "key", message())
    sent = message()

    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, sent)

    received = await transport.get(topology.requests_queue)
    assert received is not None
    assert received.message_id == sent.message_id


async def test_message_without_message_id_is_given_one(
        transport: Transport, topology: Topology) -> None:
    """A message published without a message id gets a random one (aiormq does this, and the
    in-memory broker does the same), so every delivered message has an id."""
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, WireMessage(b"{}"))
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, WireMessage(b"{}"))

    first = await transport.get(topology.requests_queue)
    second = await transport.get(topology.requests_queue)

    assert first is not None
    assert second is not None
    assert first.message_id
    assert second.message_id
    assert first.message_id != second.message_id


async def test_undeclare_removes_the_namespace(transport: Transport, topology: Topology) -> None:
    """After undeclare the exchanges are gone, and the queues went with their messages."""
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED, message())

    await transport.undeclare(topology, PLAN)

    with pytest.raises(PublishFailed):
        await transport.publish(topology.orders_exchange, ORDER_REQUESTED, message())
    await transport.declare(topology, PLAN)
    assert await transport.get(topology.requests_queue) is None


async def test_a_message_no_queue_takes_is_a_failed_publish(
        transport: Transport, topology: Topology) -> None:
    """A command for a service whose queue is gone is returned by the broker: a publish that
    must reach a queue fails instead of being confirmed and lost; an event nobody
    subscribed to is merely reported as unrouted."""
    with pytest.raises(PublishFailed, match="returned"):
        await transport.publish(topology.commands_exchange, "no-such-service", message())
    assert not await transport.publish(topology.orders_exchange, "order.nobody", message(),
                                       must_route=False)
    assert await transport.publish(topology.commands_exchange, "inventory", message())


# --- partitions ----------------------------------------------------------------------------------


async def test_a_partition_queue_serves_one_consumer_until_it_cancels(
        transport: Transport, topology: Topology, connect: Connect) -> None:
    """Replies are routed by partition key; each partition queue delivers to its earliest
    consumer only (single active consumer), and to the next one once that one cancels,
    while the first may still acknowledge what it holds."""
    partitioned = replace(PLAN, partitions=2)
    await transport.declare(topology, partitioned)
    try:
        first, second = await connect(), await connect()
        held, took_over = Collector(ack=False), Collector()
        queue = topology.partition_queue(1)
        await first.consume(queue, held.handle, prefetch=10)
        await second.consume(queue, took_over.handle, prefetch=10)
        before = message()
        await transport.publish(topology.replies_exchange, partition_key(1), before)
        await transport.publish(topology.replies_exchange, partition_key(0), message())
        delivery = await held.next()
        assert_same(delivery.message, before)
        await first.cancel(queue)
        await delivery.ack()  # still possible after the cancel
        after = message()
        await transport.publish(topology.replies_exchange, partition_key(1), after)
        assert_same((await took_over.next()).message, after)
        await asyncio.sleep(0.2)
        assert held.deliveries.empty()
        assert took_over.deliveries.empty()
        assert await transport.depth(topology.partition_queue(0)) == 1
    finally:
        await transport.undeclare(topology, partitioned)
