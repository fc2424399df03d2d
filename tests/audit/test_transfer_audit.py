"""The transfer invariants on hand-made snapshots: a hold left by a transfer that needs
attention is that transfer's visible problem, not a violation; any other leftover is."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from audit.snapshot import Snapshot, scope
from audit.transfers import HOLD_ENDS_WITH_SAGA, TRANSFERRED_ONCE, check
from engine.decide import start
from engine.definition import Failure
from engine.state import SagaStatus
from orchestrator.store import SagaRecord
from sagas.transfer import TransferSagaData, transfer_saga
from workers.account import Entry, LedgerAccount

T0 = 1_000.0


def _snapshot(status: SagaStatus) -> Snapshot:
    """One failed transfer whose credit is still held on the receiving account."""
    data = TransferSagaData(transfer_id="t-1", from_account="a", to_account="b",
                            amount=Decimal("10.00"), currency="EUR")
    state = replace(start(transfer_saga(), "transfer:t-1", data, T0).state, status=status,
                    failure=Failure("INSUFFICIENT_FUNDS", "no money"),
                    attention=("credit compensate failed permanently"
                               if status is SagaStatus.NEEDS_ATTENTION else None))
    credit = Entry(id="transfer:t-1:credit", account_id="b", side="credit", amount=1000,
                   reference="t-1", state="held", updated_at=T0)
    return Snapshot(sagas={"transfer:t-1": SagaRecord(state, ())}, stock=[], reservations={},
                    accounts=[], holds={}, orders={}, shipments={}, notifications=[],
                    ledger=[LedgerAccount(id="a", currency="EUR", balance=0),
                            LedgerAccount(id="b", currency="EUR", balance=0)],
                    postings={credit.id: credit}, taken_at=T0 + 10)


def test_a_hold_of_a_failed_transfer_is_a_violation() -> None:
    snapshot = _snapshot(SagaStatus.FAILED)
    found = check(snapshot, scope(snapshot, T0 + 10, 60))
    assert [(v.invariant, v.subject) for v in found] == [(HOLD_ENDS_WITH_SAGA, "t-1")]


def test_a_hold_of_a_transfer_needing_attention_is_listed_there_not_as_a_violation() -> None:
    snapshot = _snapshot(SagaStatus.NEEDS_ATTENTION)
    sorted_out = scope(snapshot, T0 + 10, 60)
    assert list(sorted_out.attention) == ["transfer:t-1"]
    assert check(snapshot, sorted_out) == []


def _retried(postings: dict[str, tuple[str, str]]) -> Snapshot:
    """Transfer t-1 completed in its second round (run id transfer:t-1:r1), with these
    postings: id -> (side, state)."""
    data = TransferSagaData(transfer_id="t-1", from_account="a", to_account="b",
                            amount=Decimal("10.00"), currency="EUR")
    state = replace(start(transfer_saga(), "transfer:t-1", data, T0).state,
                    status=SagaStatus.COMPLETED, round=1)
    entries = {pid: Entry(id=pid, account_id="a" if side == "debit" else "b", side=side,
                          amount=1000, reference="t-1", state=st, updated_at=T0)
               for pid, (side, st) in postings.items()}
    moved = sum((1 if e.side == "credit" else -1) * e.amount for e in entries.values()
                if e.state == "applied" and e.account_id == "b")
    return Snapshot(sagas={"transfer:t-1": SagaRecord(state, ())}, stock=[], reservations={},
                    accounts=[], holds={}, orders={}, shipments={}, notifications=[],
                    ledger=[LedgerAccount(id="a", currency="EUR", balance=0, deposited=1000),
                            LedgerAccount(id="b", currency="EUR", balance=moved)],
                    postings=entries, taken_at=T0 + 10)


def test_a_transfer_completed_in_a_new_round_is_judged_by_that_round() -> None:
    """The round undone after a deadlock released what it held; the last one applied both
    sides under its own run id. That is one transfer, applied once."""
    snapshot = _retried({"transfer:t-1:debit": ("debit", "released"),
                         "transfer:t-1:r1:debit": ("debit", "applied"),
                         "transfer:t-1:r1:credit": ("credit", "applied")})
    found = check(snapshot, scope(snapshot, T0 + 10, 60))
    assert [(v.invariant, v.detail) for v in found] == []


def test_an_undone_round_that_moved_money_is_a_violation() -> None:
    snapshot = _retried({"transfer:t-1:credit": ("credit", "applied"),
                         "transfer:t-1:r1:debit": ("debit", "applied"),
                         "transfer:t-1:r1:credit": ("credit", "applied")})
    found = check(snapshot, scope(snapshot, T0 + 10, 60))
    assert (TRANSFERRED_ONCE, "round 0 was undone, yet its credit was applied") in [
        (v.invariant, v.detail) for v in found]
