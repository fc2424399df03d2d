"""Least privilege on the real broker: each user can do its job and nothing else.

The vhost and users come from the generated definitions (tests/security/broker.py), exactly
what deploy/rabbitmq/definitions.json gives a deployment. A refused operation closes the
channel with ACCESS_REFUSED (403), which aiormq raises as ChannelAccessRefused.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.exceptions import ChannelAccessRefused, ProbableAuthenticationError

from catalog.rabbitmq import CLIENT_USER, OPERATOR_USER, ORCHESTRATOR_USER, definitions, render
from contracts.topology import service_user
from tests.security.broker import SecureVhost, rabbitmqctl
from tests.security.system import SecureSystem, system_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

INVENTORY = service_user("inventory")
Operation = Callable[[AbstractChannel], Awaitable[object]]


@asynccontextmanager
async def channel(broker: SecureVhost, user: str) -> AsyncIterator[AbstractChannel]:
    """A confirming channel of a fresh connection logged in as ``user``."""
    connection = await aio_pika.connect(broker.url(user))
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


async def publish(ch: AbstractChannel, exchange: str, key: str, body: bytes = b"{}") -> None:
    """Publish and wait for the broker's confirm (or its refusal)."""
    target = await ch.get_exchange(exchange, ensure=False)
    await target.publish(aio_pika.Message(body, message_id="m-1"), routing_key=key)


async def consume_one(ch: AbstractChannel, queue: str, timeout: float = 10.0) -> bytes:
    """basic.consume on a queue and return the first message's body."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()
        if not received.done():
            received.set_result(message.body)

    source = await ch.get_queue(queue, ensure=False)
    await source.consume(on_message)
    return await asyncio.wait_for(received, timeout)


async def refused(broker: SecureVhost, user: str, operation: Operation) -> str:
    """Run the operation as ``user``; return the broker's refusal text (fail if none)."""
    async with channel(broker, user) as ch:
        with pytest.raises(ChannelAccessRefused) as caught:
            await operation(ch)
    return str(caught.value)


async def test_worker_consumes_its_commands_and_publishes_replies(broker: SecureVhost) -> None:
    """A command sent by the orchestrator reaches the inventory worker, and its reply reaches
    the orchestrator's reply queue."""
    async with channel(broker, ORCHESTRATOR_USER) as orchestrator:
        await publish(orchestrator, "saga.commands", "inventory", b"command")
        async with channel(broker, INVENTORY) as worker:
            assert await consume_one(worker, "inventory.commands") == b"command"
            await publish(worker, "saga.replies", "reply", b"reply")
        assert await consume_one(orchestrator, "orchestrator.replies") == b"reply"


@pytest.mark.parametrize(("user", "queue"), [
    (INVENTORY, "payment.commands"),
    (INVENTORY, "orchestrator.replies"),
    (INVENTORY, "orchestrator.order.requests"),
    (INVENTORY, "inventory.commands.dlq"),
    (ORCHESTRATOR_USER, "inventory.commands"),
    (CLIENT_USER, "orchestrator.order.requests"),
    (CLIENT_USER, "orchestrator.admin"),
    (OPERATOR_USER, "orchestrator.admin"),
    (OPERATOR_USER, "inventory.commands"),
])
async def test_user_cannot_read_another_queue(broker: SecureVhost, user: str, queue: str) -> None:
    """Nobody can consume a queue that is not its own: not a worker, not the orchestrator,
    not a client."""
    text = await refused(broker, user, lambda ch: consume_one(ch, queue))
    assert f"ACCESS_REFUSED - access to queue '{queue}'" in text


@pytest.mark.parametrize(("user", "exchange", "key", "resource"), [
    (INVENTORY, "orders", "order.completed", "exchange 'orders'"),
    (INVENTORY, "saga.commands", "payment", "exchange 'saga.commands'"),
    (INVENTORY, "", "payment.commands", "exchange 'amq.default'"),
    (ORCHESTRATOR_USER, "orders", "order.requested", "topic 'order.requested'"),
    (CLIENT_USER, "orders", "order.completed", "topic 'order.completed'"),
    (CLIENT_USER, "saga.commands", "payment", "exchange 'saga.commands'"),
    (CLIENT_USER, "saga.admin", "admin.action", "exchange 'saga.admin'"),
    (INVENTORY, "saga.admin", "admin.action", "exchange 'saga.admin'"),
    (ORCHESTRATOR_USER, "saga.admin", "admin.action", "topic 'admin.action'"),
    (OPERATOR_USER, "saga.admin", "admin.result", "topic 'admin.result'"),
    (OPERATOR_USER, "orders", "order.requested", "exchange 'orders'"),
])
async def test_user_cannot_publish_outside_its_role(broker: SecureVhost, user: str, exchange: str,
                                                    key: str, resource: str) -> None:
    """A worker cannot fake an order outcome or send commands (not even straight to a queue
    through the default exchange); the orchestrator cannot request orders; a client cannot
    announce outcomes."""
    text = await refused(broker, user, lambda ch: publish(ch, exchange, key))
    assert f"ACCESS_REFUSED - access to {resource}" in text


@pytest.mark.parametrize("operation", ["declare", "delete own", "delete other", "declare exchange"])
async def test_worker_cannot_change_the_topology(broker: SecureVhost, operation: str) -> None:
    """A worker can neither declare nor delete queues or exchanges, its own included."""
    actions: dict[str, tuple[Operation, str]] = {
        "declare": (lambda ch: ch.declare_queue("inventory.evil", durable=True),
                    "queue 'inventory.evil'"),
        "delete own": (lambda ch: ch.queue_delete("inventory.commands"),
                       "queue 'inventory.commands'"),
        "delete other": (lambda ch: ch.queue_delete("payment.commands"), "queue 'payment.commands'"),
        "declare exchange": (lambda ch: ch.declare_exchange("saga.evil", "fanout"),
                             "exchange 'saga.evil'"),
    }
    action, resource = actions[operation]
    assert f"access to {resource}" in await refused(broker, INVENTORY, action)


async def test_orchestrator_announces_outcomes_to_client_queues(broker: SecureVhost) -> None:
    """The client binds a temporary queue to the outcomes, the orchestrator publishes one, and
    the client reads it."""
    async with channel(broker, CLIENT_USER) as client:
        queue = await client.declare_queue(exclusive=True, auto_delete=True)
        assert queue.name.startswith("amq.gen-")
        await queue.bind("orders", "order.completed")
        await queue.bind("orders", "order.failed")
        async with channel(broker, ORCHESTRATOR_USER) as orchestrator:
            await publish(orchestrator, "orders", "order.completed", b"outcome")
        assert await consume_one(client, queue.name) == b"outcome"


async def test_client_requests_orders_but_cannot_watch_them(broker: SecureVhost) -> None:
    """An order request from the client reaches the orchestrator's queue; binding to other
    clients' requests is refused."""
    async with channel(broker, CLIENT_USER) as client:
        await publish(client, "orders", "order.requested", b"request")
    async with channel(broker, ORCHESTRATOR_USER) as orchestrator:
        assert await consume_one(orchestrator, "orchestrator.order.requests") == b"request"

    async def snoop(ch: AbstractChannel) -> None:
        queue = await ch.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind("orders", "order.requested")

    assert "topic 'order.requested'" in await refused(broker, CLIENT_USER, snoop)


async def test_client_cancels_and_reads_refusals_but_cannot_watch_cancels(
        broker: SecureVhost) -> None:
    """A cancel from the client reaches the orchestrator's cancels queue, the orchestrator's
    refusal reaches the client, and binding to other clients' cancels is refused."""
    async with channel(broker, CLIENT_USER) as client:
        refusals = await client.declare_queue(exclusive=True, auto_delete=True)
        await refusals.bind("orders", "order.cancel_refused")
        await publish(client, "orders", "order.cancel", b"cancel")
        async with channel(broker, ORCHESTRATOR_USER) as orchestrator:
            assert await consume_one(orchestrator, "orchestrator.order.cancels") == b"cancel"
            await publish(orchestrator, "orders", "order.cancel_refused", b"refused")
        assert await consume_one(client, refusals.name) == b"refused"

    async def snoop(ch: AbstractChannel) -> None:
        queue = await ch.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind("orders", "order.cancel")

    assert "topic 'order.cancel'" in await refused(broker, CLIENT_USER, snoop)


async def test_client_cannot_name_queues(broker: SecureVhost) -> None:
    """The client may configure only the server-named queues RabbitMQ gives it."""
    text = await refused(broker, CLIENT_USER,
                         lambda ch: ch.declare_queue("outcomes", exclusive=True))
    assert "access to queue 'outcomes'" in text


async def test_imported_user_cannot_log_in_without_a_password(broker: SecureVhost) -> None:
    """A user as the definitions file creates it (empty password hash) cannot log in with
    any password, not even an empty one, until its password is set."""
    document: dict[str, Any] = definitions()
    user = {**document["users"][0], "name": f"saga-nopw-{secrets.token_hex(4)}"}
    grant = {**document["permissions"][0], "user": user["name"], "vhost": broker.vhost}
    rabbitmqctl("import_definitions", stdin=render({"users": [user], "permissions": [grant]}))
    try:
        await wait_for_user(user["name"])
        for password in ("", "guest", user["name"]):
            url = f"amqp://{user['name']}:{password}@{broker.host}/{broker.vhost}"
            with pytest.raises(ProbableAuthenticationError):
                await aio_pika.connect(url)
    finally:
        rabbitmqctl("delete_user", user["name"], check=False)


async def wait_for_user(name: str, timeout: float = 20.0) -> None:
    """Wait until an (asynchronous) definitions import created the user."""
    deadline = time.monotonic() + timeout
    while name not in rabbitmqctl("list_users").stdout.split():
        assert time.monotonic() < deadline, f"{name} was not imported"
        await asyncio.sleep(0.3)


async def test_system_runs_under_least_privilege(broker: SecureVhost, mongo_env: dict[str, str],
                                                 tag: str, tmp_path: Path) -> None:
    """The orchestrator and the five workers, each with only its own user and declaring
    nothing, complete an order the client placed."""
    system = SecureSystem(system_env(broker, mongo_env, f"sec_{tag}"), tmp_path / "logs", broker)
    try:
        await system.start()
        await system.seed({"apple": 5}, {"alice": 10_000})
        await system.order("lp-1", "alice", ("apple", 2, "3.50"))
        outcome = (await system.outcomes({"lp-1"}))["lp-1"]
        assert outcome.label == "completed", system.cluster.logs()
    finally:
        await system.stop()


async def test_only_the_operator_acts_and_reads_the_answers(broker: SecureVhost) -> None:
    """An operator's action reaches the orchestrator's admin queue; the orchestrator's
    answer reaches the operator's temporary queue; the operator cannot bind to actions."""
    async with channel(broker, OPERATOR_USER) as operator:
        answers = await operator.declare_queue(exclusive=True, auto_delete=True)
        await answers.bind("saga.admin", "admin.result")
        await publish(operator, "saga.admin", "admin.action", b"action")
        async with channel(broker, ORCHESTRATOR_USER) as orchestrator:
            assert await consume_one(orchestrator, "orchestrator.admin") == b"action"
            await publish(orchestrator, "saga.admin", "admin.result", b"answer")
        assert await consume_one(operator, answers.name) == b"answer"
    text = await refused(broker, OPERATOR_USER, lambda ch: _bind_temporary(ch, "admin.action"))
    assert "ACCESS_REFUSED - access to topic 'admin.action'" in text


async def _bind_temporary(ch: AbstractChannel, key: str) -> None:
    queue = await ch.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind("saga.admin", key)
