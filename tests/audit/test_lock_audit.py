"""The audit finds a semantic lock, or a parked lock wait, that outlived its saga."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from audit.held_locks import LOCKS_RELEASED, NO_PHANTOM_WAITS, check
from audit.invariants import INVARIANTS
from audit.snapshot import Snapshot
from engine.decide import start
from engine.state import SagaStatus
from orchestrator.store import SagaRecord
from sagas.transfer import TransferSagaData, transfer_saga
from workers.locks import Holder, Lock, LockMode, Waiter

T0 = 1_000.0


def snapshot(status: SagaStatus | None) -> Snapshot:
    """A key of the account service held by transfer t-1, whose saga is in ``status``
    (None: there is no such saga)."""
    data = TransferSagaData(transfer_id="t-1", from_account="a", to_account="b",
                            amount=Decimal("10.00"), currency="EUR")
    sagas = {} if status is None else {"transfer:t-1": SagaRecord(replace(
        start(transfer_saga(), "transfer:t-1", data, T0).state, status=status), ())}
    lock = Lock(id="account:a", holders=(Holder(saga_id="transfer:t-1", step="debit",
                                                mode=LockMode.EXCLUSIVE, since=T0),))
    return Snapshot(sagas=sagas, stock=[], reservations={}, accounts=[], holds={}, orders={},
                    shipments={}, notifications=[], locks={"account": [lock]}, taken_at=T0)


@pytest.mark.parametrize(("status", "why"), [
    (SagaStatus.COMPLETED, "its saga is completed"),
    (SagaStatus.FAILED, "its saga is failed"),
    (SagaStatus.RESOLVED, "its saga is resolved"),
    (None, "no such saga"),
])
def test_a_key_held_by_an_ended_saga_is_a_violation(status: SagaStatus | None, why: str) -> None:
    [found] = check(snapshot(status))
    assert (found.invariant, found.subject) == (LOCKS_RELEASED, "transfer:t-1")
    assert found.detail == f"account lock account:a still held by step debit: {why}"


@pytest.mark.parametrize("status", [SagaStatus.RUNNING, SagaStatus.COMPENSATING,
                                    SagaStatus.NEEDS_ATTENTION])
def test_a_running_saga_may_hold_its_keys(status: SagaStatus) -> None:
    assert check(snapshot(status)) == []


def waiting(status: SagaStatus | None) -> Snapshot:
    """transfer:t-1's credit parked on account b, its saga in ``status``, nothing held."""
    s = snapshot(status)
    waiter = Waiter(id="transfer:t-1:credit", lock="account:b", holders=("transfer:t-0",),
                    envelope="{}", command="{}", since=T0, until=T0 + 20)
    return replace(s, locks={}, waiters={"account": [waiter]})


@pytest.mark.parametrize(("status", "why"), [
    (SagaStatus.COMPLETED, "its saga is completed"),
    (SagaStatus.FAILED, "its saga is failed"),
    (None, "no such saga"),
])
def test_a_wait_parked_for_an_ended_saga_is_a_violation(status: SagaStatus | None,
                                                         why: str) -> None:
    [found] = check(waiting(status))
    assert (found.invariant, found.subject) == (NO_PHANTOM_WAITS, "transfer:t-1")
    assert found.detail == ("account still parks transfer:t-1:credit waiting for account:b: "
                            f"{why}")


@pytest.mark.parametrize("status", [SagaStatus.RUNNING, SagaStatus.COMPENSATING])
def test_a_running_saga_may_wait(status: SagaStatus) -> None:
    assert check(waiting(status)) == []


def test_the_invariants_are_reported_with_the_others() -> None:
    assert LOCKS_RELEASED in INVARIANTS
    assert NO_PHANTOM_WAITS in INVARIANTS


def test_a_key_held_by_an_undone_round_is_a_violation() -> None:
    """A saga in its second round (run id transfer:t-1:r1) may hold keys as that round, not
    as the round it undid after a deadlock."""
    s = snapshot(SagaStatus.RUNNING)
    s.sagas["transfer:t-1"] = SagaRecord(replace(s.sagas["transfer:t-1"].state, round=1), ())
    [found] = check(s)
    assert (found.invariant, found.subject) == (LOCKS_RELEASED, "transfer:t-1")
    assert found.detail.endswith("its round 0 was undone; the saga is in round 1")
    now_held = Lock(id="account:a", holders=(Holder(saga_id="transfer:t-1:r1", step="debit",
                                                    mode=LockMode.EXCLUSIVE, since=T0),))
    assert check(replace(s, locks={"account": [now_held]})) == []


def test_an_answered_wait_is_no_longer_a_wait() -> None:
    """Its prepare ran and its answer is on its way: the saga may have finished already."""
    s = waiting(SagaStatus.COMPLETED)
    answered = s.waiters["account"][0].model_copy(update={"answered": True})
    assert check(replace(s, waiters={"account": [answered]})) == []
