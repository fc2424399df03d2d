"""The faults a chaos run injects from outside the processes, and the supervisor that
brings back what died, as systemd and a liveness probe would."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, PyMongoError, ServerSelectionTimeoutError

from catalog.plan import owners
from contracts.envelope import WireMessage
from contracts.topology import Topology
from harness.broker import LocalBroker
from harness.chaos.plan import BROKER_FAULTS, GAPS
from harness.poison import random_poison
from harness.processes import Cluster, ManagedProcess
from infra.errors import StoreFailed, TransientError
from workers.locks import Lock
from workers.store import DocumentStore

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
Publish = Callable[[str, str, WireMessage], Awaitable[None]]


async def serves_in_time(port: int, timeout_ms: int = 3000, within: float = 5.0) -> bool:
    """True if the database server on ``port`` serves a read within ``within`` seconds.

    A read, not a ping: a stand-in answers pings from its event loop even when its engine
    is frozen, or stuck in a transaction that refuses every other session's command. A
    read holds nothing (a transaction would refuse everyone else's commands while it is
    open), and another client's transaction refuses it only for moments, so it is tried
    again until then."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms)
    deadline = time.monotonic() + within
    try:
        while True:
            try:
                await client["standin_probe"]["liveness"].find_one({"_id": "probe"})
                return True
            except (ConnectionFailure, ServerSelectionTimeoutError):
                return False  # a frozen engine times the read out
            except PyMongoError:
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.2)
    finally:
        await client.close()


@dataclass
class Injector:
    """Kills, cuts and restarts; counts what it did in ``faults``."""

    cluster: Cluster
    standins: Mapping[str, ManagedProcess]  # by owner; empty on a configured MongoDB
    services: Sequence[str]
    accounts: DocumentStore  # the account service's store: who holds locks
    topology: Topology
    publish: Publish
    rng: random.Random
    broker: LocalBroker = field(default_factory=LocalBroker)
    faults: Counter[str] = field(default_factory=Counter)
    poison_sent: set[str] = field(default_factory=set)
    last_fault: float = 0.0
    held: set[str] = field(default_factory=set)  # processes a fault is restarting
    broker_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    standin_locks: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock))

    def loops(self, faults: frozenset[str]) -> list[Loop]:
        """One loop per fault kind that is on and injected from outside."""
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "orchestrator-kill": self._kill_orchestrator,
            "worker-kill": self._kill_worker,
            "lock-holder-kill": self._kill_lock_holder,
            "broker-connections": self._cut_connections,
            "broker-restart": self._restart_broker,
            "poison": self._poison,
        }
        if self.standins:
            actions["database-restart"] = self._restart_database
        return [self._every(gap, actions[kind]) for kind, gap in GAPS.items()
                if kind in faults and kind in actions]

    def injected(self) -> int:
        """Faults injected so far (not counting the repairs the supervisor had to make)."""
        return sum(n for kind, n in self.faults.items() if "(not injected)" not in kind)

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
            await self.restart(name)
        finally:
            self.held.discard(name)

    async def _kill_orchestrator(self) -> None:
        instances = sorted(n for n in self.cluster.processes if n.startswith("orchestrator"))
        # One instance: no draw, so that a seed's faults stay what they were.
        name = instances[0] if len(instances) == 1 else self.rng.choice(instances)
        await self._kill_and_restart(name, "orchestrator SIGKILL")

    async def _kill_worker(self) -> None:
        await self._kill_and_restart(self.rng.choice(self.services), "worker SIGKILL")

    async def _kill_lock_holder(self) -> None:
        """SIGKILL the account worker while it holds locks: its sagas' compensations or
        confirms must still release every key, and its parked prepares must survive."""
        try:
            locks = await self.accounts.all(Lock)
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
        owner = self.rng.choice(owners(self.services))
        standin = self.standins[owner]
        async with self.standin_locks[owner]:
            standin.kill()
            self.faults["database server restarted"] += 1
            await asyncio.sleep(self.rng.uniform(0.2, 2.0))
            standin.start()
            await standin.wait_ready(30.0)

    async def _poison(self) -> None:
        target, kind, message = random_poison(self.rng, self.topology)
        await self.publish(target.exchange, target.routing_key, message)
        self.poison_sent.add(str(message.message_id))
        self.faults[f"poison: {kind}"] += 1

    # --- the supervisor -------------------------------------------------------------------------

    async def watch_standins(self) -> None:
        """Restart a stand-in that stopped serving reads, as a liveness probe restarts a
        hung database server. mongoeco's SQLite engine can deadlock a stand-in
        for good (docs/standin.md); nothing acknowledged is lost by the restart, which
        SQLite keeps."""
        misses: Counter[str] = Counter()
        while True:
            await asyncio.sleep(2.0)
            for owner, standin in self.standins.items():
                async with self.standin_locks[owner]:
                    if not standin.alive or await serves_in_time(standin.port):
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

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart processes that died on their own (injected crash points), as systemd
        would, until the very end of the run."""
        while not stop.is_set():
            for name, process in self.cluster.processes.items():
                if name not in self.held and not process.alive:
                    await self.restart(name)
            await asyncio.sleep(0.3)

    async def restart(self, name: str) -> None:
        """Start a process again and wait until it is ready (the broker may be down now)."""
        process = self.cluster.processes[name]
        for _ in range(10):
            if not process.alive:
                process.start()
            try:
                await process.wait_ready(60.0)
                return
            except (RuntimeError, TimeoutError):
                await asyncio.sleep(1.0)  # e.g. the broker is down right now

    async def heal(self, faults: frozenset[str]) -> float:
        """Everything back up, each process with a clean configuration (the faults the
        processes inject themselves end here too); returns when that was done."""
        if BROKER_FAULTS & faults:
            async with self.broker_lock:
                await self._bring_broker_back()
        for standin in self.standins.values():
            if not standin.alive:
                standin.start()
                await standin.wait_ready(30.0)
        for name, process in self.cluster.processes.items():
            self.held.add(name)
            process.stop()
            for key in [k for k in process.env if k.startswith("SAGA_FAULT_")]:
                del process.env[key]
            await self.restart(name)
            self.held.discard(name)
        return time.monotonic()
