"""In-memory adapter of the transport port: the embedded mode and the test harness.

It keeps the broker semantics the system relies on: topic and direct routing,
manual acks, prefetch, redelivery of unacknowledged messages when a consumer
closes, and dead-lettering after too many deliveries.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field, replace

from contracts.envelope import WireMessage
from contracts.topology import DELIVERY_LIMIT, Plan, Topology, dead_letter_queue, layout
from infra.errors import PublishFailed
from infra.transport import Handler


@dataclass(slots=True)
class _Entry:
    message: WireMessage
    deliveries: int = 0


@dataclass(slots=True)
class _Queue:
    name: str
    dead_letter: str | None
    ready: deque[_Entry] = field(default_factory=deque)
    waiters: list[asyncio.Event] = field(default_factory=list)
    single_active: bool = False
    consumers: list[_Consumer] = field(default_factory=list)  # in the order they subscribed

    def serves(self, consumer: _Consumer) -> bool:
        """Whether ``consumer`` may take messages now: with a single active consumer, only
        the earliest subscriber still there does."""
        return not self.single_active or self.consumers[:1] == [consumer]

    def wake(self) -> None:
        for waiter in self.waiters:
            waiter.set()

    def put(self, entry: _Entry, front: bool = False) -> None:
        if front:
            self.ready.appendleft(entry)
        else:
            self.ready.append(entry)
        self.wake()


class MemoryDelivery:
    """A delivery from the in-memory broker."""

    __slots__ = ("_consumer", "_entry", "_settled", "message", "queue")

    def __init__(self, consumer: _Consumer, entry: _Entry) -> None:
        self._consumer = consumer
        self._entry = entry
        self._settled = False
        self.message = entry.message
        self.queue = consumer.queue.name

    @property
    def redelivered(self) -> bool:
        """True from the second delivery on."""
        return self._entry.deliveries > 1

    async def ack(self) -> None:
        """Forget the message."""
        self._settle()

    async def requeue(self) -> None:
        """Return the message to the head of its queue."""
        if self._settle():
            self._consumer.queue.put(self._entry, front=True)

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        self._consumer.unacked.discard(self)
        self._consumer.slots.release()
        return True


@dataclass(eq=False)
class _Consumer:
    queue: _Queue
    handler: Handler
    slots: asyncio.Semaphore
    unacked: set[MemoryDelivery] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    handlers: set[asyncio.Task[None]] = field(default_factory=set)


class InMemoryBroker:
    """Exchanges and queues in this process, shared by every connection to it."""

    def __init__(self) -> None:
        self.exchanges: dict[str, str] = {}
        self.bindings: dict[str, list[tuple[str, str]]] = {}
        self.queues: dict[str, _Queue] = {}
        self.published = 0

    def connect(self, user: str | None = None) -> InMemoryTransport:
        """A new connection (one per component, as each process has its own), logged in as
        ``user`` when given."""
        return InMemoryTransport(self, user)

    def declare(self, topology: Topology, plan: Plan) -> None:
        """Create exchanges, queues and bindings (idempotent)."""
        exchanges, queues = layout(topology, plan)
        for ex in exchanges:
            self.exchanges.setdefault(ex.name, ex.kind)
            self.bindings.setdefault(ex.name, [])
        for spec in queues:
            dlq = None if spec.dead_letter_queue else dead_letter_queue(spec.name)
            self.queues.setdefault(spec.name, _Queue(spec.name, dlq,
                                                     single_active=spec.single_active))
            for exchange, key in spec.bindings:
                self.bind(exchange, key, spec.name)

    def bind(self, exchange: str, key: str, queue: str) -> None:
        """Route messages of ``exchange`` matching ``key`` to ``queue``."""
        if (key, queue) not in self.bindings[exchange]:
            self.bindings[exchange].append((key, queue))

    def undeclare(self, topology: Topology, plan: Plan) -> None:
        """Forget the namespace's queues and exchanges."""
        exchanges, queues = layout(topology, plan)
        for spec in queues:
            self.queues.pop(spec.name, None)
        for ex in exchanges:
            self.exchanges.pop(ex.name, None)
            self.bindings.pop(ex.name, None)

    def publish(self, exchange: str, routing_key: str, message: WireMessage) -> bool:
        """Route to every bound queue; an unknown exchange is an error, as on RabbitMQ.
        False when no queue took it."""
        if exchange not in self.bindings:
            raise PublishFailed(f"no exchange {exchange!r}")
        self.published += 1
        if not message.message_id:
            # As aiormq does: every published message has an id.
            message = replace(message, message_id=uuid.uuid4().hex)
        kind = self.exchanges[exchange]
        routed = False
        for key, queue in self.bindings[exchange]:
            if routes(kind, key, routing_key):
                self.queues[queue].put(_Entry(message))
                routed = True
        return routed

    def depth(self, queue: str) -> int:
        """Ready messages in a queue."""
        return len(self.queues[queue].ready)


class InMemoryTransport:
    """One connection to an InMemoryBroker; closing it stops only its own consumers."""

    def __init__(self, broker: InMemoryBroker | None = None, user: str | None = None) -> None:
        self.broker = broker or InMemoryBroker()
        self.user = user  # stamped on what it publishes, as RabbitMQ's user_id
        self._consumers: list[_Consumer] = []
        self._temporary: list[str] = []

    async def declare(self, topology: Topology, plan: Plan) -> None:
        """Create exchanges, queues and bindings (idempotent)."""
        self.broker.declare(topology, plan)

    async def undeclare(self, topology: Topology, plan: Plan) -> None:
        """Forget the namespace's queues and exchanges."""
        self.broker.undeclare(topology, plan)

    async def publish(self, exchange: str, routing_key: str, message: WireMessage, *,
                      must_route: bool = True) -> bool:
        """Route to every bound queue (the broker 'confirms' at once)."""
        routed = self.broker.publish(exchange, routing_key, replace(message, user_id=self.user))
        if not routed and must_route:
            raise PublishFailed(f"publish to {exchange}/{routing_key} was returned: "
                                "no queue is bound for it")
        return routed

    async def consume(self, queue: str, handler: Handler, prefetch: int) -> None:
        """Deliver to ``handler`` concurrently, at most ``prefetch`` unacknowledged."""
        consumer = _Consumer(self.broker.queues[queue], handler, asyncio.Semaphore(prefetch))
        consumer.queue.consumers.append(consumer)
        consumer.task = asyncio.create_task(self._pump(consumer), name=f"consume:{queue}")
        self._consumers.append(consumer)

    async def cancel(self, queue: str) -> None:
        """Stop delivering ``queue``'s messages here; those being handled finish."""
        for consumer in [c for c in self._consumers if c.queue.name == queue]:
            self._consumers.remove(consumer)
            self._unsubscribe(consumer)

    @staticmethod
    def _unsubscribe(consumer: _Consumer) -> None:
        if consumer.task is not None:
            consumer.task.cancel()
        if consumer in consumer.queue.consumers:
            consumer.queue.consumers.remove(consumer)
        consumer.queue.wake()  # the next single active consumer, if any, takes over

    async def temporary_queue(self, exchange: str, routing_keys: tuple[str, ...]) -> str:
        """A private queue bound to ``exchange``, deleted when this connection closes."""
        name = f"tmp.{id(self)}.{len(self._temporary)}"
        self.broker.queues[name] = _Queue(name, None)
        for key in routing_keys:
            self.broker.bind(exchange, key, name)
        self._temporary.append(name)
        return name

    async def get(self, queue: str) -> WireMessage | None:
        """Take the next ready message, or None."""
        ready = self.broker.queues[queue].ready
        return ready.popleft().message if ready else None

    async def depth(self, queue: str) -> int:
        """Ready messages in a queue."""
        return self.broker.depth(queue)

    async def close(self) -> None:
        """Stop this connection's consumers; their unacknowledged messages go back."""
        for consumer in self._consumers:
            self._unsubscribe(consumer)
            for task in consumer.handlers:
                task.cancel()
            await asyncio.gather(*consumer.handlers, return_exceptions=True)
            for delivery in list(consumer.unacked):
                await delivery.requeue()
        self._consumers.clear()
        for name in self._temporary:
            self.broker.queues.pop(name, None)
            for bindings in self.broker.bindings.values():
                bindings[:] = [b for b in bindings if b[1] != name]
        self._temporary.clear()

    async def _pump(self, consumer: _Consumer) -> None:
        queue = consumer.queue
        wake = asyncio.Event()
        queue.waiters.append(wake)
        try:
            while True:
                await consumer.slots.acquire()
                while not queue.ready or not queue.serves(consumer):
                    wake.clear()
                    await wake.wait()
                entry = queue.ready.popleft()
                entry.deliveries += 1
                if entry.deliveries > DELIVERY_LIMIT + 1 and queue.dead_letter:
                    consumer.slots.release()
                    # As RabbitMQ does, say why in the headers.
                    headers = {**entry.message.headers, "x-first-death-reason": "delivery_limit",
                               "x-first-death-queue": queue.name}
                    dead = replace(entry.message, headers=headers)
                    self.broker.queues[queue.dead_letter].put(_Entry(dead))
                    continue
                delivery = MemoryDelivery(consumer, entry)
                consumer.unacked.add(delivery)
                task = asyncio.create_task(consumer.handler(delivery))
                consumer.handlers.add(task)
                task.add_done_callback(consumer.handlers.discard)
        finally:
            queue.waiters.remove(wake)


def routes(kind: str, binding_key: str, routing_key: str) -> bool:
    """AMQP routing: equality for direct exchanges, ``*`` and ``#`` wildcards for topics."""
    if kind == "direct":
        return binding_key == routing_key
    return _topic(tuple(binding_key.split(".")), tuple(routing_key.split(".")))


def _topic(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _topic(rest, words[1:])
