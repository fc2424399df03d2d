"""Dead letters: read without losing any, and validated again as their consumer would.

The auditor (``audit.dlq``) and the operator's dead-letter tool (``client.deadletters``)
both read dead-letter queues through this module.

AMQP 0-9-1 cannot browse a queue, so reading means taking the messages and putting them
back. On RabbitMQ (``RabbitDeadLetters``) every message is taken unacknowledged, then each
is published again through the dead-letter exchange with its queue's routing key (so it
lands where the broker itself would put it), and acknowledged only once the broker
confirmed the copy. A crash at any point therefore loses nothing: unacknowledged
messages return to the queue, and at worst one message is duplicated. Requeueing with a
nack instead would raise the delivery count of a quorum queue (on RabbitMQ 4 quorum
queues drop messages past the default delivery limit) and would change nothing else.
The queue keeps its order, except for dead letters arriving during the audit, which end
up among the copies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from contracts.admin import ADMIN_ACTION, AdminAction
from contracts.envelope import WireMessage, read_envelope, read_payload
from contracts.errors import SagaSystemError
from contracts.topology import Plan, Topology
from infra.adapters.rabbit import from_amqp
from infra.consumer import DEAD_LETTER_ID_HEADER
from infra.errors import InvalidMessage
from infra.transport import Transport
from orchestrator.start import StartMessage, read_cancel, read_request
from workers.catalog import registered
from workers.runtime import decode_command

# Read at most this many messages per queue; a larger queue is reported as not audited.
MAX_MESSAGES = 10_000


class TooManyDeadLetters(SagaSystemError):
    """A dead-letter queue too large to audit in memory."""


@runtime_checkable
class DeadLetterReader(Protocol):
    """Reads every message of a queue and leaves the queue as it was."""

    async def read(self, queue: str, exchange: str, routing_key: str) -> tuple[WireMessage, ...]:
        """The messages of ``queue``, each put back through ``exchange``/``routing_key``."""
        ...


class PortDeadLetters:
    """A reader over the transport port, for the in-memory broker and tests.

    The port's ``get`` acknowledges at once, so a crash between taking and putting back
    would lose messages: with RabbitMQ use ``RabbitDeadLetters``.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def read(self, queue: str, exchange: str, routing_key: str) -> tuple[WireMessage, ...]:
        """Take every message, then publish each back in order."""
        taken: list[WireMessage] = []
        while (message := await self._transport.get(queue)) is not None:
            taken.append(message)
        for message in taken:
            await self._transport.publish(exchange, routing_key, message)
        if len(taken) > MAX_MESSAGES:
            raise TooManyDeadLetters(f"{len(taken)} messages")
        return tuple(taken)


class RabbitDeadLetters:
    """A reader on its own RabbitMQ connection: take unacknowledged, copy back, then ack."""

    def __init__(self, url: str, connect_timeout: float = 5.0,
                 name: str = "sagactl-audit") -> None:
        self._url = url
        self._name = name
        self._timeout = connect_timeout
        self._connection: AbstractConnection | None = None

    async def connect(self) -> None:
        """Open the connection (raises when the broker cannot be reached)."""
        self._connection = await aio_pika.connect(
            self._url, timeout=self._timeout,
            client_properties={"connection_name": self._name})

    async def close(self) -> None:
        """Close the connection; anything not yet copied back returns to its queue."""
        if self._connection is not None:
            await self._connection.close()

    async def read(self, queue: str, exchange: str, routing_key: str) -> tuple[WireMessage, ...]:
        """See the module docstring for why it is done this way."""
        return tuple(m for m, _ in await self.sweep(queue, exchange, routing_key,
                                                     lambda m: Fate.KEEP))

    async def sweep(self, queue: str, exchange: str, routing_key: str,
                    choose: Callable[[WireMessage], Choice]) -> list[tuple[WireMessage, Choice]]:
        """Take every message of ``queue`` unacknowledged; keep each (copied back through
        ``exchange``/``routing_key`` with its id header), drop it, or move it elsewhere, as
        ``choose`` says; acknowledge each only once its copy is confirmed. Returns every
        message, with its id header, and what became of it."""
        if self._connection is None:
            raise RuntimeError("RabbitDeadLetters.connect() was not called")
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            source = await channel.declare_queue(queue, passive=True)
            count = source.declaration_result.message_count or 0
            if count > MAX_MESSAGES:
                raise TooManyDeadLetters(f"{count} messages")
            taken: list[AbstractIncomingMessage] = []
            while len(taken) < MAX_MESSAGES and (
                    incoming := await source.get(no_ack=False, fail=False)) is not None:
                taken.append(incoming)
            done = []
            for incoming in taken:
                read = from_amqp(incoming)
                ident = dead_letter_id(read, queue)
                headers = {**incoming.headers, DEAD_LETTER_ID_HEADER: ident}
                message = replace(read, headers={**read.headers, DEAD_LETTER_ID_HEADER: ident})
                choice = choose(message)
                if choice is Fate.KEEP:
                    target = await channel.get_exchange(exchange, ensure=False)
                    await target.publish(_copy(incoming, headers), routing_key, mandatory=True)
                elif isinstance(choice, Move):
                    target = await channel.get_exchange(choice.exchange, ensure=False)
                    await target.publish(_copy(incoming, choice.headers), choice.routing_key,
                                         mandatory=True)
                await incoming.ack()
                done.append((message, choice))
            return done
        finally:
            if not channel.is_closed:
                await channel.close()


class Fate(StrEnum):
    """What a sweep does with one dead letter, short of moving it."""

    KEEP = "keep"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Move:
    """Publish the dead letter to ``exchange``/``routing_key`` with ``headers`` instead."""

    exchange: str
    routing_key: str
    headers: dict[str, Any]


Choice = Fate | Move


def dead_letter_id(m: WireMessage, queue: str) -> str:
    """A dead letter's id: the header the consumer gave it, or (for one the broker
    dead-lettered itself) a digest of what identifies it, which stays the same across reads
    and is written into the header by the first one."""
    given = m.headers.get(DEAD_LETTER_ID_HEADER)
    if isinstance(given, str) and given:
        return given
    digest = hashlib.sha256()
    for part in (queue, m.message_id or "", str(m.headers.get("x-first-death-queue", "")),
                 str(m.timestamp or "")):
        digest.update(part.encode() + b"\0")
    digest.update(m.body)
    return digest.hexdigest()[:32]


def _copy(incoming: AbstractIncomingMessage, headers: Mapping[str, Any]) -> aio_pika.Message:
    # Body and properties as they were. user_id goes: the broker refuses a user_id other
    # than the publisher's own login.
    return aio_pika.Message(
        incoming.body, headers=dict(headers), content_type=incoming.content_type,
        content_encoding=incoming.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=incoming.priority,
        correlation_id=incoming.correlation_id, reply_to=incoming.reply_to,
        expiration=incoming.expiration, message_id=incoming.message_id,
        timestamp=incoming.timestamp, type=incoming.type, app_id=incoming.app_id)


def consumer_kind(t: Topology, queue: str, plan: Plan) -> str:
    """What a consumer queue receives: ``requests``, ``cancels``, ``replies``, ``admin``
    (operator actions) or a service's commands."""
    if queue in {t.requests_queue_of(e.definition) for e in plan.entries}:
        return "requests"
    if queue in {t.cancels_queue_of(e.definition) for e in plan.entries}:
        return "cancels"
    if queue == t.replies_queue:
        return "replies"
    if queue == t.admin_queue:
        return "admin"
    return next(s for s in plan.services if t.command_queue(s) == queue)


def recheck(source: str, start: StartMessage[Any] | None, m: WireMessage) -> str:
    """Validate a dead letter of a ``source`` queue as its consumer would now (replies
    aside: they are judged against the sagas). Returns the saga or business key it names;
    raises CodecError or InvalidMessage saying why it would be refused."""
    if source in ("requests", "cancels") and start is None:
        raise InvalidMessage(f"no start message is registered for this {source} queue")
    if source == "requests" and start is not None:
        request = read_request(start, m)
        if request.data is None:
            raise InvalidMessage(request.problem or "invalid request")
        return request.key
    if source == "cancels" and start is not None:
        cancel = read_cancel(start, m)
        if cancel.problem is not None:
            raise InvalidMessage(cancel.problem)
        return cancel.key
    if source == "admin":
        return action_saga(m) or _refuse("not an operator action")
    if source == "replies":
        raise InvalidMessage("a reply is judged against the sagas (sagactl audit)")
    return decode_command(registered()[source], read_envelope(m), m).saga_id


def _refuse(why: str) -> str:
    raise InvalidMessage(why)


def action_saga(m: WireMessage) -> str | None:
    # As on_admin: an action that reads is answered (even for an unknown saga), never
    # dead-lettered.
    envelope = read_envelope(m)
    if envelope.message_type != ADMIN_ACTION:
        return None
    return read_payload(m, AdminAction).saga_id


def command_saga(service: str, m: WireMessage) -> str | None:
    try:
        return decode_command(registered()[service], read_envelope(m), m).saga_id
    except InvalidMessage:
        return None
