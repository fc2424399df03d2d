"""The engine with lock waits: a ``waiting`` reply keeps the step in flight and moves its
timeout past the participant's wait, and a deadlock victim gives way with DEADLOCK."""

from __future__ import annotations

from decimal import Decimal

from contracts.commands import LockWait, Operation, Outcome
from contracts.reasons import PlatformReason
from contracts.transfers import TRANSFER_FAILED
from orchestrator.definition import Tuning
from orchestrator.engine import DeadlockFound, NoteKind, ReplyReceived
from orchestrator.sagas.transfer import TransferSagaData, transfer_saga
from orchestrator.state import OpStatus, SagaStatus
from tests.unit.scripts import Script

SAGA = "transfer:t-1"
STEP_TIMEOUT = Tuning().step_timeout


def transfer() -> Script:
    data = TransferSagaData(transfer_id="t-1", from_account="a", to_account="b",
                            amount=Decimal("5.00"), currency="EUR")
    s = Script(transfer_saga(), data, saga_id=SAGA)
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
    s = transfer()
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
