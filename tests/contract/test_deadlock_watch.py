"""The deadlock watch against the saga store: two transfers that each wait for a lock the
other holds form a cycle; one look aborts the younger with DEADLOCK, once, whichever
process looks, and the older one keeps waiting for its turn."""

from __future__ import annotations

import itertools
from decimal import Decimal

from prometheus_client import CollectorRegistry

from contracts.commands import LockWait, Operation, Outcome
from contracts.reasons import PlatformReason
from contracts.topology import Topology
from contracts.transfers import TransferRequested
from engine.decide import Event, ReplyReceived
from engine.state import SagaStatus
from infra.adapters.memory_bus import InMemoryTransport
from orchestrator.lockwatch import DeadlockWatch
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.outbox import OutboxPublisher
from orchestrator.registry import DefinitionRegistry
from orchestrator.runner import SagaRunner
from orchestrator.store_memory import MemorySagaStore
from sagas.transfer import NAME, START, transfer_saga

TOPOLOGY = Topology("deadlock-watch")


class Rig:
    """A runner on a memory store at a clock the test moves (the store adapters are
    checked alike by the saga store contract)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.registry = CollectorRegistry()
        self.metrics = OrchestratorMetrics(self.registry)
        self.store = MemorySagaStore(DefinitionRegistry([transfer_saga()]))
        outbox = OutboxPublisher(InMemoryTransport(), self.store, self.metrics, self.clock)
        self.runner = SagaRunner(registry=self.store.definitions, store=self.store, outbox=outbox,
                                 topology=TOPOLOGY, metrics=self.metrics, clock=self.clock)
        self.watch = DeadlockWatch(self.store, self.runner, self.metrics, (NAME,))

    def clock(self) -> float:
        return self.now

    async def transfer(self, key: str, source: str, target: str) -> str:
        request = TransferRequested(transfer_id=key, from_account=source, to_account=target,
                                    amount=Decimal("1.00"), currency="EUR")
        saga_id = f"{NAME}:{key}"
        await self.runner.start(NAME, saga_id, START.data(request, key), None)
        self.now += 1  # the next one is younger
        return saga_id

    async def waits(self, saga_id: str, step: str, lock: str, *holders: str) -> None:
        record = await self.store.load(saga_id)
        assert record is not None
        command_id = record.state.op(step, Operation.FORWARD).message_id
        assert command_id is not None
        wait = LockWait(key=lock, holders=list(holders), until=self.now + 20)

        def event(now: float) -> Event:
            return ReplyReceived(command_id, Outcome.WAITING, now, None, "locked", wait)

        await self.runner.apply(saga_id, event)

    async def status(self, saga_id: str) -> tuple[SagaStatus, str | None]:
        record = await self.store.load(saga_id)
        assert record is not None
        failure = record.state.failure
        return record.state.status, None if failure is None else failure.reason_code

    def sample(self, name: str) -> float | None:
        return self.registry.get_sample_value(name, {"definition": NAME})


async def test_a_cycle_of_two_aborts_the_younger_once() -> None:
    rig = Rig()
    older = await rig.transfer("t-1", "a", "b")
    younger = await rig.transfer("t-2", "b", "a")
    await rig.waits(older, "credit", "account:b", younger)
    assert await rig.watch.look() == []  # one wait is no cycle
    await rig.waits(younger, "credit", "account:a", older)

    assert await rig.watch.look() == [younger]
    assert await rig.status(younger) == (SagaStatus.COMPENSATING, PlatformReason.DEADLOCK)
    assert await rig.status(older) == (SagaStatus.RUNNING, None)
    assert rig.sample("saga_deadlocks_total") == 1
    assert rig.sample("saga_lock_waiting") == 2  # counted when the look began

    # A second look (another orchestrator, or the backstop) finds no cycle left.
    assert await rig.watch.look() == []
    assert rig.sample("saga_deadlocks_total") == 1
    assert rig.sample("saga_lock_waiting") == 1  # the older one waits for its turn


async def test_a_cycle_of_three_among_bystanders_aborts_only_its_youngest() -> None:
    rig = Rig()
    a, b, c, d = [await rig.transfer(f"t-{n}", "x", "y") for n in range(4)]
    for waiter, holder in itertools.pairwise((a, b, c, a)):
        await rig.waits(waiter, "credit", f"account:{holder}", holder)
    await rig.waits(d, "debit", "account:x", a)  # waits on the cycle, is not in it
    assert await rig.watch.look() == [c]
    assert [await rig.status(s) for s in (a, b, d)] == [(SagaStatus.RUNNING, None)] * 3
    assert await rig.status(c) == (SagaStatus.COMPENSATING, PlatformReason.DEADLOCK)
