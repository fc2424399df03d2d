"""``sagactl demo``: run the whole system on orders and transfers with faults, then check it.

With a reachable RabbitMQ it runs the real processes (the orchestrator and each worker as
its own OS process), against the configured MongoDB or, when none is configured, the
stand-in wire server. Without a broker it runs embedded: in-memory broker and stores in
one process, with the same engine and the same worker handlers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import zip_longest
from pathlib import Path
from typing import Protocol, TextIO

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from audit.invariants import INVARIANTS, Report, audit
from catalog.plan import Platform, owners
from client import connect
from client.events import EventWatcher
from client.orders import request_message
from client.seed import (
    add_deposit,
    contention_accounts,
    demo_accounts,
    demo_catalog,
    demo_orders,
    demo_transfers,
    seed,
    transfer_message,
)
from contracts.commands import Operation
from contracts.envelope import WireMessage
from contracts.topology import ORDER_ENTRY, Entry, Topology, service_user
from contracts.transfers import (
    TRANSFER_COMPLETED,
    TRANSFER_FAILED,
    TRANSFER_REQUESTED,
)
from engine.decide import NoteKind
from engine.state import SagaStatus
from harness.processes import Cluster, ManagedProcess, http_get, start_standins
from harness.progress import Progress, Snapshot
from infra.adapters.memory_bus import InMemoryBroker
from infra.settings import CommonSettings, FaultSettings, common_from_env, redact
from infra.transport import Transport
from orchestrator.app import build, definitions
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.service import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.store import SagaRecord, SagaStore
from orchestrator.store_memory import MemorySagaStore
from workers.app import Worker
from workers.catalog import registered
from workers.metrics import WorkerMetrics
from workers.settings import WorkerSettings
from workers.store import DocumentStore
from workers.store_memory import MemoryDocumentStore


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the demo does."""

    orders: int = 300
    transient_rate: float = 0.03
    reject_rate: float = 0.02
    duplicate_rate: float = 0.02
    latency_ms: int = 0
    crash_orchestrator: bool = True
    orchestrators: int = 1
    timeout: float = 600.0
    embedded: bool = False
    seed: int = 7
    sagas: tuple[str, ...] = ("order", "transfer")  # which shipped sagas to run
    # Transfers among this few accounts (0: the usual dozen, a few too poor): every account
    # is wanted by many transfers at once, so lock waits and deadlocks are the rule.
    contention: int = 0
    # Requests without an outcome at any time, as clients with bounded concurrency keep
    # them (0: every request at once).
    in_flight: int = 0


class System(Protocol):
    """What the demo drives: a running deployment of the whole system."""

    @property
    def description(self) -> str: ...
    @property
    def transport(self) -> Transport: ...
    @property
    def topology(self) -> Topology: ...

    async def stores(self) -> tuple[SagaStore, Mapping[str, DocumentStore]]: ...
    async def crash_orchestrator(self) -> str: ...
    async def counters(self) -> Counter[str]: ...
    async def close(self) -> None: ...


def _fault_settings(opts: DemoOptions) -> FaultSettings:
    return FaultSettings(transient_rate=opts.transient_rate, reject_rate=opts.reject_rate,
                         duplicate_rate=opts.duplicate_rate, latency_ms=opts.latency_ms,
                         seed=opts.seed)


@dataclass
class EmbeddedSystem:
    """Everything in this process: in-memory broker, in-memory stores."""

    opts: DemoOptions
    description: str = "embedded (in-memory broker and stores, one process)"
    broker: InMemoryBroker = field(default_factory=InMemoryBroker)
    topology: Topology = field(default_factory=lambda: Topology("demo"))

    def __post_init__(self) -> None:
        self.common = CommonSettings(store="memory", namespace=self.topology.namespace)
        self.settings = OrchestratorSettings(common=self.common, step_timeout=2.0,
                                             tick_interval=0.05, relay_after=1.0,
                                             faults=FaultSettings(
                                                 duplicate_rate=self.opts.duplicate_rate))
        self.registry = definitions(self.settings)
        self.plan = Platform.load(self.common).plan()
        self.sagas = MemorySagaStore(self.registry)
        self.services = {name: MemoryDocumentStore() for name in self.plan.services}
        self.transport = self.broker.connect()
        self.registries = {name: CollectorRegistry() for name in self.plan.services}
        self.workers = [
            Worker(settings=WorkerSettings(common=self.common, service=name,
                                           faults=_fault_settings(self.opts)),
                   spec=registered()[name], transport=self.broker.connect(service_user(name)),
                   store=self.services[name], metrics=WorkerMetrics(self.registries[name]))
            for name in self.plan.services]
        self.orchestrator_registries: list[CollectorRegistry] = []
        self.orchestrator = self._orchestrator()

    def _orchestrator(self) -> Orchestrator:
        registry = CollectorRegistry()
        self.orchestrator_registries.append(registry)
        return build(self.settings, self.broker.connect(), self.sagas, self.registry,
                     OrchestratorMetrics(registry))

    async def start(self) -> None:
        """Start the orchestrator and the workers."""
        await self.transport.declare(self.topology, self.plan)
        await self.orchestrator.start()
        for worker in self.workers:
            await worker.start()

    async def stores(self) -> tuple[SagaStore, Mapping[str, DocumentStore]]:
        """The in-memory stores."""
        return self.sagas, self.services

    async def crash_orchestrator(self) -> str:
        """Drop the orchestrator without a final sweep and build a new one on the same store."""
        await self.orchestrator.stop()
        self.orchestrator = self._orchestrator()
        await self.orchestrator.start()
        return "orchestrator stopped and rebuilt on the same store"

    async def counters(self) -> Counter[str]:
        """Faults and their effects, from every component's metrics."""
        counts: Counter[str] = Counter()
        for registry in [*self.registries.values(), *self.orchestrator_registries]:
            counts += _scrape(generate_latest(registry).decode())
        return counts

    async def close(self) -> None:
        """Stop everything."""
        await self.orchestrator.stop()
        for worker in self.workers:
            await worker.stop()
        await self.transport.close()


@dataclass
class ProcessSystem:
    """Real processes on a real broker and MongoDB (or the stand-in)."""

    opts: DemoOptions
    common: CommonSettings
    mongo_configured: bool
    out: TextIO
    description: str = ""
    standins: list[ManagedProcess] = field(default_factory=list)
    transport: Transport = field(init=False)
    topology: Topology = field(init=False)

    async def start(self) -> None:
        """Start the stand-ins if needed, then the orchestrator and the workers."""
        tag = secrets.token_hex(3)
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"saga-demo-{tag}-"))
        self.topology = Topology(f"demo-{tag}")
        env = {"SAGA_AMQP_URL": self.common.amqp_url.get_secret_value(),
               "SAGA_NAMESPACE": self.topology.namespace, "SAGA_MONGO_DB": f"demo_{tag}",
               "SAGA_STORE": "mongo", "SAGA_TICK_INTERVAL": "0.1",
               "SAGA_FAULT_DUPLICATE": str(self.opts.duplicate_rate)}
        where = f"MongoDB at {redact(self.common.mongo_url.get_secret_value())}"
        self.plan = Platform.load(self.common).plan()
        if not self.mongo_configured:
            self.standins, urls = await start_standins(owners(self.plan.services), self.log_dir)
            env |= urls | {"SAGA_TX_CONCURRENCY": "1"}
            where = ("MongoDB stand-ins (mongoeco wire servers, one process per database; "
                     "no SAGA_MONGO_URL was set)")
        faults = {"SAGA_FAULT_TRANSIENT": str(self.opts.transient_rate),
                  "SAGA_FAULT_REJECT": str(self.opts.reject_rate),
                  "SAGA_FAULT_LATENCY_MS": str(self.opts.latency_ms),
                  "SAGA_FAULT_SEED": str(self.opts.seed)}
        self.settings = common_from_env({**os.environ, **env}, "sagactl")
        self.description = (f"real processes ({self.opts.orchestrators} orchestrator(s) + "
                            f"{len(self.plan.services)} workers), RabbitMQ at "
                            f"{redact(self.common.amqp_url.get_secret_value())}, {where}; "
                            f"logs in {self.log_dir}")
        self.cluster = Cluster(env, self.log_dir, faults)
        self.cluster.add_system(self.plan.services, orchestrators=self.opts.orchestrators)
        self.transport = await connect.transport(self.settings, "sagactl-demo")
        await self.transport.declare(self.topology, self.plan)
        self.connections = await connect.stores(self.settings, definitions(
            OrchestratorSettings(common=self.settings)))
        await self.cluster.start()

    async def stores(self) -> tuple[SagaStore, Mapping[str, DocumentStore]]:
        """The MongoDB stores of every process."""
        return self.connections.sagas, self.connections.services

    async def crash_orchestrator(self) -> str:
        """SIGKILL the orchestrator and start it again."""
        began = time.monotonic()
        self.cluster.processes["orchestrator"].kill()
        await asyncio.sleep(0.5)
        await self.cluster.restart("orchestrator")
        return f"orchestrator SIGKILLed and restarted (back in {time.monotonic() - began:.1f}s)"

    async def counters(self) -> Counter[str]:
        """Faults and their effects, scraped from every process's /metrics (counters of a
        killed process restart from zero)."""
        counts: Counter[str] = Counter()
        for process in self.cluster.processes.values():
            counts += _scrape(await http_get(process.port, "/metrics"))
        return counts

    async def close(self) -> None:
        """Stop every process, drop the demo's queues, stop the stand-in: whatever ``start``
        got to, since it may have failed half-way (an unreachable database)."""
        try:
            if (cluster := getattr(self, "cluster", None)) is not None:
                cluster.stop()
            if (transport := getattr(self, "transport", None)) is not None:
                try:
                    await transport.undeclare(self.topology, self.plan)
                finally:
                    await transport.close()
            if (connections := getattr(self, "connections", None)) is not None:
                await connections.close()
        finally:
            for standin in self.standins:
                standin.stop()


COUNTED = {
    "saga_worker_duplicate_commands_total": "duplicate commands absorbed (workers)",
    "saga_stale_replies_total": "stale replies ignored (orchestrator)",
    "saga_version_conflicts_total": "version conflicts (orchestrator)",
    "saga_worker_version_conflicts_total": "version conflicts (workers)",
    "saga_worker_fence_events_total": "fence: {kind}",
    "saga_worker_injected_faults_total": "injected: {kind}",
    "saga_outbox_relayed_total": "outbox messages relayed",
    "saga_lock_waits_total": "lock waits begun (orchestrator)",
    "saga_worker_lock_wait_seconds_count": "lock waits ended: {end}",
    "saga_deadlocks_total": "deadlocks resolved (a victim aborted)",
    "saga_worker_lock_wait_seconds_sum": "seconds waited for locks: {end}",
}


def _scrape(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = COUNTED.get(sample.name)
            if label is not None and sample.value:
                counts[label.format(**sample.labels)] += int(sample.value)
    return counts


async def drive(system: System, opts: DemoOptions, out: TextIO,
                err: TextIO) -> tuple[int, float, list[str]]:
    """Seed, publish every order and transfer, crash the orchestrator once, wait for every
    outcome; meanwhile a progress line on ``err``."""
    _, services = await system.stores()
    requests = await _requests(system, services, opts)
    watchers = {name: EventWatcher(system.transport, system.topology.exchange(e.exchange),
                                   e.outcomes, KEY_FIELDS[name])
                for name, e in ENTRIES.items() if name in requests}
    for watcher in watchers.values():
        await watcher.start()
    ids = {name: {key for key, _ in batch} for name, batch in requests.items()}
    total = sum(len(k) for k in ids.values())

    def finished() -> int:
        # The outcome events the watchers already collect: no store is read for progress.
        return sum(len(w.events) for w in watchers.values())

    began = time.monotonic()
    missing: set[str] = set()
    async with Progress("demo", lambda: Snapshot(finished(), total), err).running():
        events = await _publish(system, opts, requests, finished, total)
        for name, watcher in watchers.items():
            left = max(1.0, opts.timeout - (time.monotonic() - began))
            missing |= await watcher.wait_for(ids[name], left)
    elapsed = time.monotonic() - began
    if missing:
        out.write(f"{len(missing)} requests have no outcome after {elapsed:.0f}s, e.g. "
                  f"{sorted(missing)[:5]}\n")
    return len(missing), elapsed, events


async def _publish(system: System, opts: DemoOptions, requests: Mapping[str, Batch],
                   finished: Callable[[], int], total: int) -> list[str]:
    """Publish every request (with at most ``opts.in_flight`` unanswered, if set), and
    crash the orchestrator once 40 % have an outcome."""
    async def crash() -> str:
        await _wait_until(lambda: finished() >= total * 0.4, opts.timeout)
        return f"{await system.crash_orchestrator()} after {finished()} outcomes"

    crashing = asyncio.create_task(crash()) if opts.crash_orchestrator else None
    for sent, (exchange, key, message) in enumerate(_interleaved(system.topology, requests)):
        if opts.in_flight:
            await _wait_until(partial(_below, finished, sent + 1 - opts.in_flight),
                              opts.timeout)
        await system.transport.publish(exchange, key, message)
    return [] if crashing is None else [await crashing]


def _below(finished: Callable[[], int], needed: int) -> bool:
    return finished() >= needed


# The business key of each shipped saga's requests and outcomes.
KEY_FIELDS = {"order": "order_id", "transfer": "transfer_id"}
ENTRIES = {"order": ORDER_ENTRY,
           "transfer": Entry("transfer", "transfers", TRANSFER_REQUESTED,
                             (TRANSFER_COMPLETED, TRANSFER_FAILED))}
Batch = list[tuple[str, WireMessage]]


async def _requests(system: System, services: Mapping[str, DocumentStore],
                    opts: DemoOptions) -> dict[str, Batch]:
    """Seed what each saga needs and build its requests (business key, message)."""
    prefix = system.topology.namespace
    out: dict[str, Batch] = {}
    if "order" in opts.sagas:
        catalog = demo_catalog(opts.seed)
        await seed(services["inventory"], services["payment"], catalog)
        orders = demo_orders(catalog, opts.orders, opts.seed, prefix=f"{prefix}-o")
        out["order"] = [(o.order_id or "", request_message(o)) for o in orders]
    if "transfer" in opts.sagas:
        accounts = (contention_accounts(opts.contention) if opts.contention
                    else demo_accounts(seed=opts.seed))
        for account, cents in accounts.items():
            await add_deposit(services["account"], account, cents)
        transfers = demo_transfers(accounts, opts.orders, opts.seed, prefix=f"{prefix}-t")
        out["transfer"] = [(t.transfer_id or "", transfer_message(t)) for t in transfers]
    return out


def _interleaved(topology: Topology,
                 requests: Mapping[str, Batch]) -> list[tuple[str, str, WireMessage]]:
    """Every request, the sagas taking turns, as clients of both would send them."""
    queues = [[(topology.exchange(ENTRIES[n].exchange), ENTRIES[n].requested, m) for _, m in b]
              for n, b in requests.items()]
    return [item for group in zip_longest(*queues) for item in group if item is not None]


async def _wait_until(done: Callable[[], bool], timeout: float) -> None:
    for _ in range(max(1, int(timeout / 0.2))):
        if done():
            return
        await asyncio.sleep(0.2)


async def summarise(system: System, opts: DemoOptions, elapsed: float, events: list[str],
                    out: TextIO) -> Report:
    """Print the outcome table and the invariant check; return the report."""
    sagas, services = await system.stores()
    records = await sagas.find(None, 1_000_000)
    by_outcome: Counter[str] = Counter()
    compensated = 0
    for r in records:
        state = r.state
        if state.status is SagaStatus.FAILED and state.failure:
            by_outcome[f"{state.definition} rejected: {state.failure.reason_code}"] += 1
        else:
            by_outcome[f"{state.definition} {state.status.value}"] += 1
        if any(op is Operation.COMPENSATE and o.attempt for (_, op), o in state.ops.items()):
            compensated += 1
    faults = await system.counters()
    # Reading the dead-letter queues through the transport takes them: fine here, the
    # demo's namespace is deleted when it ends.
    report = await audit(sagas, services, system.transport, system.topology)
    _print_table(out, by_outcome, compensated, len(records), elapsed, faults, events)
    out.write("\nInvariants\n")
    failing = Counter(v.invariant for v in report.violations)
    for name in INVARIANTS:
        out.write(f"  {name:<44}{'ok' if not failing[name] else f'FAILED ({failing[name]})'}\n")
    unfinished = sum(1 for r in records if not r.state.finished)
    all_done = len(records) == opts.orders * len(opts.sagas) and not unfinished
    out.write(f"  {'every saga finished':<44}{'ok' if all_done else f'FAILED ({unfinished})'}\n")
    if opts.contention:
        _print_contention(out, records, faults)
    for v in report.violations[:20]:
        out.write(f"    {v.invariant}: {v.subject}: {v.detail}\n")
    return report


def _print_table(out: TextIO, by_outcome: Counter[str], compensated: int, total: int,
                 elapsed: float, faults: Counter[str], events: list[str]) -> None:
    out.write(f"\n{'Outcome':<44}{'Sagas':>7}\n")
    for definition in sorted({k.partition(" ")[0] for k in by_outcome}):
        fixed = (f"{definition} completed", f"{definition} needs_attention")
        rows = [fixed[0], *sorted(k for k in by_outcome
                                  if k.startswith(f"{definition} ") and k not in fixed), fixed[1]]
        for key in rows:
            out.write(f"{key.replace('needs_attention', 'needs attention'):<44}"
                      f"{by_outcome[key]:>7}\n")
    out.write(f"{'compensated (ran at least one undo)':<44}{compensated:>7}\n")
    rate = total / elapsed if elapsed else 0.0
    out.write(f"{'total':<44}{total:>7}   in {elapsed:.1f}s ({rate:.1f} sagas/s)\n")
    out.write("\nFaults and what absorbed them\n")
    for kind, n in sorted(faults.items()):
        out.write(f"  {kind:<42}{n:>7}\n")
    for event in events:
        out.write(f"  {event}\n")


def _print_contention(out: TextIO, records: list[SagaRecord], faults: Counter[str]) -> None:
    """What the contention run is for: how often sagas waited for each other, how many
    cycles were broken, and that no saga was sacrificed over and over. Victims are counted
    in the sagas' histories: a metric restarts from zero with a killed orchestrator."""
    victims = Counter({r.state.saga_id: n for r in records
                       if (n := sum(h.kind == NoteKind.DEADLOCK for h in r.state.history))})
    came_through = sum(1 for r in records if r.state.saga_id in victims
                       and r.state.status is SagaStatus.COMPLETED)
    waits = sum(n for k, n in faults.items() if k.startswith("lock waits ended"))
    waited = sum(n for k, n in faults.items() if k.startswith("seconds waited for locks"))
    rows = [("lock waits (prepares parked, then ended)", f"{waits:>7}"),
            ("mean lock wait", f"{waited / waits if waits else 0.0:>6.2f}s"),
            ("deadlocks resolved (victims aborted)", f"{sum(victims.values()):>7}"),
            ("sagas that gave way at least once", f"{len(victims):>7}"),
            ("of which completed in a new round", f"{came_through:>7}"),
            ("most times one saga was a victim", f"{max(victims.values(), default=0):>7}")]
    out.write("\nContention\n")
    for label, value in rows:
        out.write(f"  {label:<44}{value}\n")


async def run(common: CommonSettings, opts: DemoOptions, mongo_configured: bool,
              out: TextIO, err: TextIO | None = None) -> int:
    """The demo; returns the process exit code (0 only if every invariant holds). The
    results go to ``out``; a progress line goes to ``err`` (stderr unless given)."""
    system: EmbeddedSystem | ProcessSystem
    if not opts.embedded and not await _broker_reachable(common):
        out.write(f"No RabbitMQ at {redact(common.amqp_url.get_secret_value())}: "
                  "running embedded instead.\n")
        opts = replace(opts, embedded=True)
    if not opts.embedded and mongo_configured:
        await connect.require_databases(common)
    system = (EmbeddedSystem(opts) if opts.embedded
              else ProcessSystem(opts, common, mongo_configured, out))
    try:
        await system.start()
        out.write(f"Demo: {opts.orders} sagas of each of {', '.join(opts.sagas)} on "
                  f"{system.description}\n")
        out.write(f"Injected: transient failures {opts.transient_rate:.0%}, business rejections "
                  f"{opts.reject_rate:.0%}, duplicated messages {opts.duplicate_rate:.0%}"
                  f"{', one orchestrator crash' if opts.crash_orchestrator else ''}\n")
        out.flush()  # before the progress line starts on the other stream
        missing, elapsed, events = await drive(system, opts, out, err or sys.stderr)
        report = await summarise(system, opts, elapsed, events, out)
    finally:
        await system.close()
    ok = report.ok and not missing
    verdict = ("PASS: stock and money conserved, no order both charged and rejected, every "
               "transfer applied once, every saga finished" if ok
               else "FAIL: see the invariants above")
    out.write(f"\n{verdict}\n")
    return 0 if ok else 1


async def _broker_reachable(common: CommonSettings) -> bool:
    try:
        transport = await connect.transport(common, "sagactl-probe", within=3.0)
    except connect.Unreachable:
        return False
    await transport.close()
    return True
