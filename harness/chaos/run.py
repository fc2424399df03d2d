"""``sagactl chaos``: the real processes under faults, then drain, audit and a table.

Orders are published steadily for ``--duration`` seconds while fault loops kill the
orchestrator and workers, cut and restart the broker, restart the database servers,
duplicate, delay and reorder messages, inject business and compensation failures and
feed poison messages to every queue. Then every fault stops, everything is brought back,
and the run waits for the system to drain: every order's saga finished, every outbox
empty. The audit then checks every invariant; the run fails on any violation.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from audit.dlq import RabbitDeadLetters
from audit.invariants import Report, audit
from catalog.plan import Platform, owners
from client import connect
from client.orders import request_message
from client.seed import (
    Catalog,
    add_deposit,
    demo_accounts,
    demo_orders,
    demo_transfers,
    seed,
    transfer_message,
)
from contracts.envelope import WireMessage
from contracts.reasons import is_business
from contracts.registry import ORDER_REQUESTED
from contracts.topology import Topology, dead_letter_queue
from contracts.transfers import TRANSFER_REQUESTED
from harness.broker import LocalBroker
from harness.poison import random_poison
from harness.processes import Cluster, ManagedProcess, start_standin
from harness.progress import Progress, Snapshot
from infra.consumer import REASON_HEADER
from infra.errors import PublishFailed, StoreFailed, StoreUnavailable, TransientError
from infra.rabbit import RabbitTransport
from infra.settings import CommonSettings, OrchestratorSettings, common_from_env, redact
from orchestrator.app import definitions
from orchestrator.start import saga_id
from orchestrator.state import TERMINAL, SagaStatus
from sagas.order import NAME as ORDER_SAGA
from sagas.transfer import NAME as TRANSFER_SAGA
from workers.locks import Lock

FAULTS = ("orchestrator-kill", "worker-kill", "lock-holder-kill", "worker-crash-points",
          "broker-connections",
          "broker-restart", "database-restart", "duplicates", "late-replies", "reorder",
          "poison", "business-failures", "compensation-failure")
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
BROKER_FAULTS = frozenset({"broker-connections", "broker-restart"})
# Long enough to ride out the queueing delays that kills and restarts cause: a timeout
# shorter than the backlog turns every delay into a retry storm.
STEP_TIMEOUT = 10.0
# A run where most sagas fail for technical reasons mostly tests the timeout path: at least
# this share of the orders not refused for a business reason must complete.
MIN_COMPLETED_SHARE = 0.5
# One transfer for every this many orders.
TRANSFER_SHARE = 3
# Seconds between counts of finished sagas for the progress line, until the drain counts
# them itself: one aggregate, light beside the run's own load on the database.
COUNT_EVERY = 5.0


async def _patiently[T](read: Callable[[], Awaitable[T]], timeout: float = 120.0) -> T:
    """Retry a read of the stores that failed because a stand-in did not answer in time.

    After the drain the stand-ins are up, but a two-core CI machine running the test suite
    beside them can keep one from answering within the driver's 5 s server selection: that
    says nothing about the run's guarantees, so the read is tried again, not the run failed.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await read()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(2.0)


async def _answers(port: int, timeout_ms: int = 3000) -> bool:
    """True if the database server on ``port`` answers a ping in time."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms)
    try:
        await client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        await client.close()


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    """What a chaos run does."""

    orders: int = 300
    duration: float = 60.0
    faults: frozenset[str] = frozenset(FAULTS)
    seed: int = 1
    drain_timeout: float = 300.0


def _process_env(opts: ChaosOptions) -> tuple[dict[str, str], dict[str, str]]:
    """Environment of the orchestrator (first) and of the workers (second)."""
    on = opts.faults.__contains__
    publishing = {"SAGA_FAULT_DUPLICATE": "0.05" if on("duplicates") else "0",
                  "SAGA_FAULT_REORDER_MS": "40" if on("reorder") else "0",
                  "SAGA_FAULT_SEED": str(opts.seed)}
    orchestrator = {**publishing, "SAGA_STEP_TIMEOUT": str(STEP_TIMEOUT),
                    "SAGA_TICK_INTERVAL": "0.1", "SAGA_BACKOFF": "0.1"}
    workers = {
        **publishing,
        "SAGA_FAULT_TRANSIENT": "0.02",
        "SAGA_FAULT_REJECT": "0.04" if on("business-failures") else "0",
        "SAGA_FAULT_SLOW": "0.02" if on("late-replies") else "0",
        "SAGA_FAULT_SLOW_MS": str(int(STEP_TIMEOUT * 1500)),
        "SAGA_FAULT_COMPENSATION_FAIL": "0.02" if on("compensation-failure") else "0",
        "SAGA_FAULT_CRASH": "0.002" if on("worker-crash-points") else "0",
    }
    return orchestrator, workers


@dataclass
class ChaosRun:
    """One run: processes, fault loops, the order feed, the drain and the audit."""

    common: CommonSettings
    opts: ChaosOptions
    out: TextIO
    mongo_configured: bool
    broker: LocalBroker = field(default_factory=LocalBroker)
    broker_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    faults: Counter[str] = field(default_factory=Counter)
    poison_sent: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    last_fault: float = 0.0
    standins: dict[str, ManagedProcess] = field(default_factory=dict)
    standin_locks: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock))
    outcomes: Counter[str] = field(default_factory=Counter)
    business_rejections: int = 0
    err: TextIO = field(default_factory=lambda: sys.stderr)  # the progress line
    order_ids: set[str] = field(default_factory=set)  # saga ids of the orders and transfers
    submitted: int = 0
    finished: int = 0  # sagas finished, as of the last count

    async def run(self) -> int:
        """The whole run; returns the exit code."""
        self.rng = random.Random(self.opts.seed)
        loops: list[asyncio.Task[None]] = []
        try:
            await self._start()
            began = time.monotonic()
            stop, calm = asyncio.Event(), asyncio.Event()
            faults = [asyncio.create_task(loop(stop)) for loop in self._fault_loops()]
            supervisor = asyncio.create_task(self._supervise(calm))
            counter = asyncio.create_task(self._count_finished())
            loops += [*faults, supervisor, counter, asyncio.create_task(self._watch_standins())]
            async with Progress("chaos", self._snapshot, self.err).running():
                await self._feed()
                await asyncio.sleep(max(0.0, self.opts.duration - (time.monotonic() - began)))
                stop.set()
                await asyncio.gather(*faults)
                healed = await self._heal()
                counter.cancel()
                drained, missing = await self._drain()
            calm.set()
            await supervisor
            await _patiently(self._count_outcomes)
            report = await _patiently(self._audit)
            dead = await self._dead_letters()
            return self._print(began, healed, drained, missing, report, dead)
        finally:
            # Interrupted (Ctrl-C) or failed: the fault loops and the supervisor must not
            # kill or restart anything while the processes are being stopped.
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._stop()

    # --- set-up and tear-down ---------------------------------------------------------------

    async def _start(self) -> None:
        tag = secrets.token_hex(3)
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"saga-chaos-{tag}-"))
        self.topology = Topology(f"chaos-{tag}")
        self.plan = Platform.load(self.common).plan()
        env = {"SAGA_AMQP_URL": self.common.amqp_url.get_secret_value(),
               "SAGA_NAMESPACE": self.topology.namespace, "SAGA_MONGO_DB": f"chaos_{tag}",
               "SAGA_STORE": "mongo"}
        if not self.mongo_configured:
            # SQLite-backed stand-ins: a restarted server still has what was written before.
            for owner in owners(self.plan.services):
                process, url = await start_standin(
                    self.log_dir, sqlite_path=self.log_dir / f"{owner}.sqlite",
                    name=f"standin-{owner}")
                self.standins[owner] = process
                env[f"SAGA_MONGO_URL_{owner.upper()}"] = url
            env["SAGA_TX_CONCURRENCY"] = "1"
        orchestrator_env, worker_env = _process_env(self.opts)
        self.cluster = Cluster(env, self.log_dir, worker_env)
        self.cluster.add("orchestrator", "orchestrator", orchestrator_env)
        for service in self.plan.services:
            self.cluster.add_worker(service, worker_env)
        self.settings = common_from_env({**os.environ, **env}, "sagactl")
        self.transport: RabbitTransport = await connect.transport(self.settings, "sagactl-chaos")
        await self.transport.declare(self.topology, self.plan)
        self.stores = await connect.stores(self.settings,
                                           definitions(OrchestratorSettings(common=self.settings)))
        self.sagas_store = self.stores.sagas
        await seed(self.stores.services["inventory"], self.stores.services["payment"],
                   self._catalog())
        for account, cents in self._accounts().items():
            await add_deposit(self.stores.services["account"], account, cents)
        await self.cluster.start()

    def _accounts(self) -> dict[str, int]:
        # Enough that most transfers go through; a few accounts run dry.
        return demo_accounts(count=10, seed=self.opts.seed)

    def _catalog(self) -> Catalog:
        # Enough for most orders, so that most sagas get far before anything can go wrong.
        rng = random.Random(self.opts.seed)
        skus = [f"SKU-{i:03d}" for i in range(8)]
        return Catalog(stock={s: self.opts.orders for s in skus},
                       balances={f"cust-{i:03d}": rng.randint(200, 5000) * 100 for i in range(30)},
                       prices={s: Decimal(rng.randint(100, 3000)) / 100 for s in skus})

    async def _stop(self) -> None:
        """Undo whatever ``_start`` got to (it may have been interrupted half-way)."""
        try:
            if (cluster := getattr(self, "cluster", None)) is not None:
                cluster.stop()
            if (stores := getattr(self, "stores", None)) is not None:
                await stores.close()
            if (transport := getattr(self, "transport", None)) is not None:
                try:
                    await transport.undeclare(self.topology, self.plan)
                finally:
                    await transport.close()
        finally:
            for standin in self.standins.values():
                standin.stop()

    # --- orders and transfers -----------------------------------------------------------------

    async def _feed(self) -> None:
        """Publish the orders, and a third as many transfers between them, evenly over the
        duration; a publish is retried until confirmed."""
        orders = demo_orders(self._catalog(), self.opts.orders, self.opts.seed,
                             prefix=self.topology.namespace)
        transfers = demo_transfers(self._accounts(), self.opts.orders // TRANSFER_SHARE,
                                   self.opts.seed, prefix=f"{self.topology.namespace}-t")
        self.order_ids = {saga_id(ORDER_SAGA, o.order_id) for o in orders if o.order_id}
        self.order_ids |= {saga_id(TRANSFER_SAGA, t.transfer_id) for t in transfers
                           if t.transfer_id}
        gap = self.opts.duration * 0.8 / max(1, len(orders))
        for i, order in enumerate(orders):
            await self._publish(self.topology.orders_exchange, ORDER_REQUESTED,
                                request_message(order))
            self.submitted += 1
            if i % TRANSFER_SHARE == 0 and i // TRANSFER_SHARE < len(transfers):
                await self._publish(self.topology.exchange("transfers"), TRANSFER_REQUESTED,
                                    transfer_message(transfers[i // TRANSFER_SHARE]))
                self.submitted += 1
            await asyncio.sleep(gap)

    async def _publish(self, exchange: str, key: str, message: WireMessage) -> None:
        while True:
            try:
                await self.transport.publish(exchange, key, message)
                return
            except PublishFailed:
                await asyncio.sleep(0.5)

    # --- faults -------------------------------------------------------------------------------

    def _fault_loops(self) -> list[Loop]:
        on = self.opts.faults.__contains__
        loops: list[Loop] = []
        if on("orchestrator-kill"):
            loops.append(self._every((6, 12), self._kill_orchestrator))
        if on("worker-kill"):
            loops.append(self._every((4, 9), self._kill_worker))
        if on("lock-holder-kill"):
            loops.append(self._every((10, 20), self._kill_lock_holder))
        if on("broker-connections"):
            loops.append(self._every((12, 20), self._cut_connections))
        if on("broker-restart"):
            loops.append(self._every((20, 35), self._restart_broker))
        if on("database-restart") and self.standins:
            loops.append(self._every((10, 20), self._restart_database))
        if on("poison"):
            loops.append(self._every((0.3, 1.0), self._poison))
        return loops

    def _every(self, gap: tuple[float, float],
               fault: Callable[[], Awaitable[None]]) -> Loop:
        async def loop(stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.rng.uniform(*gap))
                except TimeoutError:
                    await fault()
                    self.last_fault = time.monotonic()
        return loop

    async def _kill_and_restart(self, name: str, kind: str) -> None:
        self.held.add(name)
        try:
            self.cluster.processes[name].kill()
            self.faults[kind] += 1
            await asyncio.sleep(self.rng.uniform(0.2, 2.0))
            await self._restart(name)
        finally:
            self.held.discard(name)

    async def _kill_orchestrator(self) -> None:
        await self._kill_and_restart("orchestrator", "orchestrator SIGKILL")

    async def _kill_worker(self) -> None:
        await self._kill_and_restart(self.rng.choice(self.plan.services), "worker SIGKILL")

    async def _kill_lock_holder(self) -> None:
        """SIGKILL the account worker while it holds locks: its sagas' compensations or
        confirms must still release every key, and its parked prepares must survive."""
        try:
            locks = await self.stores.services["account"].all(Lock)
        except (TransientError, StoreFailed):
            return  # its database is being restarted: another time
        held = sum(len(lock.holders) for lock in locks)
        if held and "account" not in self.held:
            self.faults["lock holder SIGKILL (keys held)"] += 1
            self.faults["keys held at those kills"] += held
            await self._kill_and_restart("account", "worker SIGKILL")

    async def _cut_connections(self) -> None:
        # One broker operation at a time: a cut while the restart loop has the app stopped
        # fails, and starting the app from here then would race that loop's own start.
        async with self.broker_lock:
            if await self.broker.ctl_call("close_all_connections", "chaos: connection cut"):
                self.faults["broker connections cut"] += 1
            else:
                await self._bring_broker_back()

    async def _restart_broker(self) -> None:
        async with self.broker_lock:
            self.faults["broker stopped and started"] += 1
            if await self.broker.ctl_call("stop_app"):
                await asyncio.sleep(self.rng.uniform(1.0, 4.0))
            await self._bring_broker_back()

    async def _bring_broker_back(self) -> None:
        # A rabbitmqctl call that hangs is no fault of the system under test, but a hung
        # node is: it is brought back as an operator would, and the table says so.
        if await self.broker.recover() != "start_app":
            self.faults["hung broker restarted hard (not injected)"] += 1

    async def _restart_database(self) -> None:
        owner = self.rng.choice(owners(self.plan.services))
        standin = self.standins[owner]
        async with self.standin_locks[owner]:
            standin.kill()
            self.faults["database server restarted"] += 1
            await asyncio.sleep(self.rng.uniform(0.2, 2.0))
            standin.start()
            await standin.wait_ready(30.0)

    async def _watch_standins(self) -> None:
        """Restart a stand-in that stopped answering, as a liveness probe restarts a hung
        database server. mongoeco's SQLite engine can deadlock a stand-in for good (README,
        Known limits); nothing acknowledged is lost by the restart, which SQLite keeps."""
        misses: Counter[str] = Counter()
        while True:
            await asyncio.sleep(2.0)
            for owner, standin in self.standins.items():
                async with self.standin_locks[owner]:
                    if not standin.alive or await _answers(standin.port):
                        misses[owner] = 0
                        continue
                    misses[owner] += 1
                    if misses[owner] < 3:
                        continue
                    misses[owner] = 0
                    standin.kill()
                    self.faults["hung stand-in restarted by the probe (not injected)"] += 1
                    standin.start()
                    await standin.wait_ready(30.0)

    async def _poison(self) -> None:
        target, kind, message = random_poison(self.rng, self.topology)
        await self._publish(target.exchange, target.routing_key, message)
        self.poison_sent.add(str(message.message_id))
        self.faults[f"poison: {kind}"] += 1

    async def _supervise(self, stop: asyncio.Event) -> None:
        """Restart processes that died on their own (injected crash points), as systemd would,
        until the very end of the run."""
        while not stop.is_set():
            for name, process in self.cluster.processes.items():
                if name not in self.held and not process.alive:
                    await self._restart(name)
            await asyncio.sleep(0.3)

    async def _restart(self, name: str) -> None:
        process = self.cluster.processes[name]
        for _ in range(10):
            if not process.alive:
                process.start()
            try:
                await process.wait_ready(60.0)
                return
            except (RuntimeError, TimeoutError):
                await asyncio.sleep(1.0)  # e.g. the broker is down right now

    # --- the end ------------------------------------------------------------------------------

    async def _heal(self) -> float:
        """Everything back up; returns when that was done."""
        if BROKER_FAULTS & self.opts.faults:
            async with self.broker_lock:
                await self._bring_broker_back()
        for standin in self.standins.values():
            if not standin.alive:
                standin.start()
                await standin.wait_ready(30.0)
        # The processes' own faults (crash points, duplicates, late replies...) end here too:
        # each comes back with a clean configuration.
        for name, process in self.cluster.processes.items():
            self.held.add(name)
            process.stop()
            for key in [k for k in process.env if k.startswith("SAGA_FAULT_")]:
                del process.env[key]
            await self._restart(name)
            self.held.discard(name)
        return time.monotonic()

    async def _drain(self) -> tuple[float | None, set[str]]:
        """Wait until every order's saga finished and every outbox is empty."""
        deadline = time.monotonic() + self.opts.drain_timeout
        missing: set[str] = set(self.order_ids)
        while time.monotonic() < deadline:
            try:
                records = await self.sagas_store.find(None, 1_000_000)
                outbox = await self.sagas_store.pending_outbox(float("inf"), 1)
            except Exception:
                await asyncio.sleep(1.0)
                continue
            finished = {r.state.saga_id for r in records if r.state.finished}
            missing = self.order_ids - finished
            self.finished = len(self.order_ids) - len(missing)
            if not missing and not outbox:
                return time.monotonic(), set()
            await asyncio.sleep(1.0)
        return None, missing

    # --- progress -------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        injected = sum(n for kind, n in self.faults.items() if "(not injected)" not in kind)
        return Snapshot(self.finished, len(self.order_ids),
                        (("submitted", self.submitted), ("faults injected", injected)))

    async def _count_finished(self) -> None:
        """Keep ``finished`` current for the progress line until the drain takes over."""
        while True:
            try:
                counts = await self.sagas_store.count_by_status()
            except (StoreUnavailable, StoreFailed):
                pass  # a database restart, say: the line keeps the last count
            else:
                self.finished = sum(n for status, n in counts.items() if status in TERMINAL)
            await asyncio.sleep(COUNT_EVERY)

    async def _audit(self) -> Report:
        """Every invariant, dead-letter queues included (read without losing anything)."""
        reader = RabbitDeadLetters(self.settings.amqp_url.get_secret_value())
        await reader.connect()
        try:
            return await audit(self.sagas_store, self.stores.services, reader, self.topology)
        finally:
            await reader.close()

    async def _count_outcomes(self) -> None:
        """Outcomes from the store: every saga, however its announcement fared."""
        self.outcomes.clear()  # a retried count starts again
        self.business_rejections = 0
        for r in await self.sagas_store.find(None, 1_000_000):
            state = r.state
            if state.status is SagaStatus.FAILED and state.failure is not None:
                code = state.failure.reason_code
                self.outcomes[f"{state.definition} rejected: {code}"] += 1
                self.business_rejections += is_business(code)
            else:
                self.outcomes[f"{state.definition} {state.status.value.replace('_', ' ')}"] += 1

    def completed_share(self) -> tuple[int, int]:
        """Completed sagas, and sagas not refused for a business reason."""
        total = sum(self.outcomes.values())
        done = sum(n for key, n in self.outcomes.items() if key.endswith(" completed"))
        return done, total - self.business_rejections

    async def _dead_letters(self) -> dict[str, list[dict[str, object]]]:
        """Everything in the dead-letter queues (the run's namespace is deleted afterwards)."""
        found: dict[str, list[dict[str, object]]] = {}
        for queue in self.topology.consumer_queues(self.plan):
            messages: list[dict[str, object]] = []
            while (m := await self.transport.get(dead_letter_queue(queue))) is not None:
                messages.append({"poison": m.headers.get("x-chaos-poison"),
                                 "reason": m.headers.get(REASON_HEADER)
                                 or m.headers.get("x-first-death-reason"),
                                 "type": m.type, "message_id": m.message_id})
            found[queue] = messages
        return found

    def _print(self, began: float, healed: float, drained: float | None, missing: set[str],
               report: Report, dead: dict[str, list[dict[str, object]]]) -> int:
        return print_table(self, began, healed, drained, missing, report, dead)


def _worker_faults(log_dir: Path) -> Counter[str]:
    """Faults the processes injected themselves, counted from their logs across restarts."""
    counts: Counter[str] = Counter()
    for path in log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"fault": ' in line:
                try:
                    counts[str(json.loads(line)["fault"])] += 1
                except (ValueError, KeyError):
                    continue
    return counts


def print_table(run: ChaosRun, began: float, healed: float, drained: float | None,
                missing: set[str], report: Report, dead: dict[str, list[dict[str, object]]]) -> int:
    """The summary; returns the exit code (0 only with no violation and a full drain)."""
    out = run.out
    out.write(f"\nChaos run: {run.opts.orders} orders and {run.opts.orders // TRANSFER_SHARE} "
              f"transfers over {run.opts.duration:.0f}s, seed {run.opts.seed}, namespace "
              f"{run.topology.namespace}, logs in {run.log_dir}\n")
    out.write(f"\n{'Sagas':<44}{'count':>7}\n")
    for key, n in sorted(run.outcomes.items(), key=lambda kv: (-kv[1], kv[0])):
        out.write(f"  {key:<42}{n:>7}\n")
    out.write(f"\n{'Faults injected':<44}{'count':>7}\n")
    faults = run.faults + _worker_faults(run.log_dir)
    for key, n in sorted(faults.items()):
        out.write(f"  {key:<42}{n:>7}\n")
    # At-least-once: a consumer killed between its dead-letter copy and its ack copies the
    # message again, so the dead-letter queues are compared by message id.
    poison_dead = {str(m["message_id"]) for msgs in dead.values() for m in msgs if m["poison"]}
    lost_poison = run.poison_sent - poison_dead
    valid_dead = [m for msgs in dead.values() for m in msgs if not m["poison"]]
    unexplained = [m for msgs in dead.values() for m in msgs if not m["reason"]]
    violations = (len(report.violations) + len(valid_dead) + len(unexplained) + len(missing)
                  + len(lost_poison))
    out.write(f"\n{'Checks':<44}{'result':>7}\n")
    out.write(f"  {'invariant violations (audit)':<42}{len(report.violations):>7}\n")
    out.write(f"  {'orders without a finished saga':<42}{len(missing):>7}\n")
    out.write(f"  {'poison messages sent':<42}{len(run.poison_sent):>7}\n")
    out.write(f"  {'poison messages not in a dead-letter queue':<42}{len(lost_poison):>7}\n")
    out.write(f"  {'valid messages dead-lettered':<42}{len(valid_dead):>7}\n")
    out.write(f"  {'dead letters without a reason':<42}{len(unexplained):>7}\n")
    out.write(f"  {'sagas needing attention (visible, counted)':<42}{len(report.needs_attention):>7}\n")
    completed, eligible = run.completed_share()
    share = completed / eligible if eligible else 1.0
    out.write(f"  {'completed (of those not refused by business)':<44}"
              f"{f'{completed}/{eligible} ({share:.0%})':>16}\n")
    drain = "did not drain" if drained is None else f"{drained - healed:.1f}s"
    out.write(f"  {'time to drain after the last fault':<42}{drain:>7}\n")
    out.write(f"  {'total run time':<42}{time.monotonic() - began:>6.0f}s\n")
    for v in report.violations[:20]:
        out.write(f"    {v.invariant}: {v.subject}: {v.detail}\n")
    for m in valid_dead[:10]:
        out.write(f"    valid message dead-lettered: {m}\n")
    enough = share >= MIN_COMPLETED_SHARE
    if not enough:
        out.write(f"    fewer than {MIN_COMPLETED_SHARE:.0%} of the orders not refused by "
                  f"business completed: the run mostly tested failure paths\n")
    ok = violations == 0 and drained is not None and enough
    out.write(f"\n{'PASS' if ok else 'FAIL'}: {violations} violation(s)\n")
    return 0 if ok else 1


async def run(common: CommonSettings, opts: ChaosOptions, mongo_configured: bool,
              out: TextIO, err: TextIO | None = None) -> int:
    """``sagactl chaos``: the table goes to ``out``, a progress line to ``err`` (stderr
    unless given). An unreachable broker or configured database raises
    ``connect.Unreachable`` within seconds, before anything is started."""
    probe = await connect.transport(common, "sagactl-chaos-probe", within=3.0)
    await probe.close()
    if mongo_configured:
        await connect.require_databases(common)
    if BROKER_FAULTS & opts.faults and not await _local_broker():
        out.write("broker faults need rabbitmqctl for the broker at "
                  f"{redact(common.amqp_url.get_secret_value())}; running without them\n")
        opts = ChaosOptions(opts.orders, opts.duration, opts.faults - BROKER_FAULTS, opts.seed,
                            opts.drain_timeout)
    chaos = ChaosRun(common, opts, out, mongo_configured, err=err or sys.stderr)
    return await chaos.run()


async def _local_broker() -> bool:
    return await LocalBroker().answers()
