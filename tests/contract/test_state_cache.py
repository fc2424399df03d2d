"""The orchestrator's state cache (orchestrator.recent) against a store another instance
also writes: a stale entry never drops, refuses or overwrites an event.

Two runners share one store, as two orchestrator instances share one database; each has
its own cache. The store is each adapter (in memory, and MongoDB over the wire)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from contracts.commands import Outcome
from contracts.orders import OrderItem
from contracts.topology import Topology
from engine.decide import CancelRequested, Event, ReplyReceived
from engine.state import OpStatus, SagaState, SagaStatus
from infra.adapters.memory_bus import InMemoryTransport
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.outbox import OutboxPublisher
from orchestrator.registry import DefinitionRegistry
from orchestrator.runner import SagaRunner
from orchestrator.store import OutboxMessage, SagaStore
from orchestrator.store_memory import MemorySagaStore
from orchestrator.store_mongo import MongoSagaStore
from sagas.order import NAME, OrderSagaData, order_saga

TOPOLOGY = Topology("state-cache")
REGISTRY = DefinitionRegistry([order_saga()])
SAGA = "o-1"


@pytest.fixture(params=["memory", "mongo"])
def store(request: pytest.FixtureRequest) -> SagaStore:
    if request.param == "memory":
        return MemorySagaStore(REGISTRY)
    client: AsyncMongoClient[Any] = request.getfixturevalue("mongo_client")
    name: str = request.getfixturevalue("mongo_db_name")
    return MongoSagaStore(client[name], REGISTRY)


class Instance:
    """One orchestrator's runner, with its own cache and metrics, on the shared store."""

    def __init__(self, store: SagaStore) -> None:
        self.registry = CollectorRegistry()
        metrics = OrchestratorMetrics(self.registry)
        outbox = OutboxPublisher(InMemoryTransport(), store, metrics, lambda: 1_000.0)
        self.runner = SagaRunner(registry=REGISTRY, store=store, outbox=outbox,
                                 topology=TOPOLOGY, metrics=metrics, clock=lambda: 1_000.0)

    def cache(self, result: str) -> float:
        return self.registry.get_sample_value("saga_state_cache_total",
                                              {"result": result}) or 0.0

    def conflicts(self) -> float:
        return self.registry.get_sample_value("saga_version_conflicts_total") or 0.0


async def stored(store: SagaStore) -> SagaState[Any]:
    record = await store.load(SAGA)
    assert record is not None
    return record.state


def in_flight(state: SagaState[Any]) -> list[str]:
    """The message ids of the commands waiting for their reply."""
    return sorted(op.message_id for op in state.ops.values()
                  if op.status is OpStatus.WAITING and op.message_id is not None)


def succeeded(command_id: str) -> Any:
    def event(now: float) -> Event:
        return ReplyReceived(command_id, Outcome.SUCCEEDED, now)
    return event


async def started(store: SagaStore) -> tuple[Instance, Instance]:
    order = OrderSagaData(order_id=SAGA, customer_id="c-1", total=Decimal("2.00"), items=(
        OrderItem(sku="SKU-1", quantity=1, unit_price=Decimal("2.00")),))
    a, b = Instance(store), Instance(store)
    await a.runner.start(NAME, SAGA, order, None)  # a caches the saga as it saved it
    return a, b


async def test_a_reply_the_cached_state_would_ignore_is_decided_on_the_stored_one(
        store: SagaStore) -> None:
    """Another instance moved the saga on: the reply to a command that only the stored
    state knows must move it further, not be dropped as stale (nothing would ever send
    that reply again)."""
    a, b = await started(store)
    [first] = in_flight(await stored(store))
    await b.runner.apply(SAGA, succeeded(first))
    moved = await stored(store)
    [second, *_] = in_flight(moved)
    await a.runner.apply(SAGA, succeeded(second))
    after = await stored(store)
    assert after.version == moved.version + 1
    assert after.ops[next(k for k, op in moved.ops.items() if op.message_id == second)].status \
        is OpStatus.SUCCEEDED
    assert a.cache("rechecked") == 1


async def test_a_save_from_a_stale_entry_loses_the_version_check_and_keeps_both_changes(
        store: SagaStore) -> None:
    """The cached state would change the saga: its save fails on the version, and the event
    is decided again on top of the other instance's change."""
    a, b = await started(store)
    [first] = in_flight(await stored(store))
    await b.runner.apply(SAGA, succeeded(first))

    def cancel(now: float) -> Event:
        return CancelRequested("customer changed their mind", now)

    await a.runner.apply(SAGA, cancel)
    after = await stored(store)
    assert after.status in (SagaStatus.COMPENSATING, SagaStatus.FAILED)
    assert any(op.message_id == first and op.status is OpStatus.SUCCEEDED
               for op in after.ops.values())  # b's change survived a's cancel
    assert (a.cache("stale"), a.conflicts()) == (1, 1)


async def test_the_instance_that_saved_last_decides_without_a_load(store: SagaStore) -> None:
    """The common case: the next event reaches the instance that saved the saga, which
    decides on what it saved."""
    a, _ = await started(store)
    [first] = in_flight(await stored(store))
    await a.runner.apply(SAGA, succeeded(first))
    [second, *_] = in_flight(await stored(store))
    await a.runner.apply(SAGA, succeeded(second))
    assert (await stored(store)).version == 2
    assert (a.cache("hit"), a.cache("stale"), a.cache("rechecked")) == (2, 0, 0)


class AnswerLost(MemorySagaStore):
    """A store whose next save lands but whose answer never arrives (a dropped connection)."""

    lose_next = False

    async def save(self, state: SagaState[Any], expected_version: int,
                   outbox: Sequence[OutboxMessage]) -> SagaState[Any]:
        saved = await super().save(state, expected_version, outbox)
        if self.lose_next:
            self.lose_next = False
            raise ConnectionError("the answer to the write was lost")
        return saved


async def test_an_entry_is_dropped_when_a_save_fails_for_any_other_reason() -> None:
    """A save whose outcome is unknown (the connection dropped after the write) may have
    landed: the next event must not start from the state before it."""
    store = AnswerLost(REGISTRY)
    a, _ = await started(store)
    [first] = in_flight(await stored(store))
    store.lose_next = True
    with pytest.raises(ConnectionError):
        await a.runner.apply(SAGA, succeeded(first))
    landed = await stored(store)
    [second, *_] = in_flight(landed)
    await a.runner.apply(SAGA, succeeded(second))
    assert (await stored(store)).version == landed.version + 1
    assert (a.cache("stale"), a.cache("rechecked"), a.conflicts()) == (0, 0, 0)
