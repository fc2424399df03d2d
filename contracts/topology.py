"""Every exchange, queue and routing key name, derived in one place.

A namespace prefixes every name so that several independent deployments (or test
runs) can share one broker. The default, empty namespace gives the documented names.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.registry import ORDER_COMPLETED, ORDER_FAILED, ORDER_REQUESTED, SERVICES


@dataclass(frozen=True, slots=True)
class Topology:
    """Names for one namespace."""

    namespace: str = ""

    def _name(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base

    @property
    def orders_exchange(self) -> str:
        """Public topic exchange: order.requested in, order.completed / order.failed out."""
        return self._name("orders")

    @property
    def commands_exchange(self) -> str:
        """Direct exchange for commands; the routing key is the service name."""
        return self._name("saga.commands")

    @property
    def replies_exchange(self) -> str:
        """Direct exchange for participant replies."""
        return self._name("saga.replies")

    @property
    def dead_letter_exchange(self) -> str:
        """Direct exchange for dead letters; the routing key is the source queue."""
        return self._name("saga.dlx")

    @property
    def requests_queue(self) -> str:
        """The orchestrator's queue of order requests."""
        return self._name("orchestrator.requests")

    @property
    def replies_queue(self) -> str:
        """The orchestrator's queue of participant replies."""
        return self._name("orchestrator.replies")

    def command_queue(self, service: str) -> str:
        """The queue a participant service consumes."""
        return self._name(f"{service}.commands")

    def consumer_queues(self) -> tuple[str, ...]:
        """Every queue some process of the system consumes."""
        services = tuple(self.command_queue(s) for s in SERVICES)
        return (self.requests_queue, self.replies_queue, *services)


REQUESTED_KEY = ORDER_REQUESTED
COMPLETED_KEY = ORDER_COMPLETED
FAILED_KEY = ORDER_FAILED
REPLY_KEY = "reply"


def dead_letter_queue(queue: str) -> str:
    """The dead-letter queue that belongs to a consumer queue."""
    return f"{queue}.dlq"


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    """An exchange to declare."""

    name: str
    kind: str  # "topic" or "direct"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A durable queue, its bindings, and whether it is a dead-letter queue."""

    name: str
    bindings: tuple[tuple[str, str], ...]
    dead_letter_queue: bool = False


# A message that makes its consumer crash this many times goes to the dead-letter queue,
# even if the consumer never gets the chance to dead-letter it itself.
DELIVERY_LIMIT = 20


def layout(t: Topology) -> tuple[tuple[ExchangeSpec, ...], tuple[QueueSpec, ...]]:
    """Everything the system declares: exchanges, consumer queues and their DLQs."""
    exchanges = (
        ExchangeSpec(t.orders_exchange, "topic"),
        ExchangeSpec(t.commands_exchange, "direct"),
        ExchangeSpec(t.replies_exchange, "direct"),
        ExchangeSpec(t.dead_letter_exchange, "direct"),
    )
    consumers = [
        QueueSpec(t.requests_queue, ((t.orders_exchange, REQUESTED_KEY),)),
        QueueSpec(t.replies_queue, ((t.replies_exchange, REPLY_KEY),)),
        *(QueueSpec(t.command_queue(s), ((t.commands_exchange, s),)) for s in SERVICES),
    ]
    dlqs = [
        QueueSpec(dead_letter_queue(q.name), ((t.dead_letter_exchange, q.name),),
                  dead_letter_queue=True)
        for q in consumers
    ]
    return exchanges, (*consumers, *dlqs)


def queue_arguments(spec: QueueSpec, t: Topology) -> dict[str, str | int]:
    """The arguments a queue is declared with: the same at start-up and in the definitions file."""
    if spec.dead_letter_queue:
        return {"x-queue-type": "quorum"}
    # At-least-once dead-lettering (RabbitMQ 3.10+) needs reject-publish overflow.
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": t.dead_letter_exchange,
        "x-dead-letter-routing-key": spec.name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
