"""Sagas the orchestrator cannot decode are set aside, and never hold up the healthy ones.

A deploy that drops a definition version (or tightens a data model) leaves documents the
orchestrator can no longer read. They used to fail every relay round, the one at start-up
included, and 200 of them, due first, took every timer tick. Here the real orchestrator
(in-memory broker and store) starts among 200 such sagas and one healthy saga.
"""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry

from contracts.commands import Operation
from contracts.topology import Topology
from engine.decide import start
from engine.state import OpStatus
from infra.adapters.memory_bus import InMemoryBroker
from infra.settings import CommonSettings
from orchestrator.app import build, definitions
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.outbox import outbox_messages
from orchestrator.registry import DefinitionRegistry
from orchestrator.settings import OrchestratorSettings
from orchestrator.store_memory import MemorySagaStore
from sagas.order import order_saga
from tests.plan import PLAN
from tests.unit.scripts import order_data

T0 = 1_000.0
BROKEN = 200
TOPOLOGY = Topology("q")


async def test_two_hundred_undecodable_due_sagas_do_not_stop_a_healthy_timer() -> None:
    """Start-up succeeds, the healthy saga's timeout fires on the first tick, and the 200
    are quarantined with their reason, after which no tick selects them again."""
    settings = OrchestratorSettings(common=CommonSettings(store="memory", namespace="q"),
                                    step_timeout=1.0)
    registry = definitions(settings)
    store = MemorySagaStore(DefinitionRegistry([replace(order_saga(), version=9)]))
    for i in range(BROKEN):  # written by a deploy that registered version 9
        decision = start(store.definitions.latest("order").for_data(order_data(f"b{i}")),
                         f"order:b{i}", order_data(f"b{i}"), T0)
        assert await store.create(decision.state, outbox_messages(
            decision, TOPOLOGY, None, T0, None, "q.orders"))
    store.definitions = registry  # version 9 is gone after the next deploy
    healthy = start(registry.latest("order").for_data(order_data("ok")), "order:ok",
                    order_data("ok"), T0 + 1)
    assert await store.create(healthy.state, ())
    broker = InMemoryBroker()
    await broker.connect().declare(TOPOLOGY, PLAN)
    clock = [T0 + 100.0]
    orchestrator = build(settings, broker.connect(), store, registry,
                         OrchestratorMetrics(CollectorRegistry()), clock=lambda: clock[0])
    await orchestrator.start()  # its recovery relay meets the 200 first
    try:
        assert await orchestrator.tick_once() >= 1
        record = await store.load("order:ok")
        assert record is not None
        assert record.state.op("create_order", Operation.FORWARD).status is OpStatus.BACKOFF
        assert len(await store.quarantined(1000)) == BROKEN
        assert await store.due(clock[0] + 10_000, 1000) == ["order:ok"]
        assert sum((await store.health(clock[0])).quarantined.values()) == BROKEN
    finally:
        await orchestrator.stop()
