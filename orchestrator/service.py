"""A running orchestrator: consumers, timers, the outbox relay and sweeper, the store gauge."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from contracts.envelope import WireMessage
from contracts.topology import Plan, Topology, layout
from engine.state import ACTIVE, SagaStatus
from infra.consumer import Boundary, MessageHandler
from infra.errors import SagaSystemError
from infra.transport import Handler, Transport
from orchestrator.forward import ADMIN, Forwarder, admin_saga, cancel_kind
from orchestrator.handlers import CHECKED, OrchestratorHandlers
from orchestrator.heard import HeardClock
from orchestrator.lockwatch import DeadlockWatch
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.outbox import OutboxPublisher
from orchestrator.partitions import PartitionKeeper
from orchestrator.registry import AnyDefinition, DefinitionRegistry
from orchestrator.runner import SagaRunner
from orchestrator.senders import ReplySenders
from orchestrator.serde import QUARANTINE_REASONS
from orchestrator.start import read_cancel, saga_id
from orchestrator.store import SagaStore
from orchestrator.timers import Timers

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Loops:
    """How often the background loops run."""

    tick_interval: float = 0.2
    timer_concurrency: int = 64  # sagas whose timers are fired at once
    timer_budget: float = 10.0  # seconds one saga's timer may take
    relay_interval: float = 5.0
    gauge_interval: float = 5.0
    deadlock_interval: float = 2.0  # the backstop look at the wait-for graph
    heard_interval: float = 1.0  # looks at the reply queue for the heard clock
    heard_max_lag: float = 60.0  # how far timers may fall behind the wall clock


class Orchestrator:
    """Wires the runner to the transport and runs the background loops."""

    def __init__(self, *, transport: Transport, store: SagaStore, runner: SagaRunner,
                 outbox: OutboxPublisher, topology: Topology, plan: Plan,
                 registry: DefinitionRegistry, metrics: OrchestratorMetrics, clock: Clock,
                 prefetch: int, senders: ReplySenders = CHECKED, loops: Loops = Loops(),
                 declare_topology: bool = True,
                 partitions: PartitionKeeper | None = None) -> None:
        self._transport = transport
        self._store = store
        self._runner = runner
        self._outbox = outbox
        self._topology = topology
        self._plan = plan
        self._registry = registry
        self._senders = senders
        self._metrics = metrics
        self._clock = clock
        self._prefetch = prefetch
        self._loops = loops
        self._declare = declare_topology
        self._partitions = partitions
        self._tasks: list[asyncio.Task[None]] = []
        self.heard = HeardClock(self._reply_depth, clock, max_lag=loops.heard_max_lag)
        self._timers = Timers(store, runner, self.heard, concurrency=loops.timer_concurrency,
                              budget=loops.timer_budget,
                              mine=None if partitions is None else partitions.mine)
        self._on_reply: Handler | None = None
        self.deadlocks = DeadlockWatch(store, runner, metrics,
                                       tuple(registry.names()))
        self._dead_letter_queues = [q.name for q in layout(topology, plan)[1]
                                    if q.dead_letter_queue]
        self.ready = False

    async def start(self) -> None:
        """Declare topology, recover (re-send every outbox), then consume and run loops."""
        if self._declare:
            await self._transport.declare(self._topology, self._plan)
        recovered = await self._outbox.relay_once(everything=True)
        log.info("recovery re-published %d outbox messages", recovered)
        boundary = Boundary(self._transport, self._topology,
                            lambda q, kind: self._metrics.dead_lettered.labels(q, kind).inc())
        starts = [self._registry.latest(e.definition) for e in self._plan.entries]
        handlers = OrchestratorHandlers(
            self._runner, self._outbox,
            {d.name: self._topology.exchange(d.start.exchange) for d in starts if d.start},
            self._senders, lambda service: self._metrics.replies_refused.labels(service).inc(),
            lambda name, result: self._metrics.cancels.labels(name, result).inc(),
            self._topology.admin_exchange,
            lambda name, action, result: self._metrics.operator_actions.labels(
                name, action, result).inc(), self.deadlocks.poke)
        # Forged replies are possible while unchecked: say so where operators look.
        self._metrics.replies_unchecked.set(1 if self._senders.relaxed else 0)
        log.log(logging.WARNING if self._senders.relaxed else logging.INFO,
                self._senders.describe())
        self._spawn(self._run_timers)
        self._spawn(self._outbox.run_sweeper)
        self._spawn(lambda: self._outbox.run_relay(self._loops.relay_interval))
        self._spawn(self._run_gauge)
        self._spawn(lambda: self.deadlocks.run(self._loops.deadlock_interval))
        # Partitioned or not, the shared replies queue is consumed: replies of commands
        # sent before the work was partitioned, or by participants that ignore reply_to.
        self._on_reply = self.heard.track(boundary.wrap(handlers.on_reply))
        await self._transport.consume(self._topology.replies_queue, self._on_reply,
                                      self._prefetch)
        on_admin: MessageHandler = handlers.on_admin
        cancels: dict[str, MessageHandler] = {
            d.name: partial(handlers.on_cancel, d) for d in starts if d.start is not None}
        if self._partitions is not None:
            keeper = self._partitions
            forwarder = Forwarder(self._transport, self._topology, keeper, self._transport.user,
                                  lambda kind: self._metrics.forwarded.labels(
                                      ADMIN if kind == ADMIN else "cancel").inc())
            # A partition's queue brings its sagas' replies, and the cancels and operator
            # actions the other instances forwarded (orchestrator.forward).
            self._on_reply = self.heard.track(boundary.wrap(
                forwarder.dispatch(handlers.on_reply, on_admin, cancels)))
            on_admin = forwarder.routed(ADMIN, admin_saga, on_admin)
            cancels = {name: forwarder.routed(cancel_kind(name), partial(
                           _cancelled_saga, self._registry.latest(name)), handle)
                       for name, handle in cancels.items()}
            self._spawn(lambda: keeper.run(self._gained, self._lost))
        if self._plan.entries:
            await self._transport.consume(self._topology.admin_queue, boundary.wrap(on_admin),
                                          self._prefetch)
        for definition in starts:
            await self._transport.consume(self._topology.requests_queue_of(definition.name),
                                          boundary.wrap(partial(handlers.on_start, definition)),
                                          self._prefetch)
            await self._transport.consume(self._topology.cancels_queue_of(definition.name),
                                          boundary.wrap(cancels[definition.name]),
                                          self._prefetch)
        self.ready = True

    async def stop(self) -> None:
        """Stop consuming and the loops; flush what the sweeper still holds."""
        self.ready = False
        if self._partitions is not None:
            await self._partitions.stop(self._lost)
        await self._transport.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._timers.stop()
        try:
            await self._outbox.sweep()
        except SagaSystemError as e:
            log.warning("final outbox sweep failed (the relay will re-send): %s", e)

    async def _gained(self, partition: int) -> None:
        assert self._on_reply is not None, "partitions are kept only once started"
        await self._transport.consume(self._topology.partition_queue(partition),
                                      self._on_reply, self._prefetch)
        self._count_partitions()

    async def _lost(self, partition: int) -> None:
        try:
            await self._transport.cancel(self._topology.partition_queue(partition))
        except SagaSystemError as e:
            # The connection is gone, and its consumers with it.
            log.warning("consumer of partition %d not cancelled: %s", partition, e)
        self._count_partitions()

    def _count_partitions(self) -> None:
        owned = 0 if self._partitions is None else len(self._partitions.owned)
        self._metrics.partitions_owned.set(owned)

    async def _reply_depth(self) -> int:
        """Replies waiting unread for this instance: the shared queue's and its partitions'."""
        queues = [self._topology.replies_queue]
        if self._partitions is not None:
            queues += [self._topology.partition_queue(p) for p in sorted(self._partitions.owned)]
        return sum([await self._transport.depth(q) for q in queues])

    def _spawn(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._tasks.append(asyncio.create_task(_forever(loop)))

    async def tick_once(self) -> int:
        """Fire the due timers and wait for them; returns how many sagas were due."""
        await self.heard.refresh()
        started = await self._timers.tick()
        await self._timers.idle()
        return started

    async def _run_timers(self) -> None:
        # Every tick starts what is due and moves on: a slow saga holds its own slot only.
        looked = -math.inf
        while True:
            if self._clock() - looked >= self._loops.heard_interval:
                looked = self._clock()
                await self.heard.refresh()
            try:
                await self._timers.tick()
            except SagaSystemError as e:
                log.warning("timer scan failed: %s", e)
            await asyncio.sleep(self._loops.tick_interval)

    async def _run_gauge(self) -> None:
        while True:
            await self.refresh_gauges()
            await asyncio.sleep(self._loops.gauge_interval)

    async def refresh_gauges(self) -> None:
        """Set the gauges counted outside this process: the store's and the broker's."""
        m = self._metrics
        m.timer_lag.set(self.heard.lag())
        try:
            now = self._clock()
            health = await self._store.health(now)
            for status in ACTIVE:
                m.inflight.labels(status.value).set(health.by_status.get(status, 0))
            for reason in QUARANTINE_REASONS:
                m.quarantined.labels(reason).set(health.quarantined.get(reason, 0))
            m.needs_attention.set(health.by_status.get(SagaStatus.NEEDS_ATTENTION, 0))
            m.oldest_unfinished.set(_age(now, health.oldest_unfinished_at))
            m.overdue.set(health.overdue)
            m.outbox_backlog.set(health.outbox_messages)
            m.outbox_oldest.set(_age(now, health.oldest_outbox_at))
            m.store_scrape.set(now)
        except SagaSystemError as e:
            log.warning("store gauges not refreshed: %s", e)
        for queue in self._dead_letter_queues:
            try:
                m.dead_letter_depth.labels(queue).set(await self._transport.depth(queue))
            except SagaSystemError as e:
                log.warning("depth of %s not read: %s", queue, e, extra={"queue": queue})


def _cancelled_saga(definition: AnyDefinition, message: WireMessage) -> str:
    """The saga a cancel names (raises CodecError if it names none)."""
    start = definition.start
    assert start is not None, f"{definition.name} has no start message"
    return saga_id(definition.name, read_cancel(start, message).key)


def _age(now: float, since: float | None) -> float:
    return 0.0 if since is None else max(0.0, now - since)


async def _forever(loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a background loop, restarting it if it ever fails: a dead sweeper or timer loop
    would silently stop the sagas from moving. This is the loops' only broad except."""
    while True:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background loop %s failed; restarting it", loop)
            await asyncio.sleep(1.0)
