"""One saga's trouble is its own: a slow publish holds no other saga's timer, and outbox
entries that cannot be published keep no other entry from being relayed.

The real orchestrator and outbox relay on the in-memory broker and store; the broker is
made slow (one saga's publishes hang) or unable to route (an exchange that is gone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from contracts.commands import Operation
from contracts.envelope import WireMessage
from contracts.topology import Topology
from engine.decide import start
from engine.state import OpStatus
from infra.adapters.memory_bus import InMemoryBroker, InMemoryTransport
from infra.settings import CommonSettings
from orchestrator.app import build, definitions
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.outbox import OutboxPublisher
from orchestrator.settings import OrchestratorSettings
from orchestrator.start import split_saga_id
from orchestrator.store import OutboxMessage
from orchestrator.store_memory import MemorySagaStore
from sagas.order import order_saga
from tests.plan import PLAN
from tests.unit.scripts import order_data

T0 = 1_000.0
TOPOLOGY = Topology("fair")
WAIT = 10.0


class Stalling(InMemoryTransport):
    """The in-memory broker, except that publishes of one saga hang until released."""

    def __init__(self, broker: InMemoryBroker, saga_id: str) -> None:
        super().__init__(broker)
        self.saga_id = saga_id
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, exchange: str, routing_key: str, message: WireMessage, *,
                      must_route: bool = True) -> bool:
        """Hang on the stalled saga's messages, publish the others."""
        if message.correlation_id == self.saga_id:
            self.stalled.set()
            await self.release.wait()
        return await super().publish(exchange, routing_key, message, must_route=must_route)


async def until(probe: Callable[[], Awaitable[bool]]) -> None:
    """Poll until the probe holds; fail after WAIT seconds."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "not within the wait"
        await asyncio.sleep(0.02)


async def test_a_saga_whose_publish_hangs_delays_no_other_timer() -> None:
    """The slow saga's retry hangs in its publish; a timer that falls due afterwards still
    fires, and its own retry is published, while the slow one is still hanging."""
    settings = OrchestratorSettings(common=CommonSettings(store="memory", namespace="fair"),
                                    step_timeout=1.0, tick_interval=0.05)
    registry = definitions(settings)
    store = MemorySagaStore(registry)
    definition = registry.latest("order")

    async def add(saga_id: str, at: float) -> None:
        data = order_data(split_saga_id(saga_id)[1])
        assert await store.create(start(definition.for_data(data), saga_id, data, at).state, ())

    def create_order(saga_id: str) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            record = await store.load(saga_id)
            assert record is not None
            op = record.state.op("create_order", Operation.FORWARD)
            return op.status is OpStatus.BACKOFF or op.attempt > 1
        return probe

    await add("order:slow", T0)
    broker = InMemoryBroker()
    transport = Stalling(broker, "order:slow")
    await transport.declare(TOPOLOGY, PLAN)
    clock = [T0]
    orchestrator = build(settings, transport, store, registry,
                         OrchestratorMetrics(CollectorRegistry()), clock=lambda: clock[0])
    await orchestrator.start()
    try:
        clock[0] = T0 + 100  # the slow saga's step times out: a retry is scheduled
        await until(create_order("order:slow"))
        clock[0] = T0 + 200  # its retry is sent, and the publish hangs
        await asyncio.wait_for(transport.stalled.wait(), WAIT)

        await add("order:ok", T0 + 150)  # due at once
        await until(create_order("order:ok"))
        clock[0] = T0 + 300  # its retry is sent too
        queue = TOPOLOGY.command_queue("order")

        async def resent() -> bool:
            message = await transport.get(queue)
            return message is not None and message.correlation_id == "order:ok"
        await until(resent)
        assert not transport.release.is_set()
    finally:
        transport.release.set()
        await orchestrator.stop()


async def test_unpublishable_outboxes_do_not_starve_the_others() -> None:
    """600 sagas hold outbox entries; the 500 oldest (first by id too) go to an exchange that
    is gone. One relay round still publishes the other 100."""
    registry = definitions(OrchestratorSettings(common=CommonSettings(store="memory")))
    store = MemorySagaStore(registry)
    broker = InMemoryBroker()
    transport = broker.connect()
    await transport.declare(TOPOLOGY, PLAN)
    for i in range(600):
        lost = i < 500
        saga_id = f"order:{'a' if lost else 'z'}{i:03}"
        at = T0 if lost else T0 + 1
        decision = start(order_saga(), saga_id, order_data(f"o{i}"), at)
        command = decision.commands[0]
        exchange = f"{TOPOLOGY.namespace}.gone" if lost else TOPOLOGY.commands_exchange
        assert await store.create(decision.state, [OutboxMessage(
            command.message_id, exchange, command.service, command.type,
            command.payload.model_dump_json(), saga_id, None, at)])
    outbox = OutboxPublisher(transport, store, OrchestratorMetrics(CollectorRegistry()),
                             lambda: T0 + 100)

    assert await outbox.relay_once() == 100

    queue = TOPOLOGY.command_queue("order")
    relayed = []
    while (message := await transport.get(queue)) is not None:
        relayed.append(str(message.correlation_id))
    assert sorted(relayed) == [f"order:z{i:03}" for i in range(500, 600)]
