"""A participant written with another AMQP client, from the documented contract alone.

``tests/foreign/loyalty.py`` uses pika, sqlite3 and the standard library and imports
nothing from this project; its manifest (``tests/foreign/loyalty.json``) is written by
hand and registered only through SAGA_MANIFESTS. If it can take part in a real saga next to
the Python SDK's participants, and passes the same duplicate and fence scenarios as the
SDK's runtime (tests/integration/test_worker_runtime.py), the contract suffices.

The scenarios on single commands run the loyalty process alone on the broker: commands
are published as the orchestrator would, replies read from a private queue bound to the
replies exchange, and its SQLite file read directly.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from client.events import EventWatcher
from client.seed import add_deposit
from contracts.commands import Operation, Outcome, StepCommand, StepReply
from contracts.envelope import Envelope, WireMessage, encode, read_envelope, read_payload, utcnow
from contracts.reasons import PlatformReason
from contracts.registry import STEP_REPLY
from contracts.topology import REPLY_KEY, Plan, Topology, dead_letter_queue
from contracts.trace import trace_id_of, traceparent
from contracts.transactions import (
    TRANSACTION_ABORTED,
    TRANSACTION_COMMITTED,
    TRANSACTION_REQUESTED,
    TransactionRequested,
)
from harness.processes import ManagedProcess, free_port
from infra.adapters.rabbit import RabbitTransport
from infra.consumer import REASON_HEADER
from tests.e2e.conftest import Deploy
from tests.e2e.harness import Deployment
from workers.account import LedgerAccount

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SERVICE = "loyalty"
FOREIGN = Path(__file__).resolve().parents[1] / "foreign"
SCRIPT = FOREIGN / "loyalty.py"
MANIFEST = FOREIGN / "loyalty.json"
STEP = "award_points"
WAIT = 20.0  # seconds to wait for a reply or a dead letter
POLL = 0.02
PREPARE, CONFIRM, CANCEL = (f"{SERVICE}.award.{p}" for p in ("prepare", "confirm", "cancel"))


def loyalty_process(env: Mapping[str, str], log_dir: Path, database: Path) -> ManagedProcess:
    """The loyalty participant as an OS process, with its own ops port and SQLite file."""
    port = free_port()
    return ManagedProcess(SERVICE, [sys.executable, str(SCRIPT)],
                          {**os.environ, **env, "SAGA_METRICS_PORT": str(port),
                           "SAGA_METRICS_HOST": "127.0.0.1", "LOYALTY_DB": str(database)},
                          log_dir / f"{SERVICE}.log", port)


@dataclass(frozen=True)
class Ledger:
    """The loyalty service's SQLite file, read from outside."""

    path: Path

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """The rows of one query."""
        with closing(sqlite3.connect(self.path)) as db:
            return db.execute(sql, args).fetchall()

    def points(self, member: str) -> int:
        """A member's awarded points (0 for none)."""
        found = self.rows("SELECT points FROM members WHERE member = ?", member)
        return int(found[0][0]) if found else 0

    def pending(self) -> list[tuple[Any, ...]]:
        """Every pending award: (saga id, step, member, points)."""
        return self.rows("SELECT saga_id, step, member, points FROM pending_awards")

    def fence(self, saga_id: str, step: str = STEP) -> str | None:
        """The fence state of one step, or None."""
        found = self.rows("SELECT state FROM fences WHERE saga_id = ? AND step = ?", saga_id, step)
        return str(found[0][0]) if found else None


# --- a real saga, next to the Python SDK's account participant -------------------------------


async def _platform(deploy: Deploy, tmp_path: Path) -> tuple[Deployment, Ledger, EventWatcher]:
    d = await deploy(common={"SAGA_MANIFESTS": str(MANIFEST)})
    # The platform's plan (queues, broker definitions, contract) knows loyalty from its
    # manifest alone.
    assert SERVICE in d.plan.services
    ledger = Ledger(tmp_path / "loyalty.db")
    d.cluster.processes[SERVICE] = loyalty_process(d.env, d.log_dir, ledger.path)
    await d.cluster.restart(SERVICE)  # stopped with the rest of the cluster
    await add_deposit(d.stores.services["account"], "alice", 10_000)
    watcher = EventWatcher(d.transport, d.topology.exchange("transactions"),
                           (TRANSACTION_COMMITTED, TRANSACTION_ABORTED), "transaction_id")
    await watcher.start()
    return d, ledger, watcher


async def _transact(d: Deployment, watcher: EventWatcher, tid: str, points: int,
                    ) -> dict[str, Any]:
    request = TransactionRequested.model_validate({"transaction_id": tid, "operations": [
        {"service": "account", "operation": "debit",
         "params": {"account_id": "alice", "amount": "12.50", "currency": "EUR",
                    "reference": tid}},
        {"service": SERVICE, "operation": "award",
         "params": {"member": "alice", "points": points}}]})
    envelope = Envelope(message_id=f"req-{tid}", correlation_id="client",
                        message_type=TRANSACTION_REQUESTED, timestamp=utcnow())
    await d.transport.publish(d.topology.exchange("transactions"), TRANSACTION_REQUESTED,
                              encode(envelope, request))
    missing = await watcher.wait_for({tid}, 90.0)
    assert not missing, f"no outcome for {tid}\n{d.cluster.logs()}"
    event = watcher.events[tid]
    return {"type": event.type, **event.body}


async def _balance(d: Deployment) -> tuple[int, int]:
    found = await d.stores.services["account"].get(LedgerAccount, "alice")
    assert found is not None
    return found.balance, found.held


async def test_a_transaction_commits_at_the_sdk_and_the_foreign_participant(
        deploy: Deploy, tmp_path: Path) -> None:
    """An account debit and a loyalty award commit together; the points are added once."""
    d, ledger, watcher = await _platform(deploy, tmp_path)
    outcome = await _transact(d, watcher, "t-ok", 50)
    assert outcome["type"] == TRANSACTION_COMMITTED, outcome
    assert [r["status"] for r in outcome["results"]] == ["committed", "committed"]
    report = await d.settled()
    assert report.ok, report.violations
    assert await _balance(d) == (8_750, 0)
    assert ledger.points("alice") == 50
    assert ledger.pending() == []
    assert ledger.fence("transaction:t-ok", "op2") == "confirmed"


async def test_a_refusal_of_the_foreign_participant_rolls_the_account_back(
        deploy: Deploy, tmp_path: Path) -> None:
    """An award above 1000 points is refused with TOO_MANY_POINTS: the transaction aborts
    with that reason, the account's hold is released and no points are pending."""
    d, ledger, watcher = await _platform(deploy, tmp_path)
    outcome = await _transact(d, watcher, "t-greedy", 5_000)
    assert outcome["type"] == TRANSACTION_ABORTED, outcome
    assert outcome["reason_code"] == "TOO_MANY_POINTS"
    assert outcome["needs_attention"] is False
    statuses = [r["status"] for r in outcome["results"]]
    assert statuses[0] in ("rolled_back", "not_run")
    assert statuses[1] == "refused"
    report = await d.settled()
    assert report.ok, report.violations
    assert await _balance(d) == (10_000, 0)
    assert ledger.points("alice") == 0
    assert ledger.pending() == []
    assert ledger.fence("transaction:t-greedy", "op2") in ("rejected", "compensated")


# --- single commands, as in tests/integration/test_worker_runtime.py ------------------------


@dataclass
class Rig:
    """The test's side of the broker, and the loyalty process with its SQLite file."""

    transport: RabbitTransport
    topology: Topology
    reply_queue: str
    process: ManagedProcess
    ledger: Ledger
    replies: dict[str, list[tuple[Envelope, StepReply]]] = field(default_factory=dict)

    async def send(self, message_type: str, command: StepCommand, message_id: str, *,
                   correlation_id: str | None = None, trace: str | None = None) -> None:
        """Publish a command to the loyalty service as the orchestrator would."""
        envelope = Envelope(message_id=message_id, message_type=message_type,
                            correlation_id=correlation_id or command.saga_id,
                            timestamp=utcnow(), traceparent=trace)
        await self.transport.publish(self.topology.commands_exchange, SERVICE,
                                     encode(envelope, command))

    async def send_raw(self, message: WireMessage) -> None:
        """Publish any message to the loyalty service."""
        await self.transport.publish(self.topology.commands_exchange, SERVICE, message)

    async def replies_to(self, message_id: str, count: int = 1,
                         ) -> list[tuple[Envelope, StepReply]]:
        """Wait for ``count`` replies caused by one command."""
        return await _wait(lambda: self._replies(message_id, count),
                           f"{count} replies to {message_id}")

    async def _replies(self, message_id: str, count: int,
                       ) -> list[tuple[Envelope, StepReply]] | None:
        while (message := await self.transport.get(self.reply_queue)) is not None:
            envelope = read_envelope(message)
            assert envelope.causation_id is not None
            self.replies.setdefault(envelope.causation_id, []).append(
                (envelope, read_payload(message, StepReply)))
        got = self.replies.get(message_id, [])
        return got if len(got) >= count else None

    async def call(self, message_type: str, command: StepCommand, message_id: str) -> StepReply:
        """Send a command and wait for its reply."""
        await self.send(message_type, command, message_id)
        (_, reply), = await self.replies_to(message_id)
        return reply

    async def dead_letters(self, count: int) -> list[WireMessage]:
        """Wait for ``count`` messages on the loyalty queue's dead-letter queue."""
        queue = dead_letter_queue(self.topology.command_queue(SERVICE))
        found: list[WireMessage] = []

        async def enough() -> list[WireMessage] | None:
            if (message := await self.transport.get(queue)) is not None:
                found.append(message)
            return found if len(found) >= count else None

        return await _wait(enough, f"{count} dead letters")


async def _wait[T](probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = asyncio.get_running_loop().time() + WAIT
    while (found := await probe()) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not arrive in {WAIT:.0f}s")
        await asyncio.sleep(POLL)
    return found


@pytest.fixture
async def rig(amqp_url: str, tag: str, tmp_path: Path) -> AsyncIterator[Rig]:
    """The loyalty process on a namespace of its own, and a reply listener."""
    topology = Topology(f"e2e-{tag}")
    plan = Plan((), (SERVICE,))
    transport = RabbitTransport(amqp_url, connection_name="pytest-foreign", connect_timeout=10)
    await transport.connect()
    await transport.declare(topology, plan)
    process = loyalty_process({"SAGA_AMQP_URL": amqp_url, "SAGA_NAMESPACE": topology.namespace},
                              tmp_path / "logs", tmp_path / "loyalty.db")
    try:
        reply_queue = await transport.temporary_queue(topology.replies_exchange, (REPLY_KEY,))
        process.start()
        await process.wait_ready(30.0)
        yield Rig(transport, topology, reply_queue, process, Ledger(tmp_path / "loyalty.db"))
    finally:
        process.stop()
        await transport.undeclare(topology, plan)
        await transport.close()


def award(saga_id: str, points: int = 40, member: str = "m-1") -> StepCommand:
    """A command of the award operation (every phase takes the same parameters)."""
    return StepCommand(saga_id=saga_id, step=STEP, params={"member": member, "points": points})


async def test_prepare_holds_points_pending_and_answers_by_the_contract(rig: Rig) -> None:
    """A prepare succeeds with a reply that has every envelope field the contract asks for,
    and only records a pending award."""
    trace = traceparent("ab" * 16, "cmd-1")
    await rig.send(PREPARE, award("s-1"), "cmd-1", trace=trace)
    [(envelope, reply)] = await rig.replies_to("cmd-1")
    assert envelope.message_id == "cmd-1:reply"
    assert envelope.causation_id == "cmd-1"
    assert envelope.correlation_id == "s-1"
    assert envelope.message_type == STEP_REPLY
    assert envelope.schema_version == 1
    assert trace_id_of(envelope.traceparent) == "ab" * 16
    assert envelope.traceparent != trace
    assert (reply.saga_id, reply.step, reply.operation) == ("s-1", STEP, Operation.FORWARD)
    assert reply.outcome is Outcome.SUCCEEDED
    assert rig.ledger.pending() == [("s-1", STEP, "m-1", 40)]
    assert rig.ledger.points("m-1") == 0
    assert rig.ledger.fence("s-1") == "tried"


async def test_confirm_adds_and_cancel_drops_the_pending_award(rig: Rig) -> None:
    """Confirming adds the points; cancelling another saga's award adds nothing."""
    await rig.call(PREPARE, award("s-1", 40), "p-1")
    await rig.call(PREPARE, award("s-2", 7), "p-2")
    confirmed = await rig.call(CONFIRM, award("s-1", 40), "c-1")
    cancelled = await rig.call(CANCEL, award("s-2", 7), "x-2")
    assert confirmed.outcome is cancelled.outcome is Outcome.SUCCEEDED
    assert rig.ledger.points("m-1") == 40
    assert rig.ledger.pending() == []
    assert (rig.ledger.fence("s-1"), rig.ledger.fence("s-2")) == ("confirmed", "compensated")


async def test_same_command_twice_gets_recorded_reply_and_applies_once(rig: Rig) -> None:
    """A redelivered command (same message id) is answered identically and recorded once."""
    await rig.send(PREPARE, award("s-1", 40), "cmd-1")
    await rig.send(PREPARE, award("s-1", 40), "cmd-1")
    (first_env, first), (second_env, second) = await rig.replies_to("cmd-1", 2)
    assert first == second
    assert first.outcome is Outcome.SUCCEEDED
    assert first_env.message_id == second_env.message_id == "cmd-1:reply"
    assert rig.ledger.pending() == [("s-1", STEP, "m-1", 40)]
    await rig.send(CONFIRM, award("s-1", 40), "c-1")
    await rig.send(CONFIRM, award("s-1", 40), "c-1")
    (_, confirmed), (_, again) = await rig.replies_to("c-1", 2)
    assert confirmed == again
    assert confirmed.outcome is Outcome.SUCCEEDED
    assert rig.ledger.points("m-1") == 40


async def test_retried_prepare_with_new_message_id_awards_once(rig: Rig) -> None:
    """A second attempt of the same step (new message id) replays the fence, not the award."""
    first = await rig.call(PREPARE, award("s-1", 40), "attempt-1")
    again = await rig.call(PREPARE, award("s-1", 40), "attempt-2")
    assert first.outcome is again.outcome is Outcome.SUCCEEDED
    assert again.detail == "already tried"
    assert rig.ledger.pending() == [("s-1", STEP, "m-1", 40)]


async def test_cancel_before_prepare_is_an_empty_rollback(rig: Rig) -> None:
    """A cancel with nothing to undo succeeds, says so, and leaves a compensated fence."""
    reply = await rig.call(CANCEL, award("s-1"), "x-1")
    assert reply.outcome is Outcome.SUCCEEDED
    assert reply.detail == "nothing to undo"
    assert rig.ledger.fence("s-1") == "compensated"
    assert rig.ledger.pending() == []


async def test_prepare_after_cancel_is_suspended(rig: Rig) -> None:
    """A prepare arriving after its step was cancelled is refused with CANCELLED and leaves
    no pending award."""
    await rig.call(CANCEL, award("s-1"), "x-1")
    late = await rig.call(PREPARE, award("s-1"), "p-1")
    assert late.outcome is Outcome.REJECTED
    assert late.reason_code == PlatformReason.CANCELLED
    assert rig.ledger.pending() == []
    assert rig.ledger.points("m-1") == 0
    assert rig.ledger.fence("s-1") == "compensated"


async def test_confirm_without_prepare_is_a_permanent_error(rig: Rig) -> None:
    """Confirming a step that never ran cannot succeed, and changes nothing."""
    reply = await rig.call(CONFIRM, award("s-1"), "c-1")
    assert reply.outcome is Outcome.PERMANENT_ERROR
    assert rig.ledger.points("m-1") == 0
    assert rig.ledger.fence("s-1") is None


async def test_too_many_points_are_refused_and_stay_refused(rig: Rig) -> None:
    """A prepare above 1000 points is refused with TOO_MANY_POINTS, a retry of the step gets
    the same answer, and a cancel of it has nothing to undo."""
    first = await rig.call(PREPARE, award("s-1", 1_001), "p-1")
    assert first.outcome is Outcome.REJECTED
    assert first.reason_code == "TOO_MANY_POINTS"
    assert await rig.call(PREPARE, award("s-1", 1_001), "p-2") == first
    assert rig.ledger.fence("s-1") == "rejected"
    undo = await rig.call(CANCEL, award("s-1", 1_001), "x-1")
    assert (undo.outcome, undo.detail) == (Outcome.SUCCEEDED, "nothing to undo")
    assert rig.ledger.pending() == []


async def test_invalid_commands_are_dead_lettered(rig: Rig) -> None:
    """A command of another service, a saga id that is not the correlation id, parameters
    off the manifest and a body that is not JSON go to the dead-letter queue with a reason,
    get no reply and change nothing."""
    await rig.send("payment.hold.prepare", award("s-1"), "wrong-service")
    await rig.send(PREPARE, award("s-2"), "wrong-saga", correlation_id="s-3")
    await rig.send(PREPARE, StepCommand(saga_id="s-4", step=STEP, params={"member": "m-1"}),
                   "wrong-params")
    await rig.send_raw(WireMessage(body=b"{not json", message_id="not-json", correlation_id="s-5",
                                   type=PREPARE, timestamp=utcnow(),
                                   headers={"x-schema-version": 1}))
    dead = await rig.dead_letters(4)
    reasons = {m.message_id or "": str(m.headers[REASON_HEADER]) for m in dead}
    assert sorted(reasons) == ["not-json", "wrong-params", "wrong-saga", "wrong-service"]
    assert "not a command of the loyalty service" in reasons["wrong-service"]
    assert "correlation_id" in reasons["wrong-saga"]
    assert "points" in reasons["wrong-params"]
    assert "not JSON" in reasons["not-json"]

    # A valid command after them is answered, and the dead letters never were.
    assert (await rig.call(PREPARE, award("s-6"), "ok")).outcome is Outcome.SUCCEEDED
    assert not set(reasons) & set(rig.replies)
    assert rig.ledger.pending() == [("s-6", STEP, "m-1", 40)]


async def test_state_and_the_inbox_survive_a_crash(rig: Rig) -> None:
    """Killed after a prepare and restarted, the participant still knows the pending award
    and answers the redelivered prepare with its recorded reply."""
    prepared = await rig.call(PREPARE, award("s-1", 40), "p-1")
    rig.process.kill()
    rig.process.start()
    await rig.process.wait_ready(30.0)
    await rig.send(PREPARE, award("s-1", 40), "p-1")
    assert (await rig.replies_to("p-1", 2))[1][1] == prepared
    assert (await rig.call(CONFIRM, award("s-1", 40), "c-1")).outcome is Outcome.SUCCEEDED
    assert rig.ledger.points("m-1") == 40
    assert rig.ledger.pending() == []
