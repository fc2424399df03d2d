"""The runner's cache of recently saved states: bounded, and never trusted over the store."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

from prometheus_client import CollectorRegistry

from contracts.commands import Outcome
from contracts.orders import OrderItem
from contracts.topology import Topology
from infra.memory_bus import InMemoryTransport
from infra.settings import CommonSettings, OrchestratorSettings
from orchestrator import engine
from orchestrator.app import definitions
from orchestrator.engine import Event, ReplyReceived
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.outbox import OutboxPublisher
from orchestrator.recent import RecentStates
from orchestrator.runner import SagaRunner
from orchestrator.sagas.order import NAME as ORDER_SAGA
from orchestrator.sagas.order import OrderSagaData
from orchestrator.state import SagaStatus
from orchestrator.store_memory import MemorySagaStore

TOPOLOGY = Topology("recent")
Conflicts = Callable[[], float]
SETTINGS = OrchestratorSettings(common=CommonSettings(store="memory"))


def _runner(store: MemorySagaStore, transport: InMemoryTransport) -> tuple[SagaRunner, Conflicts]:
    registry = CollectorRegistry()
    metrics = OrchestratorMetrics(registry)
    outbox = OutboxPublisher(transport, store, metrics, time.time)
    runner = SagaRunner(registry=definitions(SETTINGS), store=store, outbox=outbox,
                        topology=TOPOLOGY, metrics=metrics, clock=time.time)

    def conflicts() -> float:
        return registry.get_sample_value("saga_version_conflicts_total") or 0.0

    return runner, conflicts


def _data(order_id: str) -> OrderSagaData:
    return OrderSagaData(order_id=order_id, customer_id="c-1",
                         items=(OrderItem(sku="S", quantity=1, unit_price=Decimal("2.50")),),
                         total=Decimal("2.50"))


async def _waiting_for(store: MemorySagaStore, saga_id: str) -> list[str]:
    """Message ids of the commands the saga now waits for."""
    record = await store.load(saga_id)
    assert record is not None
    return sorted(o.message_id for o in record.state.ops.values()
                  if o.message_id is not None and o.finished_at is None)


async def test_a_stale_cached_state_is_reloaded_not_trusted() -> None:
    """Two instances on one store, each holding the state it saved last: every event lands on
    the instance whose cache is stale, and the saga still completes exactly as it should."""
    store = MemorySagaStore(definitions(SETTINGS))
    transport = InMemoryTransport()
    await transport.declare(TOPOLOGY)
    a, a_conflicts = _runner(store, transport)
    b, b_conflicts = _runner(store, transport)
    assert await a.start(ORDER_SAGA, "o-1", _data("o-1"), "req-1")
    instances = [b, a]  # a holds version 0 after the start: b goes first, then they alternate
    turn = 0
    for _ in range(20):
        pending = await _waiting_for(store, "o-1")
        if not pending:
            break
        for command_id in pending:
            runner = instances[turn % 2]
            turn += 1

            def event(now: float, command_id: str = command_id) -> Event:
                return ReplyReceived(command_id, Outcome.SUCCEEDED, now)

            await runner.apply("o-1", event)
    record = await store.load("o-1")
    assert record is not None
    assert record.state.status is SagaStatus.COMPLETED
    # Each instance found its cached state stale at least once, and recovered by reloading.
    assert a_conflicts() >= 1
    assert b_conflicts() >= 1


def test_recent_states_are_bounded_and_drop_finished_sagas() -> None:
    definition = definitions(SETTINGS).latest(ORDER_SAGA)
    states = [engine.start(definition, f"s-{i}", _data(f"s-{i}"), 0.0).state for i in range(3)]
    recent = RecentStates(capacity=2)
    for state in states:
        recent.remember(state)
    assert recent.get("s-1") is states[1]  # now the most recently used
    recent.remember(states[2])
    assert len(recent) == 2
    assert recent.get("s-0") is None  # the least recently used went first
    recent.remember(replace(states[2], status=SagaStatus.COMPLETED))
    assert recent.get("s-2") is None
    recent.forget("s-1")
    assert len(recent) == 0
