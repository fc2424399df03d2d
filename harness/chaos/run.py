"""One chaos run: build the system, feed it orders and transfers under the fault loops,
heal, drain, audit, report."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TextIO

from audit.invariants import Report, audit
from catalog.plan import Platform, owners
from client import connect
from client.dlq import RabbitDeadLetters
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
from contracts.registry import ORDER_REQUESTED
from contracts.topology import Plan, Topology
from contracts.transfers import TRANSFER_REQUESTED, TransferRequested
from engine.state import TERMINAL
from harness.chaos.diagnose import diagnose
from harness.chaos.faults import Injector
from harness.chaos.plan import TRANSFER_SHARE, ChaosOptions, process_env
from harness.chaos.report import Findings, Outcomes, dead_letters, drain, print_table
from harness.processes import Cluster, ManagedProcess, start_standin
from harness.progress import Progress, Snapshot
from infra.adapters.rabbit import RabbitTransport
from infra.errors import PublishFailed, StoreFailed, StoreUnavailable
from infra.settings import CommonSettings, common_from_env
from orchestrator.app import definitions
from orchestrator.settings import OrchestratorSettings
from orchestrator.start import saga_id
from sagas.order import NAME as ORDER_SAGA
from sagas.transfer import NAME as TRANSFER_SAGA

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


def catalog(opts: ChaosOptions) -> Catalog:
    """Enough stock and money for most orders, so that most sagas get far before anything
    can go wrong."""
    rng = random.Random(opts.seed)
    skus = [f"SKU-{i:03d}" for i in range(8)]
    return Catalog(stock={s: opts.orders for s in skus},
                   balances={f"cust-{i:03d}": rng.randint(200, 5000) * 100 for i in range(30)},
                   prices={s: Decimal(rng.randint(100, 3000)) / 100 for s in skus})


def accounts(opts: ChaosOptions) -> dict[str, int]:
    """Enough that most transfers go through; a few accounts run dry."""
    return demo_accounts(count=10, seed=opts.seed)


@dataclass
class ChaosRun:
    """A system built for one run (``open``), with its fault injector."""

    opts: ChaosOptions
    out: TextIO
    err: TextIO
    log_dir: Path
    topology: Topology
    plan: Plan
    standins: dict[str, ManagedProcess]
    cluster: Cluster
    settings: CommonSettings
    transport: RabbitTransport
    stores: connect.Stores
    injector: Injector
    saga_ids: set[str] = field(default_factory=set)  # of the orders and transfers
    submitted: int = 0
    finished: int = 0  # sagas finished, as of the last count

    @classmethod
    async def open(cls, common: CommonSettings, opts: ChaosOptions, out: TextIO, err: TextIO,
                   mongo_configured: bool) -> ChaosRun:
        """Start the stand-ins (unless MongoDB is configured), declare the run's namespace,
        seed stock, money and accounts, and start every process."""
        tag = secrets.token_hex(3)
        log_dir = Path(tempfile.mkdtemp(prefix=f"saga-chaos-{tag}-"))
        topology = Topology(f"chaos-{tag}")
        plan = replace(Platform.load(common).plan(), partitions=opts.partitions)
        env = {"SAGA_AMQP_URL": common.amqp_url.get_secret_value(),
               "SAGA_NAMESPACE": topology.namespace, "SAGA_MONGO_DB": f"chaos_{tag}",
               "SAGA_STORE": "mongo"}
        standins: dict[str, ManagedProcess] = {}
        try:
            if not mongo_configured:
                # SQLite-backed stand-ins: a restarted server still has what it had.
                for owner in owners(plan.services):
                    process, url = await start_standin(
                        log_dir, sqlite_path=log_dir / f"{owner}.sqlite", name=f"standin-{owner}")
                    standins[owner] = process
                    env[f"SAGA_MONGO_URL_{owner.upper()}"] = url
                env["SAGA_TX_CONCURRENCY"] = "1"
            orchestrator_env, worker_env = process_env(opts)
            cluster = Cluster(env, log_dir, worker_env)
            cluster.add_system(plan.services, orchestrators=opts.orchestrators,
                               orchestrator_env=orchestrator_env)
            settings = common_from_env({**os.environ, **env}, "sagactl")
            transport = await connect.transport(settings, "sagactl-chaos")
        except BaseException:
            for standin in standins.values():
                standin.stop()
            raise
        stores = None
        try:
            await transport.declare(topology, plan)
            stores = await connect.stores(settings,
                                          definitions(OrchestratorSettings(common=settings)))
            await seed(stores.services["inventory"], stores.services["payment"], catalog(opts))
            for account, cents in accounts(opts).items():
                await add_deposit(stores.services["account"], account, cents)
            run = cls(opts, out, err, log_dir, topology, plan, standins, cluster, settings,
                      transport, stores, Injector(
                          cluster, standins, plan.services, stores.services["account"], topology,
                          _publisher(transport), random.Random(opts.seed)))
            await cluster.start()
            return run
        except BaseException:
            await _close(cluster, stores, transport, topology, plan, standins)
            raise

    async def close(self) -> None:
        """Stop everything and delete the run's namespace."""
        await _close(self.cluster, self.stores, self.transport, self.topology, self.plan,
                     self.standins)

    async def run(self) -> int:
        """The whole run; returns the exit code."""
        loops: list[asyncio.Task[None]] = []
        try:
            began = time.monotonic()
            stop, calm = asyncio.Event(), asyncio.Event()
            faults = [asyncio.create_task(loop(stop))
                      for loop in self.injector.loops(self.opts.faults)]
            supervisor = asyncio.create_task(self.injector.supervise(calm))
            counter = asyncio.create_task(self._count_finished())
            loops += [*faults, supervisor, counter,
                      asyncio.create_task(self.injector.watch_standins())]
            async with Progress("chaos", self._snapshot, self.err).running():
                await self._feed()
                await asyncio.sleep(max(0.0, self.opts.duration - (time.monotonic() - began)))
                stop.set()
                await asyncio.gather(*faults)
                healed = await self.injector.heal(self.opts.faults)
                counter.cancel()
                drained, missing = await drain(self.stores.sagas, self.saga_ids,
                                               self.opts.drain_timeout, self._progress)
            calm.set()
            await supervisor
            outcomes = await _patiently(lambda: Outcomes.count(self.stores.sagas))
            report = await _patiently(self._audit)
            dead = await dead_letters(self.transport, self.topology, self.plan)
            return print_table(Findings(
                self.opts, self.topology.namespace, self.log_dir, outcomes,
                self.injector.faults, self.injector.poison_sent, report, dead, missing, began,
                healed, drained, partial(diagnose, {p.name: p for p in [
                    *self.cluster.processes.values(), *self.standins.values()]})), self.out)
        finally:
            # Interrupted (Ctrl-C) or failed: the fault loops and the supervisor must not
            # kill or restart anything while the processes are being stopped.
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _feed(self) -> None:
        """Publish the orders, and a third as many transfers between them, evenly over the
        duration; a publish is retried until confirmed."""
        orders = demo_orders(catalog(self.opts), self.opts.orders, self.opts.seed,
                             prefix=self.topology.namespace)
        transfers: list[TransferRequested] = demo_transfers(
            accounts(self.opts), self.opts.transfers, self.opts.seed,
            prefix=f"{self.topology.namespace}-t")
        self.saga_ids = {saga_id(ORDER_SAGA, o.order_id) for o in orders if o.order_id}
        self.saga_ids |= {saga_id(TRANSFER_SAGA, t.transfer_id) for t in transfers
                          if t.transfer_id}
        publish = self.injector.publish
        gap = self.opts.duration * 0.8 / max(1, len(orders))
        for i, order in enumerate(orders):
            await publish(self.topology.orders_exchange, ORDER_REQUESTED, request_message(order))
            self.submitted += 1
            if i % TRANSFER_SHARE == 0 and i // TRANSFER_SHARE < len(transfers):
                await publish(self.topology.exchange("transfers"), TRANSFER_REQUESTED,
                              transfer_message(transfers[i // TRANSFER_SHARE]))
                self.submitted += 1
            await asyncio.sleep(gap)

    def _progress(self, finished: int) -> None:
        self.finished = finished

    def _snapshot(self) -> Snapshot:
        return Snapshot(self.finished, len(self.saga_ids),
                        (("submitted", self.submitted),
                         ("faults injected", self.injector.injected())))

    async def _count_finished(self) -> None:
        """Keep ``finished`` current for the progress line until the drain takes over."""
        while True:
            try:
                counts = await self.stores.sagas.count_by_status()
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
            return await audit(self.stores.sagas, self.stores.services, reader, self.topology)
        finally:
            await reader.close()


def _publisher(transport: RabbitTransport) -> Callable[[str, str, WireMessage],
                                                       Awaitable[None]]:
    async def publish(exchange: str, key: str, message: WireMessage) -> None:
        while True:  # the broker may be down right now: until it confirms
            try:
                await transport.publish(exchange, key, message)
                return
            except PublishFailed:
                await asyncio.sleep(0.5)
    return publish


async def _close(cluster: Cluster, stores: connect.Stores | None, transport: RabbitTransport,
                 topology: Topology, plan: Plan, standins: dict[str, ManagedProcess]) -> None:
    try:
        cluster.stop()
        if stores is not None:
            await stores.close()
        try:
            await transport.undeclare(topology, plan)
        finally:
            await transport.close()
    finally:
        for standin in standins.values():
            standin.stop()

