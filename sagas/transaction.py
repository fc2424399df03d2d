"""Ad-hoc transactions: a one-off saga built from a client's list of operations.

Each operation names a registered participant's operation and its parameters, checked
against that participant's manifest. The one-off definition runs, in this order:

1. every two-phase operation's prepare, in parallel;
2. the undoable actions, one after another in the order given;
3. the commit point: every two-phase operation is confirmed, in parallel;
4. the actions that cannot be undone, in the order given (they must settle).

A failure before the commit point undoes everything done, newest first, and cancels every
prepared operation. The operations (with their kinds, read from the manifests at the
start) are stored with the saga, so the definition is rebuilt from the saga alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, JsonValue, RootModel

from contracts.commands import Name, Operation, OperationKind, Outcome
from contracts.envelope import Model
from contracts.transactions import (
    MAX_OPERATIONS,
    TRANSACTION_ABORTED,
    TRANSACTION_COMMITTED,
    TRANSACTION_REQUESTED,
    OperationResult,
    OperationStatus,
    TransactionAborted,
    TransactionCommitted,
    TransactionId,
    TransactionRequested,
)
from engine.definition import (
    CommandContext,
    DynamicDefinition,
    Failure,
    OutcomeContext,
    OutcomeEvent,
    RetryPolicy,
    SagaDefinition,
    Stage,
    Step,
    Tuning,
)
from engine.state import OpState, OpStatus
from orchestrator.manifests import Manifest, params_problem
from orchestrator.start import InvalidRequest, StartMessage

if TYPE_CHECKING:
    from orchestrator.registry import Setup

NAME = "transaction"


class Params(RootModel[dict[str, JsonValue]]):
    """An operation's parameters, already checked against its manifest."""


class PlannedOperation(Model):
    """One operation as the saga runs it: the manifest's kind is recorded with it."""

    service: Name
    operation: Name
    kind: OperationKind
    undoable: bool
    params: dict[str, JsonValue] = Field(default_factory=dict)


class TransactionData(Model):
    """What an ad-hoc transaction's saga knows: everything it needs to rebuild its steps."""

    transaction_id: TransactionId
    operations: tuple[PlannedOperation, ...] = Field(min_length=1, max_length=MAX_OPERATIONS)
    timeout: float


def step_name(index: int) -> str:
    """The step of the operation at ``index`` (0-based) of the request: ``op1``, ``op2``..."""
    return f"op{index + 1}"


def plan(request: TransactionRequested, manifests: Mapping[str, Manifest], key: str,
         default_timeout: float) -> TransactionData:
    """Check every operation against its participant's manifest (InvalidRequest otherwise)."""
    planned = []
    for i, op in enumerate(request.operations):
        where = f"operations[{i}]"
        manifest = manifests.get(op.service)
        if manifest is None:
            raise InvalidRequest(f"{where}: no participant service {op.service!r} is registered")
        declared = manifest.operation(op.operation)
        if declared is None:
            raise InvalidRequest(f"{where}: {op.service} has no operation {op.operation!r}")
        problem = params_problem(declared, op.params)
        if problem is not None:
            raise InvalidRequest(f"{where}.params: {problem}")
        planned.append(PlannedOperation(service=op.service, operation=op.operation,
                                        kind=declared.kind, undoable=declared.undoable,
                                        params=op.params))
    return TransactionData(transaction_id=key, operations=tuple(planned),
                           timeout=request.timeout or default_timeout)


def build(data: TransactionData, policy: RetryPolicy,
          settle: RetryPolicy) -> SagaDefinition[TransactionData]:
    """The one-off definition of one transaction (see the module docstring)."""
    steps = [_step(i, op, policy, settle) for i, op in enumerate(data.operations)]
    prepares = tuple(s for s in steps if s.two_phase)
    undoable: list[Stage[TransactionData]] = [(s,) for s in steps if s.undoable]
    final: list[Stage[TransactionData]] = [(s,) for s in steps if not s.compensated]
    before: list[Stage[TransactionData]] = ([prepares] if prepares else []) + undoable
    if not before:
        # Nothing can be undone: the first action decides whether the rest happen at all.
        before, final = final[:1], final[1:]
    return SagaDefinition(
        name=NAME, version=1, data_model=TransactionData, deadline=data.timeout,
        before_commit=tuple(before), after_commit=tuple(final), outcome=_outcome)


def _step(index: int, op: PlannedOperation, policy: RetryPolicy,
          settle: RetryPolicy) -> Step[TransactionData]:
    def params(x: CommandContext[TransactionData]) -> BaseModel:
        return Params(x.data.operations[index].params)

    return Step(step_name(index), op.service, op.operation, params, op.kind,
                op.kind is OperationKind.ACTION and op.undoable, policy, settle)


def result(step: str, op: PlannedOperation, ops: Mapping[tuple[str, Operation], OpState],
           ) -> OperationResult:
    """What became of one operation, from its final operation states."""
    forward = ops.get((step, Operation.FORWARD), OpState())
    confirm = ops.get((step, Operation.CONFIRM), OpState())
    undo = ops.get((step, Operation.COMPENSATE), OpState())
    status: OperationStatus
    if undo.status is OpStatus.SUCCEEDED:
        status, detail = "rolled_back", undo.detail
    elif OpStatus.FAILED in (undo.status, confirm.status):
        status, detail = "failed", (undo if undo.status is OpStatus.FAILED else confirm).detail
    elif forward.outcome is Outcome.REJECTED:
        status, detail = "refused", forward.detail
    elif forward.status is OpStatus.SUCCEEDED and (
            op.kind is OperationKind.ACTION or confirm.status is OpStatus.SUCCEEDED):
        status, detail = "committed", confirm.detail or forward.detail
    elif forward.status is OpStatus.FAILED:
        status, detail = "failed", forward.detail
    else:
        status, detail = "not_run", ""
    return OperationResult(service=op.service, operation=op.operation, status=status,
                           detail=detail[:500])


def _outcome(x: OutcomeContext[TransactionData]) -> OutcomeEvent:
    d = x.data
    results = tuple(result(step_name(i), op, x.ops) for i, op in enumerate(d.operations))
    if x.failure is None:
        return OutcomeEvent(TRANSACTION_COMMITTED, TransactionCommitted(
            transaction_id=d.transaction_id, results=results))
    return OutcomeEvent(TRANSACTION_ABORTED, TransactionAborted(
        transaction_id=d.transaction_id, reason_code=x.failure.reason_code,
        reason=x.failure.reason[:500], needs_attention=x.needs_attention, results=results))


def _refusal(key: str, fields: Mapping[str, Any], failure: Failure) -> OutcomeEvent:
    return OutcomeEvent(TRANSACTION_ABORTED, TransactionAborted(
        transaction_id=key, reason_code=failure.reason_code, reason=failure.reason[:500]))


def transaction_definition(manifests: Mapping[str, Manifest],
                           tuning: Tuning) -> DynamicDefinition[TransactionData]:
    """The ad-hoc transaction, validated against ``manifests``."""
    policy, settle = tuning.policies()

    def data(request: TransactionRequested, key: str) -> TransactionData:
        return plan(request, manifests, key, tuning.deadline)

    start: StartMessage[TransactionData] = StartMessage(
        exchange="transactions", requested=TRANSACTION_REQUESTED, model=TransactionRequested,
        key_field="transaction_id", data=data, completed=TRANSACTION_COMMITTED,
        failed=TRANSACTION_ABORTED, refusal=_refusal, completed_model=TransactionCommitted,
        failed_model=TransactionAborted)
    return DynamicDefinition(
        name=NAME, version=1, data_model=TransactionData,
        build=lambda d: build(d, policy, settle), start=start, deadline=tuning.deadline,
        description="An ad-hoc transaction over registered participants' operations: "
                    "prepare everywhere, run the undoable actions, then commit everywhere.")


def definitions(setup: Setup) -> list[DynamicDefinition[TransactionData]]:
    """The ad-hoc transaction (the registration entry point)."""
    return [transaction_definition(setup.manifests, setup.tuning)]
