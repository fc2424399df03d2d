"""RabbitMQ adapter of the transport port, on aio-pika's robust (self-reconnecting) connection."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ConsumerTag,
)
from aio_pika.exceptions import AMQPError
from aiormq.abc import DeliveredMessage
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from contracts.envelope import HeaderValue, WireMessage
from contracts.topology import Plan, Topology, layout, queue_arguments
from infra.errors import BrokerUnavailable, PublishFailed
from infra.transport import Handler

log = logging.getLogger(__name__)


class RabbitDelivery:
    """A delivery from RabbitMQ."""

    __slots__ = ("_incoming", "message", "queue")

    def __init__(self, incoming: AbstractIncomingMessage, queue: str) -> None:
        self._incoming = incoming
        self.queue = queue
        self.message = from_amqp(incoming)

    @property
    def redelivered(self) -> bool:
        """True when the broker delivered it before."""
        return bool(self._incoming.redelivered)

    async def ack(self) -> None:
        """Acknowledge; harmless if the channel has gone (the broker redelivers)."""
        await self._incoming.ack()

    async def requeue(self) -> None:
        """Return the message to its queue."""
        await self._incoming.nack(requeue=True)


# aio-pika's (and RabbitMQ's) user when the URL names none.
DEFAULT_USER = "guest"


def amqp_user(url: str) -> str:
    """The user an AMQP URL logs in as."""
    return unquote(urlsplit(url).username or "") or DEFAULT_USER


class RabbitTransport:
    """Publishes on one confirming channel; each consumer gets its own channel and prefetch."""

    def __init__(self, url: str, *, connection_name: str, connect_timeout: float = 30.0,
                 publish_timeout: float = 30.0) -> None:
        self._url = url
        # Stamped on every message this connection publishes (see WireMessage.user_id).
        self.user = amqp_user(url)
        self._name = connection_name
        self._connect_timeout = connect_timeout
        # A confirm lost with a connection would otherwise be awaited forever, and with it
        # the saga's lock and the delivery being handled: a chaos run stalled that way.
        self._publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._consumer_channels: list[AbstractChannel] = []
        self._subscriptions: dict[str, list[tuple[AbstractQueue, ConsumerTag]]] = {}

    async def connect(self) -> None:
        """Connect, retrying while the broker starts (tenacity), then open the publisher."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((AMQPError, OSError, ConnectionError)),
            wait=wait_exponential(multiplier=0.2, max=3.0),
            stop=stop_after_delay(self._connect_timeout),
            reraise=True,
        ):
            with attempt:
                self._connection = await aio_pika.connect_robust(
                    self._url, client_properties={"connection_name": self._name}
                )
        self._publisher = await self._conn().channel(publisher_confirms=True)

    def _conn(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("RabbitTransport.connect() was not called")
        return self._connection

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._connection is not None and not self._connection.is_closed

    async def declare(self, topology: Topology, plan: Plan) -> None:
        """Declare durable exchanges and quorum queues, each with its dead-letter queue."""
        channel = await self._conn().channel()
        try:
            exchanges, queues = layout(topology, plan)
            for ex in exchanges:
                await channel.declare_exchange(ex.name, ex.kind, durable=True)
            for spec in queues:
                queue = await channel.declare_queue(
                    spec.name, durable=True, arguments=queue_arguments(spec, topology)
                )
                for exchange, key in spec.bindings:
                    await queue.bind(exchange, key)
        finally:
            await channel.close()

    async def undeclare(self, topology: Topology, plan: Plan) -> None:
        """Delete the namespace's queues and exchanges, messages included."""
        channel = await self._conn().channel()
        try:
            exchanges, queues = layout(topology, plan)
            for spec in queues:
                await channel.queue_delete(spec.name)
            for ex in exchanges:
                await channel.exchange_delete(ex.name)
        finally:
            await channel.close()

    async def publish(self, exchange: str, routing_key: str, message: WireMessage, *,
                      must_route: bool = True) -> bool:
        """Publish persistently (mandatory); raises PublishFailed if the broker did not
        confirm, or returned a message that ``must_route``. False when it returned another."""
        try:
            if self._publisher is not None and self._publisher.is_closed:
                # A refused publish (e.g. to a missing exchange) closes the channel; the
                # next publish must not pay for it.
                await self._publisher.reopen()
                self._exchanges.clear()
            target = await self._exchange(exchange)
            result = await target.publish(to_amqp(message, self.user), routing_key=routing_key,
                                          timeout=self._publish_timeout)
        except (AMQPError, ConnectionError, OSError, RuntimeError) as e:  # TimeoutError is an OSError
            raise PublishFailed(f"publish to {exchange}/{routing_key} failed: {e!r}") from e
        # A mandatory message no queue took comes back as itself instead of the broker's ack.
        if isinstance(result, DeliveredMessage):
            if must_route:
                raise PublishFailed(f"publish to {exchange}/{routing_key} was returned: no "
                                    "queue is bound for it")
            return False
        return True

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            if self._publisher is None:
                raise RuntimeError("RabbitTransport.connect() was not called")
            exchange = await self._publisher.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def consume(self, queue: str, handler: Handler, prefetch: int) -> None:
        """Consume with manual acks; the robust channel re-subscribes after a reconnect."""
        channel = await self._conn().channel()
        await channel.set_qos(prefetch_count=prefetch)
        self._consumer_channels.append(channel)
        # A (passive) declare, not get_queue: aio-pika's robust channel re-subscribes after a
        # reconnect only to queues it declared, and passive needs no configure permission.
        source = await channel.declare_queue(queue, passive=True)

        async def on_message(incoming: AbstractIncomingMessage) -> None:
            await handler(RabbitDelivery(incoming, queue))

        tag = await source.consume(on_message, no_ack=False)
        self._subscriptions.setdefault(queue, []).append((source, tag))

    async def cancel(self, queue: str) -> None:
        """basic.cancel this connection's consumers of ``queue``. Their channels stay open,
        so that deliveries being handled can still be acknowledged (until ``close``)."""
        for source, tag in self._subscriptions.pop(queue, []):
            try:
                await source.cancel(tag)
            except (AMQPError, ConnectionError, OSError, RuntimeError) as e:
                # A closed channel has no consumer left to cancel: nothing more to do.
                log.warning("cancelling the consumer of %s: %r", queue, e)

    async def temporary_queue(self, exchange: str, routing_keys: tuple[str, ...]) -> str:
        """An exclusive, auto-deleted queue with a server-chosen name."""
        channel = await self._conn().channel()
        self._consumer_channels.append(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in routing_keys:
            await queue.bind(exchange, key)
        return str(queue.name)

    async def get(self, queue: str) -> WireMessage | None:
        """basic.get one message and acknowledge it."""
        channel = await self._conn().channel()
        try:
            source = await channel.get_queue(queue, ensure=False)
            incoming = await source.get(no_ack=True, fail=False)
            return None if incoming is None else from_amqp(incoming)
        finally:
            await channel.close()

    async def depth(self, queue: str) -> int:
        """The queue's ready-message count, from a passive declare: it needs no configure
        permission, so least-privileged users may ask."""
        try:
            channel = await self._conn().channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
                return int(declared.declaration_result.message_count or 0)
            finally:
                await channel.close()
        except (AMQPError, ConnectionError, OSError, RuntimeError) as e:
            raise BrokerUnavailable(f"depth of {queue}: {e!r}") from e

    async def close(self) -> None:
        """Close consumers first so unacked messages go back, then the connection."""
        for channel in self._consumer_channels:
            if not channel.is_closed:
                await channel.close()
        self._consumer_channels.clear()
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()


def to_amqp(message: WireMessage, user: str) -> aio_pika.Message:
    """A persistent JSON AMQP message with the envelope in its properties, published by
    ``user`` (a copy of someone else's message is published under our own name)."""
    return aio_pika.Message(
        message.body,
        headers=dict(message.headers),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        user_id=user,
        reply_to=message.reply_to,
    )


def from_amqp(incoming: AbstractIncomingMessage) -> WireMessage:
    """The transport-neutral view of a received message."""
    return WireMessage(
        body=incoming.body,
        message_id=incoming.message_id,
        correlation_id=incoming.correlation_id,
        type=incoming.type,
        timestamp=incoming.timestamp,
        headers=_scalar_headers(incoming.headers or {}),
        user_id=incoming.user_id,
        reply_to=incoming.reply_to,
    )


def _scalar_headers(headers: Mapping[str, Any]) -> dict[str, HeaderValue]:
    # Broker-added headers such as x-death are tables, a string header that is not UTF-8
    # arrives as bytes, other clients may send floats: keep every value as text or an
    # integer, so that it can always be published again (to a dead-letter queue).
    out: dict[str, HeaderValue] = {}
    for key, value in headers.items():
        if isinstance(value, bytes):
            out[key] = value.decode("utf-8", "replace")
        elif value is None or isinstance(value, str | int | bool):
            out[key] = value
        else:
            out[key] = str(value)[:1000]
    return out
