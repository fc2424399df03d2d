"""Dead letters: the auditor finds valid messages among them and leaves every queue as it was."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aio_pika
import pytest

from audit.dlq import DEAD_LETTERS_EXPLAINED, DEAD_LETTERS_INVALID
from audit.invariants import audit
from client.dlq import RabbitDeadLetters
from client.orders import request_message
from contracts.commands import Operation
from contracts.envelope import WireMessage
from contracts.topology import Topology, dead_letter_queue
from infra.adapters.memory_bus import InMemoryBroker
from infra.adapters.rabbit import RabbitTransport
from infra.consumer import REASON_HEADER
from orchestrator.app import definitions
from tests.audit.conftest import Load
from tests.audit.test_audit import found
from tests.audit.world import (
    ORDERS,
    SETTINGS,
    TOPOLOGY,
    Dump,
    command_message,
    dead_lettered,
    reply_message,
)
from tests.plan import PLAN

pytestmark = pytest.mark.timeout(60)

Planted = list[tuple[str, WireMessage]]  # (source queue, dead letter), in publishing order


def plant(world: Dump, t: Topology) -> Planted:
    """Dead letters of every kind: rightly there or not, with a reason or without."""
    registry = definitions(SETTINGS)
    _, command = command_message(registry, world.saga("ok-1"), "notify_customer",
                                 Operation.FORWARD, 9)
    poison = WireMessage(body=b"\xff not json", message_id="poison-1", correlation_id="ok-1",
                         type="notification.send")
    notify, replies = t.command_queue("notification"), t.replies_queue
    lost = ORDERS["ok-2"].model_copy(update={"order_id": "lost-order"})
    return [
        (notify, dead_lettered(poison, notify, "invalid NotifyCustomer: body: Invalid JSON")),
        (notify, dead_lettered(command, notify, "handler failed: RuntimeError()")),  # valid
        (notify, dead_lettered(poison, notify, None)),  # no reason
        (replies, dead_lettered(reply_message("order:nobody", "create_order"), replies,
                                "no saga 'order:nobody'")),  # rightly: no such saga
        (replies, dead_lettered(reply_message("order:ok-2", "create_order"), replies,
                                "handler failed: TimeoutError()")),  # valid: ok-2 exists
        (t.requests_queue, dead_lettered(request_message(lost), t.requests_queue,
                                         "handler failed: StoreUnavailable()")),  # a lost order
    ]


EXPECTED = {(DEAD_LETTERS_INVALID, "order:ok-1"), (DEAD_LETTERS_EXPLAINED, "poison-1"),
            (DEAD_LETTERS_INVALID, "order:ok-2"), (DEAD_LETTERS_INVALID, "lost-order")}


def same(before: WireMessage, after: WireMessage) -> bool:
    """The same message: id, body, type, correlation and every header we set."""
    return ((before.message_id, before.body, before.type, before.correlation_id)
            == (after.message_id, after.body, after.type, after.correlation_id)
            and all(after.headers.get(k) == v for k, v in before.headers.items()))


async def test_valid_dead_letters_on_the_in_memory_broker(world: Dump, load_memory: Load) -> None:
    """Through the transport port: valid messages and a missing reason are reported, and each
    dead-letter queue keeps its messages in their order."""
    broker = InMemoryBroker()
    transport = broker.connect()
    await transport.declare(TOPOLOGY, PLAN)
    planted = plant(world, TOPOLOGY)
    for queue, message in planted:
        await transport.publish(TOPOLOGY.dead_letter_exchange, queue, message)
    sagas, services = await load_memory(world)
    report = await audit(sagas, services, transport, TOPOLOGY, now=world.taken_at + 1)
    assert found(report) == EXPECTED
    assert report.dead_letters == len(planted)
    for queue in {q for q, _ in planted}:
        kept = [entry.message for entry in broker.queues[dead_letter_queue(queue)].ready]
        wanted = [m for q, m in planted if q == queue]
        assert len(kept) == len(wanted)
        assert all(same(w, k) for w, k in zip(wanted, kept, strict=True))


@pytest.fixture
async def reader(amqp_url: str) -> AsyncIterator[RabbitDeadLetters]:
    """A dead-letter reader on its own connection."""
    dead_letters = RabbitDeadLetters(amqp_url)
    await dead_letters.connect()
    yield dead_letters
    await dead_letters.close()


async def drain(rabbit: RabbitTransport, queue: str) -> list[WireMessage]:
    """Take every message off a queue (the test is over with them)."""
    taken = []
    while (message := await rabbit.get(queue)) is not None:
        taken.append(message)
    return taken


async def test_valid_dead_letters_on_rabbitmq_are_found_and_kept_in_order(
        world: Dump, load_memory: Load, rabbit: RabbitTransport, topology: Topology,
        reader: RabbitDeadLetters) -> None:
    """On the real broker, two audits in a row report the same dead letters and leave every
    queue with the same messages, in the same order."""
    planted = plant(world, topology)
    for queue, message in planted:
        await rabbit.publish(topology.dead_letter_exchange, queue, message)
    sagas, services = await load_memory(world)
    for _ in range(2):
        report = await audit(sagas, services, reader, topology, now=world.taken_at + 1)
        assert found(report) == EXPECTED
        assert report.dead_letters == len(planted)
    for queue in {q for q, _ in planted}:
        kept = await drain(rabbit, dead_letter_queue(queue))
        wanted = [m for q, m in planted if q == queue]
        assert [m.message_id for m in kept] == [m.message_id for m in wanted]
        assert all(same(w, k) for w, k in zip(wanted, kept, strict=True))


async def test_a_command_dead_lettered_by_the_delivery_limit(
        world: Dump, load_memory: Load, rabbit: RabbitTransport, topology: Topology,
        reader: RabbitDeadLetters, amqp_url: str) -> None:
    """A valid command that RabbitMQ itself dead-lettered after too many deliveries (its
    consumer kept crashing) is explained by the broker's header, and reported as valid."""
    _, command = command_message(definitions(SETTINGS), world.saga("ok-3"), "reserve_stock",
                                 Operation.CONFIRM, 5)
    await rabbit.publish(topology.commands_exchange, "inventory", command)
    queue = topology.command_queue("inventory")
    await crash_until_dead_lettered(amqp_url, queue)
    sagas, services = await load_memory(world)
    report = await audit(sagas, services, reader, topology, now=world.taken_at + 1)
    assert found(report) == {(DEAD_LETTERS_INVALID, "order:ok-3")}
    assert "reason given: delivery_limit" in report.violations[0].detail
    [kept] = await drain(rabbit, dead_letter_queue(queue))
    assert kept.message_id == command.message_id
    assert json.loads(kept.body) == json.loads(command.body)
    assert REASON_HEADER not in kept.headers


async def crash_until_dead_lettered(amqp_url: str, queue: str) -> None:
    """Give the message back to the broker, as a crashing consumer does, until RabbitMQ
    moves it to the dead-letter queue."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=False)
        dlq = await channel.declare_queue(dead_letter_queue(queue), passive=True)
        for _ in range(200):
            incoming = await source.get(no_ack=False, fail=False)
            if incoming is not None:
                await incoming.nack(requeue=True)
                continue
            declared = await channel.declare_queue(dlq.name, passive=True)
            if declared.declaration_result.message_count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{queue}: never dead-lettered")
    finally:
        await connection.close()


async def test_a_namespace_without_queues_is_noted_not_fatal(
        world: Dump, load_memory: Load, reader: RabbitDeadLetters, tag: str) -> None:
    """Pointed at a namespace nobody declared, the audit says which queues it could not read
    and still checks the stores."""
    sagas, services = await load_memory(world)
    report = await audit(sagas, services, reader, Topology(f"nowhere-{tag}"),
                         now=world.taken_at + 1)
    assert report.violations == []
    assert report.dead_letters == 0
    # A requests and a cancels queue per start message, the replies and admin queues, a
    # command queue per service.
    assert len(report.notes) == 2 * len(PLAN.entries) + 2 + len(PLAN.services)
    assert all(note.endswith("not read: no such queue or exchange") for note in report.notes)
