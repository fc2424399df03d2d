"""A small, consistent world made by really running order sagas, and ways to break it.

``run_world`` runs the orchestrator and the five workers in one process (in-memory
broker and stores, the real engine and handlers), seeds a catalogue, places orders that
complete and orders that fail at each step, re-sends a few commands as a timed-out
attempt would (replays, an empty rollback, a refused late prepare) and dumps every store.
A Dump is plain data: each test copies it, corrupts the copy and loads it into fresh
stores (in memory or MongoDB).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry

from client.orders import OutcomeWatcher, submit
from client.seed import Catalog, seed
from contracts.commands import Operation, Outcome, StepReply
from contracts.envelope import (
    Envelope,
    HeaderValue,
    WireMessage,
    encode,
    read_envelope,
    read_payload,
    utcnow,
)
from contracts.orders import OrderItem, OrderRequested
from contracts.registry import STEP_REPLY
from contracts.topology import REPLY_KEY, Topology, service_user
from engine.definition import CommandContext
from engine.state import SagaState
from infra.adapters.memory_bus import InMemoryBroker
from infra.consumer import ERROR_KIND_HEADER, QUEUE_HEADER, REASON_HEADER
from infra.settings import CommonSettings, FaultSettings
from orchestrator.app import build, definitions
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.registry import DefinitionRegistry
from orchestrator.settings import OrchestratorSettings
from orchestrator.start import saga_id
from orchestrator.store import SagaRecord, SagaStore
from orchestrator.store_memory import MemorySagaStore
from sagas.order import NAME as ORDER_SAGA
from tests.plan import PLAN
from workers.app import Worker
from workers.catalog import registered
from workers.fence import Fence
from workers.metrics import WorkerMetrics
from workers.settings import WorkerSettings
from workers.store import Doc, DocumentStore
from workers.store_memory import MemoryDocumentStore

TOPOLOGY = Topology("audit")
COMMON = CommonSettings(store="memory", namespace=TOPOLOGY.namespace)
SETTINGS = OrchestratorSettings(common=COMMON, step_timeout=2.0, tick_interval=0.05,
                                relay_after=1.0)
CATALOG = Catalog(stock={"SKU-A": 10, "SKU-B": 5},
                  balances={"alice": 100_00, "bob": 20_00}, prices={})


def _order(order_id: str, customer: str, *lines: tuple[str, int, str]) -> OrderRequested:
    return OrderRequested(order_id=order_id, customer_id=customer, items=tuple(
        OrderItem(sku=sku, quantity=n, unit_price=Decimal(price)) for sku, n, price in lines))


# Order id -> how it ends. "refused" is placed last, with the order service refusing it.
ORDERS = {
    "ok-1": _order("ok-1", "alice", ("SKU-A", 2, "5.00")),
    "ok-2": _order("ok-2", "bob", ("SKU-B", 1, "3.00"), ("SKU-A", 1, "5.00")),
    "ok-3": _order("ok-3", "alice", ("SKU-A", 1, "5.00"), ("SKU-A", 1, "5.00")),
    "no-stock": _order("no-stock", "alice", ("SKU-B", 50, "1.00")),
    "no-money": _order("no-money", "bob", ("SKU-A", 1, "500.00")),
    "no-sku": _order("no-sku", "alice", ("SKU-Z", 1, "1.00")),
    "stranger": _order("stranger", "carol", ("SKU-A", 1, "1.00")),
}
REFUSED = _order("refused", "alice", ("SKU-A", 1, "1.00"))
COMPLETED = ("ok-1", "ok-2", "ok-3")
FAILED = ("no-stock", "no-money", "no-sku", "stranger", "refused")

# Commands sent again as a retry after a lost reply would be: (order, step, operation).
RESENT = (
    ("ok-1", "reserve_stock", Operation.CONFIRM),  # replay: "already confirmed"
    ("ok-1", "create_order", Operation.FORWARD),  # replay: "already tried"
    ("no-money", "reserve_stock", Operation.COMPENSATE),  # replay: "already compensated"
    ("no-money", "hold_funds", Operation.COMPENSATE),  # empty rollback of a refused hold
    ("no-money", "reserve_stock", Operation.FORWARD),  # refused: undone before it came
)


@dataclass(frozen=True, slots=True)
class Dump:
    """Every saga and every service document, as plain values."""

    sagas: tuple[SagaRecord, ...]
    documents: Mapping[str, tuple[Doc, ...]]  # by service
    taken_at: float
    resent: tuple[StepReply, ...] = ()  # the replies to the RESENT commands, in order

    def saga(self, order_id: str) -> SagaState[Any]:
        """One order saga's state."""
        return next(r.state for r in self.sagas
                    if r.state.saga_id == saga_id(ORDER_SAGA, order_id))

    def doc[T: Doc](self, service: str, kind: type[T], id: str) -> T:
        """One document."""
        found = [d for d in self.documents[service] if isinstance(d, kind) and d.id == id]
        assert found, f"no {kind.__name__} {id} in {service}"
        return found[0]

    def docs[T: Doc](self, service: str, kind: type[T]) -> list[T]:
        """Every document of a kind."""
        return [d for d in self.documents[service] if isinstance(d, kind)]

    def put(self, service: str, doc: Doc) -> Dump:
        """A copy with ``doc`` added, or replacing the document with its id."""
        kept = tuple(d for d in self.documents[service]
                     if (d.collection, d.id) != (doc.collection, doc.id))
        return replace(self, documents={**self.documents, service: (*kept, doc)})

    def without(self, service: str, kind: type[Doc], id: str) -> Dump:
        """A copy without one document."""
        self.doc(service, kind, id)
        kept = tuple(d for d in self.documents[service]
                     if (d.collection, d.id) != (kind.collection, id))
        return replace(self, documents={**self.documents, service: kept})

    def with_saga(self, state: SagaState[Any]) -> Dump:
        """A copy with one saga's state replaced."""
        return replace(self, sagas=tuple(
            SagaRecord(state, r.outbox) if r.state.saga_id == state.saga_id else r
            for r in self.sagas))


async def fill(dump: Dump, sagas: SagaStore, services: Mapping[str, DocumentStore]) -> None:
    """Write a dump into empty stores."""
    for record in dump.sagas:
        assert await sagas.create(record.state, record.outbox)
    for service, docs in dump.documents.items():
        for doc in docs:
            await services[service].put(doc)


class World:
    """The running system: orchestrator, workers, a client connection."""

    def __init__(self) -> None:
        self.broker = InMemoryBroker()
        self.registry: DefinitionRegistry = definitions(SETTINGS)
        self.sagas = MemorySagaStore(self.registry)
        self.services = {name: MemoryDocumentStore() for name in PLAN.services}
        self.client = self.broker.connect()
        self.orchestrator = build(SETTINGS, self.broker.connect(), self.sagas, self.registry,
                                  OrchestratorMetrics(CollectorRegistry()))
        self.workers = {name: self._worker(name, FaultSettings()) for name in PLAN.services}
        self.replies = ""  # a queue with a copy of every reply, once started
        self.resent: list[StepReply] = []

    def _worker(self, name: str, faults: FaultSettings) -> Worker:
        return Worker(settings=WorkerSettings(common=COMMON, service=name, faults=faults),
                      spec=registered()[name], transport=self.broker.connect(service_user(name)),
                      store=self.services[name], metrics=WorkerMetrics(CollectorRegistry()))

    async def start(self) -> None:
        """Declare the topology and start every component."""
        await self.client.declare(TOPOLOGY, PLAN)
        self.replies = await self.client.temporary_queue(TOPOLOGY.replies_exchange, (REPLY_KEY,))
        await self.orchestrator.start()
        for worker in self.workers.values():
            await worker.start()

    async def place(self, orders: list[OrderRequested]) -> None:
        """Submit orders and wait for every outcome."""
        watcher = OutcomeWatcher(self.client, TOPOLOGY)
        await watcher.start()
        for order in orders:
            await submit(self.client, TOPOLOGY, order)
        missing = await watcher.wait_for({o.order_id for o in orders if o.order_id}, 30)
        assert not missing, missing

    async def refusing_orders(self) -> None:
        """Replace the order worker by one that refuses every new order."""
        await self.workers["order"].stop()
        self.workers["order"] = self._worker("order", FaultSettings(reject_rate=1.0, seed=1))
        await self.workers["order"].start()

    async def resend(self, order_id: str, step: str, op: Operation, attempt: int) -> None:
        """Send one command again, as the orchestrator's next attempt would, and wait for
        its service's reply."""
        record = await self.sagas.load(saga_id(ORDER_SAGA, order_id))
        assert record is not None
        service, message = command_message(self.registry, record.state, step, op, attempt)
        await self.client.publish(TOPOLOGY.commands_exchange, service, message)
        for _ in range(500):
            while (reply := await self.client.get(self.replies)) is not None:
                if read_envelope(reply).causation_id == message.message_id:
                    self.resent.append(read_payload(reply, StepReply))
                    return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{message.message_id} was never answered")

    async def dump(self) -> Dump:
        """Every store, as values."""
        documents = {}
        for name, store in self.services.items():
            docs: list[Doc] = []
            kinds: tuple[type[Doc], ...] = (*registered()[name].documents, Fence)
            for kind in kinds:
                docs += await store.all(kind)
            documents[name] = tuple(docs)
        return Dump(tuple(await self.sagas.find(None, 10_000)), documents, time.time(),
                    tuple(self.resent))

    async def stop(self) -> None:
        """Stop everything."""
        await self.orchestrator.stop()
        for worker in self.workers.values():
            await worker.stop()
        await self.client.close()


def command_message(registry: DefinitionRegistry, state: SagaState[Any], step_name: str,
                    op: Operation, attempt: int) -> tuple[str, WireMessage]:
    """The service and the message of one attempt of one operation, as the engine sends it."""
    step = registry.get(ORDER_SAGA, state.definition_version).steps[step_name]
    command = step.command(op, CommandContext(state.saga_id, step_name, state.data,
                                              state.failure))
    envelope = Envelope(message_id=f"{state.saga_id}:{step_name}:{op}:{attempt}",
                        correlation_id=state.saga_id, causation_id=f"{state.saga_id}:test",
                        message_type=step.command_type(op), timestamp=utcnow())
    return step.service, encode(envelope, command)


def reply_message(saga_id: str, step: str) -> WireMessage:
    """A well-formed reply of a participant."""
    reply = StepReply(saga_id=saga_id, step=step, operation=Operation.FORWARD,
                      outcome=Outcome.SUCCEEDED, detail="done")
    envelope = Envelope(message_id=f"{saga_id}:{step}:reply", correlation_id=saga_id,
                        causation_id=f"{saga_id}:{step}:forward:1", message_type=STEP_REPLY,
                        timestamp=utcnow())
    return encode(envelope, reply)


def dead_lettered(message: WireMessage, queue: str, reason: str | None) -> WireMessage:
    """The copy a consumer's boundary puts in the dead-letter queue (None: without a reason)."""
    headers: dict[str, HeaderValue] = {**message.headers, QUEUE_HEADER: queue}
    if reason is not None:
        headers |= {REASON_HEADER: reason, ERROR_KIND_HEADER: "CodecError"}
    return replace(message, headers=headers)


async def run_world() -> Dump:
    """Run the orders of this module to their end and dump the stores."""
    world = World()
    await world.start()
    try:
        await seed(world.services["inventory"], world.services["payment"], CATALOG)
        await world.place(list(ORDERS.values()))
        await world.refusing_orders()
        await world.place([REFUSED])
        for order_id, step, op in RESENT:
            await world.resend(order_id, step, op, attempt=7)
        return await world.dump()
    finally:
        await world.stop()
