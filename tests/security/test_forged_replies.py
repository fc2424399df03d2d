"""A participant cannot answer for another one.

Every participant user may publish to ``saga.replies``, and command ids are predictable
(``<saga>:<step>:<operation>:<attempt>``). Here the notification user forges a "succeeded"
for the payment step of a real saga, on the least-privilege vhost, against the orchestrator
(in-process, logged in as its own user, with SAGA_REPLY_USERS mapping each service to its
user). RabbitMQ refuses a ``user_id`` that is not the publisher's own login, so the forger
can only publish as itself, and the orchestrator refuses that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import aio_pika
import pytest
from aiormq.exceptions import ChannelPreconditionFailed
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from catalog.rabbitmq import CLIENT_USER, ORCHESTRATOR_USER
from client.orders import request_message
from contracts.commands import Operation, Outcome, StepReply
from contracts.envelope import Envelope, encode, new_message_id, utcnow
from contracts.orders import OrderItem, OrderRequested
from contracts.registry import ORDER_REQUESTED, STEP_REPLY
from contracts.topology import REPLY_KEY, Topology, dead_letter_queue, service_user
from engine.state import OpState, OpStatus
from infra.adapters.rabbit import RabbitTransport
from infra.settings import CommonSettings
from orchestrator.app import build, definitions
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.service import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.store_memory import MemorySagaStore
from tests.contract.test_boundary import eventually
from tests.plan import PLAN
from tests.security.broker import SecureVhost, rabbitmqctl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TOPOLOGY = Topology("")  # the definitions file's namespace
SAGA = "order:forged-1"
WAIT = 20.0


def reply_users(broker: SecureVhost) -> str:
    """SAGA_REPLY_USERS for this vhost, whose user names carry a suffix."""
    return ",".join(f"{s}={broker.users[service_user(s)]}" for s in PLAN.services)


async def as_user(broker: SecureVhost, base_user: str) -> RabbitTransport:
    """A transport logged in as one of the definitions' users."""
    transport = RabbitTransport(broker.url(base_user), connection_name=f"pytest-{base_user}")
    await transport.connect()
    return transport


@pytest.fixture
async def orchestrator(
        broker: SecureVhost) -> AsyncIterator[tuple[Orchestrator, MemorySagaStore,
                                                    OrchestratorMetrics]]:
    """The orchestrator as its own broker user, replies checked against each service's user."""
    settings = OrchestratorSettings(
        common=CommonSettings(amqp_url=SecretStr(broker.url(ORCHESTRATOR_USER)), store="memory",
                              namespace="", declare_topology=False),
        reply_users=reply_users(broker), step_timeout=60.0)
    registry = definitions(settings)
    store = MemorySagaStore(registry)
    metrics = OrchestratorMetrics(CollectorRegistry())
    running = build(settings, await as_user(broker, ORCHESTRATOR_USER), store, registry, metrics)
    await running.start()
    yield running, store, metrics
    await running.stop()


def forged_reply(step: str, command_id: str) -> aio_pika.Message:
    """A "succeeded" for ``step``'s first forward command, as the orchestrator expects it."""
    envelope = Envelope(message_id=new_message_id(), correlation_id=SAGA,
                        causation_id=command_id, message_type=STEP_REPLY, timestamp=utcnow())
    wire = encode(envelope, StepReply(saga_id=SAGA, step=step, operation=Operation.FORWARD,
                                      outcome=Outcome.SUCCEEDED))
    return aio_pika.Message(wire.body, message_id=wire.message_id,
                            correlation_id=wire.correlation_id, type=wire.type,
                            timestamp=wire.timestamp, headers=dict(wire.headers))


def dead_letters(broker: SecureVhost, queue: str) -> int:
    """Messages in a dead-letter queue (read as the broker's administrator)."""
    listed = rabbitmqctl("list_queues", "-p", broker.vhost, "name", "messages").stdout
    counts = dict(line.split("\t") for line in listed.splitlines() if "\t" in line)
    return int(counts.get(dead_letter_queue(queue), 0))


async def test_a_payment_reply_from_the_notification_user_is_refused_and_counted(
        broker: SecureVhost,
        orchestrator: tuple[Orchestrator, MemorySagaStore, OrchestratorMetrics]) -> None:
    _, store, metrics = orchestrator
    client = await as_user(broker, CLIENT_USER)
    order_worker = await as_user(broker, service_user("order"))
    notification = await as_user(broker, service_user("notification"))
    try:
        order = OrderRequested(order_id="forged-1", customer_id="c-1", items=(
            OrderItem(sku="SKU-A", quantity=1, unit_price=Decimal("5.00")),))
        await client.publish(TOPOLOGY.orders_exchange, ORDER_REQUESTED, request_message(order))

        # The order service answers its own command: accepted, the saga moves on to payment.
        command = await eventually(lambda: order_worker.get(TOPOLOGY.command_queue("order")),
                                   WAIT)
        assert command.message_id is not None
        honest = Envelope(message_id=new_message_id(), correlation_id=SAGA,
                          causation_id=command.message_id, message_type=STEP_REPLY,
                          timestamp=utcnow())
        await order_worker.publish(TOPOLOGY.replies_exchange, REPLY_KEY, encode(honest, StepReply(
            saga_id=SAGA, step="create_order", operation=Operation.FORWARD,
            outcome=Outcome.SUCCEEDED)))
        async def payment_waiting() -> OpState | None:
            record = await store.load(SAGA)
            hold = None if record is None else record.state.op("hold_funds", Operation.FORWARD)
            return hold if hold is not None and hold.status is OpStatus.WAITING else None

        hold = await eventually(payment_waiting, WAIT)
        assert hold.message_id is not None

        # The notification user forges the payment's answer, as itself: refused.
        connection = await aio_pika.connect(broker.url(service_user("notification")))
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            replies = await channel.get_exchange(TOPOLOGY.replies_exchange, ensure=False)
            await replies.publish(forged_reply("hold_funds", hold.message_id), REPLY_KEY)

        async def refused() -> int | None:
            return await asyncio.to_thread(dead_letters, broker, TOPOLOGY.replies_queue) or None

        assert await eventually(refused, WAIT) == 1
        assert metrics.replies_refused.labels("payment")._value.get() == 1
        record = await store.load(SAGA)
        assert record is not None
        assert record.state.op("hold_funds", Operation.FORWARD).status is OpStatus.WAITING

        # Nor can it claim to be the payment user: the broker closes its channel.
        connection = await aio_pika.connect(broker.url(service_user("notification")))
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            replies = await channel.get_exchange(TOPOLOGY.replies_exchange, ensure=False)
            message = forged_reply("hold_funds", hold.message_id)
            message.user_id = broker.users[service_user("payment")]
            with pytest.raises(ChannelPreconditionFailed, match="user_id"):
                await replies.publish(message, REPLY_KEY)
    finally:
        for transport in (client, order_worker, notification):
            await transport.close()
