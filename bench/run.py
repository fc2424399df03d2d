"""One benchmark: every system, several runs, each run on freshly started processes."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import broker, catalog
from bench.baseline import happy_path
from bench.client import Client, LoopResult
from bench.measure import broker_pid, cpu_seconds, delta, percentile, rss_bytes, scrape, total_cpu
from bench.profile import Profiler
from bench.systems import Deployment, Kind, System
from contracts.orders import OrderRequested
from infra.adapters.rabbit import RabbitTransport

DB_METRIC = "saga_db_commands_total"
CONFLICTS_METRIC = "saga_version_conflicts_total"
Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many sagas each phase runs, for one system."""

    warmup: int
    latency_1: int
    latency_64: int
    saturation: int
    saturation_inflight: int
    rss: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything ``python -m bench`` was asked to do."""

    systems: tuple[System, ...]
    sizes: dict[Kind, Sizes]
    runs: int
    rss: bool
    amqp_url: str
    log_dir: Path
    timeout: float = 120.0
    extra_env: dict[str, str] = field(default_factory=dict)
    profile_dir: Path | None = None


@dataclass
class Figures:
    """What one run measured for one system."""

    rate: float = math.nan
    rate_64: float = math.nan
    p50_1: float = math.nan
    p99_1: float = math.nan
    p50_64: float = math.nan
    p99_64: float = math.nan
    cpu_per_saga: float = math.nan
    standin_cpu_per_saga: float = math.nan
    broker_cpu_per_saga: float = math.nan
    published_per_saga: float = math.nan
    delivered_per_saga: float = math.nan
    db_per_saga: float = math.nan
    db_orchestrator_per_saga: float = math.nan
    conflicts_per_1000: float = math.nan  # the orchestrators' saga version conflicts
    db_by_command: Counter[str] = field(default_factory=Counter)
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    lost: int = 0


@dataclass(frozen=True, slots=True)
class Rss:
    """The orchestrator's resident memory with many sagas in flight."""

    inflight: int
    rss: int
    reached_after: float


COMMANDS_PER_SAGA = sum(len(stage) for stage in happy_path())
MESSAGES_PER_SAGA = 1 + 2 * COMMANDS_PER_SAGA + 1  # request, commands, replies, outcome


class Bench:
    """Runs the plan; one client connection for the whole benchmark."""

    def __init__(self, plan: Plan, say: Say) -> None:
        self.plan = plan
        self.say = say
        self.tag = f"bench-{secrets.token_hex(3)}"
        self.background_per_second = math.nan

    async def run(self) -> tuple[dict[System, list[Figures]], dict[System, Rss]]:
        """Measure every system ``runs`` times (interleaved, so that drift hits all alike)."""
        self.transport = RabbitTransport(self.plan.amqp_url, connection_name=self.tag)
        await self.transport.connect()
        try:
            self.background_per_second = await self._background()
            figures: dict[System, list[Figures]] = {s: [] for s in self.plan.systems}
            for run in range(1, self.plan.runs + 1):
                for system in self.plan.systems:
                    self.say(f"run {run}/{self.plan.runs}: {system.name}")
                    figures[system].append(await self._measure(system, self._namespace(system, run)))
            rss: dict[System, Rss] = {}
            if self.plan.rss:
                for system in self.plan.systems:
                    if system.orchestrators > 1:
                        continue  # the resident memory of one instance is the question
                    self.say(f"resident memory: {system.name}, "
                             f"{self.plan.sizes[system.kind].rss} sagas in flight")
                    rss[system] = await self._rss(system, self._namespace(system, "rss"))
            return figures, rss
        finally:
            await self.transport.close()

    async def _background(self) -> float:
        """Messages per second the broker handles while the benchmark sends nothing."""
        before = await broker.counters()
        began = time.monotonic()
        await asyncio.sleep(3.0)
        after = await broker.counters()
        return (after - before).published / (time.monotonic() - began)

    def _namespace(self, system: System, run: int | str) -> str:
        return f"{self.tag}-{system.name.replace('+', '-').replace('*', 'x')}-{run}"

    def _deployment(self, system: System, namespace: str) -> Deployment:
        return Deployment(system.kind, self.plan.amqp_url, namespace, self.plan.log_dir / namespace,
                          {**system.env, **self.plan.extra_env}, uvloop=system.uvloop_launcher,
                          orchestrators=system.orchestrators)

    async def _measure(self, system: System, namespace: str) -> Figures:
        sizes = self.plan.sizes[system.kind]
        deployment = self._deployment(system, namespace)
        client = Client(self.transport, deployment.topology, self.plan.timeout)
        try:
            await deployment.start(self.transport)
            await client.start()
            batches = _batches(namespace, sizes)
            await client.closed_loop(batches["warmup"], min(16, sizes.saturation_inflight))
            one = await client.closed_loop(batches["latency_1"], 1)
            many = await client.closed_loop(batches["latency_64"], 64)
            figures = await self._saturate(deployment, client, batches["saturation"],
                                           sizes.saturation_inflight)
            deployment.check_alive()
        finally:
            await deployment.stop(self.transport)
        figures.p50_1, figures.p99_1 = percentile(one.latencies, 50), percentile(one.latencies, 99)
        figures.p50_64, figures.p99_64 = percentile(many.latencies, 50), percentile(many.latencies, 99)
        figures.rate_64 = many.rate
        figures.failed += one.failed + many.failed
        figures.lost += one.lost + many.lost
        self.say(f"  {one.completed} sagas at 1 in flight, {many.completed} at 64 "
                 f"({many.rate:.0f}/s), saturation {figures.rate:.0f}/s; "
                 f"failed {figures.failed}, lost {figures.lost}; CPU ms/saga "
                 + ", ".join(f"{r} {1000 * c:.1f}" for r, c in figures.cpu_by_process.items()))
        return figures

    async def _saturate(self, deployment: Deployment, client: Client,
                        orders: list[OrderRequested], inflight: int) -> Figures:
        """The saturation phase, with CPU, broker and database counters around it."""
        ports = deployment.metrics_ports
        db_before = await scrape(ports, DB_METRIC)
        conflicts_before = await scrape(ports, CONFLICTS_METRIC)
        messages_before = await broker.counters()
        cpu_before = {role: cpu_seconds(pid) for role, pid in deployment.pids.items()}
        standin_before = total_cpu(deployment.standin_pids)
        beam = broker_pid()
        broker_before = total_cpu([beam] if beam else [])
        profiler = Profiler(self.plan.profile_dir) if self.plan.profile_dir else None
        if profiler is not None:
            await profiler.start(deployment.namespace, deployment.pids)
        result = await client.closed_loop(orders, inflight)
        if profiler is not None:
            await profiler.stop()
        cpu = {role: cpu_seconds(pid) - cpu_before[role] for role, pid in deployment.pids.items()}
        standin_cpu = total_cpu(deployment.standin_pids) - standin_before
        broker_cpu = total_cpu([beam] if beam else []) - broker_before
        await asyncio.sleep(0.5)  # the last acknowledgements reach the broker
        messages = await broker.counters() - messages_before
        db = delta(await scrape(ports, DB_METRIC), db_before)
        conflicts = delta(await scrape(ports, CONFLICTS_METRIC), conflicts_before)
        figures = _figures(result, sum(cpu.values()), standin_cpu, messages, db,
                           bool(deployment.standins))
        if ports:
            figures.conflicts_per_1000 = 1000 * sum(
                sum(c.values()) for role, c in conflicts.items()
                if role.startswith("orchestrator")) / (result.completed or 1)
        figures.cpu_by_process = {role: c / (result.completed or 1) for role, c in cpu.items()}
        figures.broker_cpu_per_saga = broker_cpu / (result.completed or 1) if beam else math.nan
        return figures

    async def _rss(self, system: System, namespace: str) -> Rss:
        """Start only the orchestrator, submit N orders, wait until it has started every
        saga (its first command for each is in the order service's queue), read VmRSS."""
        count = self.plan.sizes[system.kind].rss
        deployment = self._deployment(system, namespace)
        client = Client(self.transport, deployment.topology, self.plan.timeout)
        try:
            await deployment.start(self.transport, workers=False)
            orders = catalog.orders(f"{namespace}-o", count)
            began = time.monotonic()
            for i in range(0, count, 500):
                await asyncio.gather(*(client.publish(o) for o in orders[i:i + 500]))
            queue = deployment.topology.command_queue("order")
            deadline = began + self.plan.timeout * 5
            started = 0
            while started < count and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                started = await broker.queue_depth(self.plan.amqp_url, queue)
            deployment.check_alive()
            await asyncio.sleep(1.0)  # let the sweeper and the allocator settle
            rss = rss_bytes(deployment.pids["orchestrator"])
            return Rss(started, rss, time.monotonic() - began)
        finally:
            await deployment.stop(self.transport)


def _batches(namespace: str, sizes: Sizes) -> dict[str, list[OrderRequested]]:
    """Distinct orders for every phase (an order id starts at most one saga)."""
    return {phase: catalog.orders(f"{namespace}-{phase}", getattr(sizes, phase))
            for phase in ("warmup", "latency_1", "latency_64", "saturation")}


def _figures(result: LoopResult, cpu: float, standin_cpu: float, messages: broker.BrokerCounters,
             db: dict[str, Counter[str]], standin: bool) -> Figures:
    n = result.completed or 1
    figures = Figures(rate=result.rate, cpu_per_saga=cpu / n, failed=result.failed,
                      lost=result.lost, published_per_saga=messages.published / n,
                      delivered_per_saga=messages.delivered / n)
    if standin:
        figures.standin_cpu_per_saga = standin_cpu / n
        by_command: Counter[str] = Counter()
        for counts in db.values():
            by_command.update(counts)
        figures.db_by_command = Counter({k: v / n for k, v in by_command.items() if v})
        figures.db_per_saga = sum(by_command.values()) / n
        figures.db_orchestrator_per_saga = sum(
            sum(counts.values()) for role, counts in db.items()
            if role.startswith("orchestrator")) / n
    return figures
