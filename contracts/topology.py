"""Every exchange, queue and routing key name, derived in one place.

A namespace prefixes every name so that several independent deployments (or test
runs) can share one broker. The default, empty namespace gives the documented names.

What exists depends on what is registered: each saga definition with a start message
has a public topic exchange and a requests queue of the orchestrator's, each participant
service a command queue. ``Plan`` lists them; ``layout`` turns a plan into declarations.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from contracts.admin import ADMIN_ACTION
from contracts.registry import (
    ORDER_CANCEL,
    ORDER_CANCEL_REFUSED,
    ORDER_COMPLETED,
    ORDER_FAILED,
    ORDER_REQUESTED,
    ORDER_RESOLVED,
)

REPLY_KEY = "reply"
# The reply key of one partition of the orchestrator's work (orchestrator.partitions).
_PARTITION_KEY = re.compile(r"reply\.p(0|[1-9][0-9]{0,3})")
MAX_PARTITIONS = 1024
# A message that makes its consumer crash this many times goes to the dead-letter queue,
# even if the consumer never gets the chance to dead-letter it itself.
DELIVERY_LIMIT = 20


@dataclass(frozen=True, slots=True)
class Entry:
    """A public way into the platform: a definition's start message and its outcomes."""

    definition: str
    exchange: str  # without the namespace
    requested: str  # the start routing key
    outcomes: tuple[str, ...]  # routing keys of the events it publishes
    cancel: str | None = None  # the routing key of cancel requests, if it can be cancelled


@dataclass(frozen=True, slots=True)
class Plan:
    """What is registered: the entries and the participant services."""

    entries: tuple[Entry, ...] = ()
    services: tuple[str, ...] = ()
    partitions: int = 0  # queues the orchestrators' work on sagas is split into (0: one)

    def merged(self, other: Plan) -> Plan:
        """Both plans' entries and services, each once (and the larger partition count)."""
        entries = {e.definition: e for e in (*self.entries, *other.entries)}
        return Plan(tuple(entries.values()),
                    tuple(dict.fromkeys((*self.services, *other.services))),
                    max(self.partitions, other.partitions))


# The order saga's public contract, shipped with the product.
ORDER_ENTRY = Entry("order", "orders", ORDER_REQUESTED,
                    (ORDER_COMPLETED, ORDER_FAILED, ORDER_CANCEL_REFUSED, ORDER_RESOLVED),
                    ORDER_CANCEL)


@dataclass(frozen=True, slots=True)
class Topology:
    """Names for one namespace."""

    namespace: str = ""

    def _name(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base

    def exchange(self, base: str) -> str:
        """A public topic exchange: ``orders``, ``transfers``, ``transactions``."""
        return self._name(base)

    def requests_queue_of(self, definition: str) -> str:
        """The orchestrator's queue of one definition's start messages."""
        return self._name(f"orchestrator.{definition}.requests")

    def cancels_queue_of(self, definition: str) -> str:
        """The orchestrator's queue of one definition's cancel requests."""
        return self._name(f"orchestrator.{definition}.cancels")

    @property
    def orders_exchange(self) -> str:
        """The order saga's public exchange (order.requested in, outcomes out)."""
        return self.exchange(ORDER_ENTRY.exchange)

    @property
    def requests_queue(self) -> str:
        """The orchestrator's queue of order requests."""
        return self.requests_queue_of(ORDER_ENTRY.definition)

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
    def admin_exchange(self) -> str:
        """Topic exchange of operator actions (``admin.action``) and their answers."""
        return self._name("saga.admin")

    @property
    def admin_queue(self) -> str:
        """The orchestrator's queue of operator actions."""
        return self._name("orchestrator.admin")

    @property
    def replies_queue(self) -> str:
        """The orchestrator's queue of participant replies."""
        return self._name("orchestrator.replies")

    def partition_queue(self, partition: int) -> str:
        """The orchestrators' queue of one partition's replies (orchestrator.partitions)."""
        return self._name(f"orchestrator.replies.p{partition}")

    def command_queue(self, service: str) -> str:
        """The queue a participant service consumes."""
        return self._name(f"{service}.commands")

    def consumer_queues(self, plan: Plan) -> tuple[str, ...]:
        """Every queue some process of the system consumes."""
        return tuple(q.name for q in layout(self, plan)[1] if not q.dead_letter_queue)


def partition_of(saga_id: str, partitions: int) -> int:
    """The partition a saga's work belongs to: a stable hash, the same in every process."""
    return zlib.crc32(saga_id.encode()) % partitions


def partition_key(partition: int) -> str:
    """The replies exchange's routing key of one partition."""
    return f"{REPLY_KEY}.p{partition}"


def is_reply_key(key: str) -> bool:
    """Whether a command may ask for its reply under ``key`` (its AMQP ``reply_to``): the
    shared reply key, or one partition's."""
    return key == REPLY_KEY or _PARTITION_KEY.fullmatch(key) is not None


def service_user(service: str) -> str:
    """The broker user of one participant service: the generated broker definitions create
    it, and the orchestrator expects that service's replies from it."""
    return f"saga-{service}"


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
    # One consumer at a time, whoever subscribed: a partition is worked on by one instance
    # even while two believe they hold its lease.
    single_active: bool = False


def layout(t: Topology, plan: Plan) -> tuple[tuple[ExchangeSpec, ...], tuple[QueueSpec, ...]]:
    """Everything a plan declares: exchanges, consumer queues and their DLQs."""
    # Operator actions go to the orchestrator, which is there when a definition is.
    admin = bool(plan.entries)
    exchanges = (
        *(ExchangeSpec(t.exchange(e.exchange), "topic")
          for e in _unique_exchanges(plan.entries)),
        ExchangeSpec(t.commands_exchange, "direct"),
        ExchangeSpec(t.replies_exchange, "direct"),
        ExchangeSpec(t.dead_letter_exchange, "direct"),
        *((ExchangeSpec(t.admin_exchange, "topic"),) if admin else ()),
    )
    consumers = [
        *(QueueSpec(t.requests_queue_of(e.definition), ((t.exchange(e.exchange), e.requested),))
          for e in plan.entries),
        *(QueueSpec(t.cancels_queue_of(e.definition), ((t.exchange(e.exchange), e.cancel),))
          for e in plan.entries if e.cancel is not None),
        QueueSpec(t.replies_queue, ((t.replies_exchange, REPLY_KEY),)),
        *(QueueSpec(t.partition_queue(p), ((t.replies_exchange, partition_key(p)),),
                    single_active=True) for p in range(plan.partitions)),
        *((QueueSpec(t.admin_queue, ((t.admin_exchange, ADMIN_ACTION),)),) if admin else ()),
        *(QueueSpec(t.command_queue(s), ((t.commands_exchange, s),)) for s in plan.services),
    ]
    return exchanges, (*consumers, *(dead_letters_of(q, t) for q in consumers))


def dead_letters_of(queue: QueueSpec, t: Topology) -> QueueSpec:
    """The dead-letter queue of a consumer queue."""
    return QueueSpec(dead_letter_queue(queue.name), ((t.dead_letter_exchange, queue.name),),
                     dead_letter_queue=True)


def _unique_exchanges(entries: tuple[Entry, ...]) -> list[Entry]:
    seen: dict[str, Entry] = {}
    for e in entries:
        seen.setdefault(e.exchange, e)
    return list(seen.values())


def queue_arguments(spec: QueueSpec, t: Topology) -> dict[str, str | int]:
    """The arguments a queue is declared with: the same at start-up and in the definitions file."""
    if spec.dead_letter_queue:
        return {"x-queue-type": "quorum"}
    # At-least-once dead-lettering (RabbitMQ 3.10+) needs reject-publish overflow.
    arguments: dict[str, str | int] = {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": t.dead_letter_exchange,
        "x-dead-letter-routing-key": spec.name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if spec.single_active:
        arguments["x-single-active-consumer"] = True
    return arguments
