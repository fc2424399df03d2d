"""Properties of ad-hoc transactions: for any list of operations, the one-off definition
never confirms after a cancel, and never leaves a prepared operation unresolved.

The definition is built from random operation lists (two-phase operations, undoable and
final actions in any order) and driven through the pure engine by random scripts of
replies, timeouts, duplicates and cancels, then drained to its end.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.commands import Operation, OperationKind, Outcome
from contracts.transactions import MAX_OPERATIONS, TRANSACTION_ABORTED, TRANSACTION_COMMITTED
from engine.definition import Tuning
from engine.state import OpStatus, SagaStatus
from sagas.transaction import (
    PlannedOperation,
    TransactionData,
    build,
    result,
    step_name,
)
from tests.unit.test_engine_properties import Action, Run, run_script, scripts

POLICY, SETTLE = Tuning(deadline=60.0, settle_attempts=4).policies()
PROPERTIES = settings(max_examples=200, deadline=None)

kinds = st.sampled_from([(OperationKind.TWO_PHASE, True), (OperationKind.ACTION, True),
                         (OperationKind.ACTION, False)])
transactions = st.lists(kinds, min_size=1, max_size=MAX_OPERATIONS).map(
    lambda drawn: TransactionData(
        transaction_id="t-1", timeout=60.0,
        operations=tuple(PlannedOperation(service=f"s{i % 3}", operation="op", kind=kind,
                                          undoable=undoable, params={"n": i})
                         for i, (kind, undoable) in enumerate(drawn))))


def _run(data: TransactionData, script: list[Action]) -> Run:
    return run_script(build(data, POLICY, SETTLE), data, script)


@PROPERTIES
@given(data=transactions, script=scripts())
def test_no_confirm_follows_a_cancel_and_every_prepare_is_resolved(
        data: TransactionData, script: list[Action]) -> None:
    """Per operation: no confirm after its cancel; a prepare that was sent and not refused
    ends confirmed or cancelled, or, only when the saga needs attention, with a failed
    confirm or cancel."""
    run = _run(data, script)
    state = run.state
    assert state.finished
    for i, op in enumerate(data.operations):
        step = step_name(i)
        phases = [m.op for m in run.sent if m.step == step]
        if Operation.COMPENSATE in phases:
            assert Operation.CONFIRM not in phases[phases.index(Operation.COMPENSATE):], phases
        refused = state.op(step, Operation.FORWARD).outcome is Outcome.REJECTED
        if op.kind is not OperationKind.TWO_PHASE or Operation.FORWARD not in phases or refused:
            continue  # nothing was prepared: the participant voted no, or never heard of it
        confirm, cancel = state.op(step, Operation.CONFIRM), state.op(step, Operation.COMPENSATE)
        resolved = OpStatus.SUCCEEDED in (confirm.status, cancel.status)
        stuck = OpStatus.FAILED in (confirm.status, cancel.status)
        assert resolved or (stuck and state.status is SagaStatus.NEEDS_ATTENTION), (step, phases)


@PROPERTIES
@given(data=transactions, script=scripts())
def test_the_outcome_reports_every_operation_in_request_order(
        data: TransactionData, script: list[Action]) -> None:
    """A committed transaction committed every operation; an aborted one committed none of
    its undoable operations (they were refused, rolled back or never ran)."""
    run = _run(data, script)
    outcome = next(d.outcome for d in run.decisions if d.outcome is not None)
    payload: Any = outcome.payload
    statuses = [r.status for r in payload.results]
    assert [(r.service, r.operation) for r in payload.results] == [
        (op.service, op.operation) for op in data.operations]
    assert statuses == [result(step_name(i), op, run.state.ops).status
                        for i, op in enumerate(data.operations)]
    if outcome.type == TRANSACTION_COMMITTED:
        assert run.state.status is SagaStatus.COMPLETED
        assert set(statuses) == {"committed"}
    else:
        assert outcome.type == TRANSACTION_ABORTED
        undoable = [s for s, op in zip(statuses, data.operations, strict=True)
                    if op.kind is OperationKind.TWO_PHASE or op.undoable]
        if not payload.needs_attention:
            assert "committed" not in undoable, statuses
