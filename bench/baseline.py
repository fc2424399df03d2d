"""The baseline: the order saga's happy path driven straight on aio-pika, with no state store.

``python -m bench.baseline orchestrator`` and ``python -m bench.baseline worker <service>``.
The stages, their parallelism and the command types come from the product's own saga
definition (``order_saga().forward_phases``), so the shape cannot drift. Reliability
settings match the product: the queues are declared by the product's own code (quorum,
same arguments), every message is persistent and published with a confirm, every
delivery is acknowledged manually after its outgoing messages were confirmed, and the
prefetch is the product's ``SAGA_PREFETCH``; publishes are mandatory (aio-pika's default,
as the product's commands are), every message names its publisher (``user_id``, which the
broker checks), and a reply from another user than the workers' is refused, as the
product's reply check does. Unlike the product it stores nothing: a
dict holds each saga's stage until its outcome is published. It is deliberately naive:
a stage's commands are published one after the other, each awaiting its confirm.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage
from prometheus_client import CollectorRegistry

from bench.systems import order_services
from contracts.registry import ORDER_COMPLETED, STEP_REPLY
from contracts.topology import REPLY_KEY, Topology
from infra.adapters.rabbit import amqp_user
from infra.http import OpsServer
from infra.process import run_until_signalled
from infra.settings import CommonSettings, SettingsError, common_from_env

Stage = tuple[tuple[str, str], ...]  # (service, command type) sent in parallel


def happy_path() -> tuple[Stage, ...]:
    """The order saga's forward phases: what the product sends when nothing fails."""
    from sagas.order import order_saga

    return tuple(tuple((step.service, step.command_type(op)) for step, op in phase.ops)
                 for phase in order_saga().forward_phases)


def _message(body: dict[str, str], message_id: str, saga_id: str, kind: str,
             user: str) -> aio_pika.Message:
    return aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message_id,
                            correlation_id=saga_id, type=kind, user_id=user)


@dataclass
class Saga:
    """All the baseline remembers of a saga, in memory only."""

    customer_id: str
    total: str
    stage: int = 0
    outstanding: int = 0


class Node:
    """One process's broker connection: a confirming publisher and consumer channels."""

    def __init__(self, common: CommonSettings, name: str) -> None:
        self.common = common
        self.topology = Topology(common.namespace)
        # Every process of the baseline logs in as this one user: the only one replies may
        # come from.
        self.user = amqp_user(common.amqp_url.get_secret_value())
        self._name = name
        self._connection: AbstractConnection | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self.ready = False

    async def connect(self) -> None:
        """Connect and open the publisher channel (publisher confirms on)."""
        self._connection = await aio_pika.connect(
            self.common.amqp_url.get_secret_value(), client_properties={"connection_name": self._name})
        self._publisher = await self._connection.channel(publisher_confirms=True)

    async def exchange(self, name: str) -> AbstractExchange:
        """A publisher-side handle of an exchange declared by the product's code."""
        if name not in self._exchanges:
            self._exchanges[name] = await self._publisher.get_exchange(name, ensure=False)
        return self._exchanges[name]

    async def consume(self, queue: str, handler: Callable[[AbstractIncomingMessage], Awaitable[None]]
                      ) -> AbstractChannel:
        """Consume with manual acks on a channel of its own, with the product's prefetch."""
        assert self._connection is not None
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.common.prefetch)
        source = await channel.declare_queue(queue, passive=True)
        await source.consume(handler, no_ack=False)
        return channel

    async def close(self) -> None:
        """Close the connection (unacked deliveries go back to their queues)."""
        self.ready = False
        if self._connection is not None:
            await self._connection.close()


class Orchestrator(Node):
    """Sends each stage's commands, counts the replies, publishes the outcome."""

    def __init__(self, common: CommonSettings) -> None:
        super().__init__(common, "bench-baseline-orchestrator")
        self._stages = happy_path()
        self._sagas: dict[str, Saga] = {}

    async def start(self) -> None:
        """Connect, then consume replies and requests."""
        await self.connect()
        self._commands = await self.exchange(self.topology.commands_exchange)
        self._orders = await self.exchange(self.topology.orders_exchange)
        await self.consume(self.topology.replies_queue, self._on_reply)
        await self.consume(self.topology.requests_queue, self._on_request)
        self.ready = True

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        request = json.loads(message.body)
        total = sum((Decimal(i["unit_price"]) * i["quantity"] for i in request["items"]),
                    Decimal("0.00"))
        saga_id = request["order_id"]
        self._sagas[saga_id] = Saga(request["customer_id"], str(total))
        await self._send_stage(saga_id, self._sagas[saga_id])
        await message.ack()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        saga_id = message.correlation_id or ""
        saga = self._sagas.get(saga_id) if message.user_id == self.user else None
        if saga is not None:
            saga.outstanding -= 1
            if saga.outstanding == 0:
                saga.stage += 1
                await self._send_stage(saga_id, saga)
        await message.ack()

    async def _send_stage(self, saga_id: str, saga: Saga) -> None:
        if saga.stage == len(self._stages):
            del self._sagas[saga_id]
            body = {"order_id": saga_id, "customer_id": saga.customer_id, "total": saga.total}
            await self._orders.publish(
                _message(body, f"{saga_id}:outcome", saga_id, ORDER_COMPLETED, self.user),
                routing_key=ORDER_COMPLETED)
            return
        stage = self._stages[saga.stage]
        saga.outstanding = len(stage)
        for service, kind in stage:
            message_id = f"{saga_id}:{saga.stage}:{kind}"
            body = {"saga_id": saga_id, "step": kind, "order_id": saga_id}
            await self._commands.publish(_message(body, message_id, saga_id, kind, self.user),
                                         routing_key=service)


class Worker(Node):
    """Answers every command with a success reply, confirmed before the command is acked."""

    def __init__(self, common: CommonSettings, service: str) -> None:
        super().__init__(common, f"bench-baseline-{service}")
        self._service = service

    async def start(self) -> None:
        """Connect, then consume the service's command queue."""
        await self.connect()
        self._replies = await self.exchange(self.topology.replies_exchange)
        await self.consume(self.topology.command_queue(self._service), self._on_command)
        self.ready = True

    async def _on_command(self, message: AbstractIncomingMessage) -> None:
        saga_id = message.correlation_id or ""
        body = {"saga_id": saga_id, "command": message.type or "", "outcome": "succeeded"}
        await self._replies.publish(
            _message(body, f"{message.message_id}:reply", saga_id, STEP_REPLY, self.user),
            routing_key=REPLY_KEY)
        await message.ack()


async def _serve(node: Orchestrator | Worker) -> None:
    # /readyz tells the benchmark when the process consumes, as the product's processes do.
    async def ready() -> bool:
        return node.ready

    ops = OpsServer(CollectorRegistry(), ready)

    async def start() -> None:
        await ops.start(node.common.metrics_host, node.common.metrics_port)
        await node.start()

    async def stop() -> None:
        await node.close()
        await ops.stop()

    await run_until_signalled(start, stop)


def main(argv: list[str]) -> int:
    """``orchestrator`` or ``worker <service>``."""
    try:
        common = common_from_env(os.environ, "bench-baseline")
    except SettingsError as e:
        print(f"bench.baseline: {e}", file=sys.stderr)
        return 2
    if argv == ["orchestrator"]:
        node: Orchestrator | Worker = Orchestrator(common)
    elif len(argv) == 2 and argv[0] == "worker" and argv[1] in order_services():
        node = Worker(common, argv[1])
    else:
        print("usage: python -m bench.baseline orchestrator | worker <service>", file=sys.stderr)
        return 2
    asyncio.run(_serve(node))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
