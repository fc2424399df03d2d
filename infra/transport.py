"""The message transport port: publish with confirmation, consume with manual acks."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from contracts.envelope import WireMessage
from contracts.topology import Plan, Topology


class Delivery(Protocol):
    """One received message, to be acknowledged once handled."""

    @property
    def message(self) -> WireMessage:
        """The message as received."""
        ...

    @property
    def queue(self) -> str:
        """The queue it came from."""
        ...

    @property
    def redelivered(self) -> bool:
        """True when the broker delivered it before (to someone) without an ack."""
        ...

    async def ack(self) -> None:
        """Done with it: the broker forgets it."""
        ...

    async def requeue(self) -> None:
        """Give it back to the broker for another delivery."""
        ...


Handler = Callable[[Delivery], Coroutine[Any, Any, None]]


class Transport(Protocol):
    """A broker connection. ``publish`` returns only once the broker has the message."""

    @property
    def user(self) -> str | None:
        """The broker user this connection publishes as (stamped as ``user_id``)."""
        ...

    async def declare(self, topology: Topology, plan: Plan) -> None:
        """Declare every exchange, queue, binding and dead-letter queue of a plan
        (idempotent)."""
        ...

    async def undeclare(self, topology: Topology, plan: Plan) -> None:
        """Delete every queue and exchange of a namespace (demos and tests clean up)."""
        ...

    async def publish(self, exchange: str, routing_key: str, message: WireMessage, *,
                      must_route: bool = True) -> bool:
        """Publish a persistent message and wait for the broker's confirmation. A message no
        queue takes is a failure (PublishFailed) when it ``must_route``, as commands, replies
        and dead letters must; otherwise (an event nobody subscribed to) the result is
        False."""
        ...

    async def consume(self, queue: str, handler: Handler, prefetch: int) -> None:
        """Start delivering messages of ``queue`` to ``handler``, at most ``prefetch`` unacked."""
        ...

    async def cancel(self, queue: str) -> None:
        """Stop consuming ``queue`` on this connection. Messages being handled may still be
        acknowledged; a queue with a single active consumer moves on to its next one."""
        ...

    async def temporary_queue(self, exchange: str, routing_keys: tuple[str, ...]) -> str:
        """A private queue bound to ``exchange``, deleted when this connection closes."""
        ...

    async def get(self, queue: str) -> WireMessage | None:
        """Take one message off a queue (acknowledged at once), or None when empty."""
        ...

    async def depth(self, queue: str) -> int:
        """Messages ready in a queue (for gauges such as the dead-letter queue depth)."""
        ...

    async def close(self) -> None:
        """Stop consuming; unacknowledged messages return to their queues."""
        ...
