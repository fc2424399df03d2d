"""The transfer invariants on hand-made snapshots: a hold left by a transfer that needs
attention is that transfer's visible problem, not a violation; any other leftover is."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from orchestrator.definition import Failure
from orchestrator.engine import start
from orchestrator.sagas.transfer import TransferSagaData, transfer_saga
from orchestrator.state import SagaStatus
from orchestrator.store import SagaRecord
from sagactl.snapshot import Snapshot, scope
from sagactl.transfers import HOLD_ENDS_WITH_SAGA, check
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
