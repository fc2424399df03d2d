"""Replies that wait unread in the orchestrator's queue are read before any step times out.

After an orchestrator restart (or a broker outage, or a burst) its reply queue holds
answers it has not read. A timer judged by the wall clock would time those steps out and
send retries, each adding a command and a reply to the backlog. Here the real orchestrator
(in-memory broker and store) finds a reply queued while it was away, past the step's
timeout: the timer waits for it, and the step succeeds on its first attempt.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from contracts.commands import Operation, Outcome, StepReply
from contracts.envelope import Envelope, encode, new_message_id, utcnow
from contracts.registry import STEP_REPLY
from contracts.topology import REPLY_KEY, Topology, service_user
from engine.decide import start
from engine.state import OpStatus
from infra.adapters.memory_bus import InMemoryBroker
from infra.settings import CommonSettings
from orchestrator.app import build, definitions
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.settings import OrchestratorSettings
from orchestrator.store_memory import MemorySagaStore
from tests.plan import PLAN
from tests.unit.scripts import order_data

T0 = 1_000.0
TOPOLOGY = Topology("q")
SAGA = "order:h1"


async def test_a_reply_queued_past_the_timeout_is_read_before_the_step_times_out() -> None:
    settings = OrchestratorSettings(common=CommonSettings(store="memory", namespace="q"),
                                    step_timeout=10.0)
    registry = definitions(settings)
    store = MemorySagaStore(registry)
    saga = start(registry.latest("order").for_data(order_data("h1")), SAGA, order_data("h1"), T0)
    assert await store.create(saga.state, ())
    command_id = saga.state.op("create_order", Operation.FORWARD).message_id
    assert command_id is not None
    broker = InMemoryBroker()
    await broker.connect().declare(TOPOLOGY, PLAN)
    # The order service answered while the orchestrator was away.
    envelope = Envelope(message_id=new_message_id(), correlation_id=SAGA,
                        causation_id=command_id, message_type=STEP_REPLY, timestamp=utcnow())
    await broker.connect(service_user("order")).publish(
        TOPOLOGY.replies_exchange, REPLY_KEY, encode(envelope, StepReply(
            saga_id=SAGA, step="create_order", operation=Operation.FORWARD,
            outcome=Outcome.SUCCEEDED)))
    clock = [T0 + 30.0]  # three step timeouts later
    gauges = CollectorRegistry()
    metrics = OrchestratorMetrics(gauges)
    orchestrator = build(settings, broker.connect(), store, registry, metrics,
                         clock=lambda: clock[0])
    assert await orchestrator.tick_once() == 0  # the reply is queued: nothing is due yet
    await orchestrator.refresh_gauges()
    assert gauges.get_sample_value("saga_timer_lag_seconds") == orchestrator.heard.lag() > 0
    await orchestrator.start()
    try:
        for _ in range(200):
            record = await store.load(SAGA)
            assert record is not None
            op = record.state.op("create_order", Operation.FORWARD)
            if op.status is OpStatus.SUCCEEDED:
                break
            await asyncio.sleep(0.01)
        assert (op.status, op.attempt, op.errors) == (OpStatus.SUCCEEDED, 1, ())
        await orchestrator.tick_once()  # now heard up to date: the next steps' timers run
        assert orchestrator.heard.lag() == 0.0
    finally:
        await orchestrator.stop()
