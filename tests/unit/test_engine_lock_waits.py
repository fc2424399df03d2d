"""The engine with lock waits: a ``waiting`` reply keeps the step in flight and moves its
timeout past the participant's wait, and a deadlock victim gives way with DEADLOCK."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from contracts.commands import LockWait, Operation, Outcome
from contracts.reasons import PlatformReason
from contracts.transfers import TRANSFER_FAILED
from engine.decide import DeadlockFound, NoteKind, ReplyReceived
from engine.definition import Tuning
from engine.state import OpStatus, SagaStatus
from sagas.transfer import TransferSagaData, transfer_saga
from tests.unit.scripts import Script

SAGA = "transfer:t-1"
STEP_TIMEOUT = Tuning().step_timeout


def transfer(deadlock_retries: int | None = None) -> Script:
    defn = transfer_saga()
    if deadlock_retries is not None:
        defn = replace(defn, deadlock_retries=deadlock_retries)
    data = TransferSagaData(transfer_id="t-1", from_account="a", to_account="b",
                            amount=Decimal("5.00"), currency="EUR")
    s = Script(defn, data, saga_id=SAGA)
    s.expect_sent("debit", "credit")
    return s


def wait(s: Script, step: str, *holders: str, until: float = 30.0) -> None:
    s.send(ReplyReceived(s.message_id(step), Outcome.WAITING, s.now, None, "locked",
                         LockWait(key="account:b", holders=list(holders), until=until)))


def test_a_waiting_step_stays_in_flight_until_the_wait_is_over() -> None:
    s = transfer()
    s.succeed("debit")
    wait(s, "credit", "transfer:t-0")
    s.expect_note(NoteKind.LOCK_WAIT)
    op = s.state.op("credit", Operation.FORWARD)
    assert (op.status, op.waiting_on, op.lock) == (OpStatus.WAITING, ("transfer:t-0",),
                                                   "account:b")
    assert s.state.lock_waits == (("credit", "account:b", ("transfer:t-0",)),)
    # No timeout while the participant holds the command: only after its wait, plus the
    # step's own timeout, is the silence a failure.
    assert op.due_at == 30.0 + STEP_TIMEOUT
    s.tick(29.0)
    s.expect_sent()
    s.expect_status(SagaStatus.RUNNING)
    s.succeed("credit")
    s.expect_sent("debit:confirm", "credit:confirm")
    assert not s.state.lock_waits


def test_the_same_wait_again_changes_nothing_and_a_new_holder_is_recorded() -> None:
    s = transfer()
    wait(s, "credit", "transfer:t-0")
    wait(s, "credit", "transfer:t-0")
    assert not s.last.changed
    wait(s, "credit", "transfer:t-9")
    assert s.last.changed
    assert NoteKind.LOCK_WAIT not in {n.kind for n in s.last.notes}  # one wait, counted once
    assert s.state.op("credit", Operation.FORWARD).waiting_on == ("transfer:t-9",)


def test_a_saga_reported_waiting_only_for_itself_is_not_waiting() -> None:
    s = transfer()
    wait(s, "credit", SAGA)
    assert not s.last.changed
    assert s.state.lock_waits == ()


def test_a_deadlock_victim_fails_with_deadlock_and_compensates() -> None:
    s = transfer(deadlock_retries=0)
    s.succeed("debit")
    wait(s, "credit", "transfer:t-2")
    s.send(DeadlockFound(("transfer:t-2",), s.now))
    s.expect_note(NoteKind.DEADLOCK)
    s.expect_status(SagaStatus.COMPENSATING)
    assert s.state.failure is not None
    assert s.state.failure.reason_code == PlatformReason.DEADLOCK
    assert s.state.failure.reason == "gave way in a deadlock with transfer:t-2"
    s.expect_op("credit", OpStatus.ABANDONED)
    assert s.state.lock_waits == ()
    # Both prepares are cancelled: the one that waited, in case it ran meanwhile.
    s.expect_sent("debit:compensate", "credit:compensate")
    s.succeed("debit:compensate", "credit:compensate", "notify_failure")
    s.expect_status(SagaStatus.FAILED)
    s.expect_outcome(TRANSFER_FAILED, PlatformReason.DEADLOCK)


def test_a_saga_that_no_longer_waits_is_not_aborted() -> None:
    """The look at the graph and the abort are not atomic: the victim checks for itself."""
    s = transfer()
    wait(s, "credit", "transfer:t-2")
    s.succeed("credit")
    s.send(DeadlockFound(("transfer:t-2",), s.now))
    assert not s.last.changed
    s.expect_status(SagaStatus.RUNNING)


def test_a_new_attempt_that_waits_for_the_same_saga_is_a_new_wait() -> None:
    """Sent again (its reply timed out), the step waits for nothing until the new
    attempt's reply says so; that reply moves the timeout again, same holders or not."""
    s = transfer()
    wait(s, "credit", "transfer:t-0", until=5.0)
    s.tick(5.0 + STEP_TIMEOUT)
    s.tick_to_wakeup()
    assert s.state.op("credit", Operation.FORWARD).attempt == 2
    assert not s.state.lock_waits
    wait(s, "credit", "transfer:t-0", until=s.now + 20)
    assert s.state.op("credit", Operation.FORWARD).due_at == s.now + 20 + STEP_TIMEOUT


# --- a new round after a deadlock ---------------------------------------------------------


def victim_undone(s: Script) -> None:
    """The saga gives way in a deadlock and its compensations are done."""
    s.succeed("debit")
    wait(s, "credit", "transfer:t-2")
    s.send(DeadlockFound(("transfer:t-2",), s.now))
    s.succeed("debit:compensate", "credit:compensate")


def test_a_victim_starts_again_as_a_new_round_after_a_backoff() -> None:
    s = transfer()
    victim_undone(s)
    # No failure notice and no outcome: the transfer is not over.
    s.expect_sent()
    assert s.last.outcome is None
    s.expect_note(NoteKind.NEW_ROUND)
    assert (s.state.status, s.state.round, s.state.failure) == (SagaStatus.RUNNING, 1, None)
    defn = transfer_saga()
    assert s.state.next_wakeup == s.now + defn.deadlock_backoff
    s.tick_to_wakeup()
    debit, credit = s.expect_sent("debit", "credit")
    # A new saga to the participants: its own id, so new fences, effects and locks.
    assert debit.message_id == "transfer:t-1:r1:debit:forward:1"
    assert debit.payload.saga_id == credit.payload.saga_id == "transfer:t-1:r1"
    s.succeed("debit", "credit", "debit:confirm", "credit:confirm", "notify_sender")
    s.expect_status(SagaStatus.COMPLETED)
    assert [h.kind for h in s.state.history].count("deadlock") == 1


def test_a_victim_gives_up_after_its_last_round() -> None:
    s = transfer()
    retries = transfer_saga().deadlock_retries
    for n in range(retries):
        victim_undone(s)
        assert s.state.round == n + 1
        s.tick_to_wakeup()
    victim_undone(s)
    s.expect_sent("notify_failure")
    s.succeed("notify_failure")
    s.expect_status(SagaStatus.FAILED)
    s.expect_outcome(TRANSFER_FAILED, PlatformReason.DEADLOCK)
    assert [h.kind for h in s.state.history].count("deadlock") == retries + 1


def test_a_wait_for_a_retried_round_is_a_wait_for_its_saga() -> None:
    """Participants name holders by the round's id; the graph is between sagas."""
    s = transfer()
    wait(s, "credit", "transfer:t-7:r2", "transfer:t-1:r1")
    assert s.state.lock_waits == (("credit", "account:b", ("transfer:t-7",)),)


def test_only_a_deadlock_brings_a_new_round() -> None:
    s = transfer()
    s.succeed("debit")
    s.reject("credit", "INSUFFICIENT_FUNDS")
    s.succeed("debit:compensate")
    s.expect_sent("notify_failure")
    assert s.state.round == 0
