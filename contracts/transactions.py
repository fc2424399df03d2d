"""The public contract of ad-hoc transactions (exchange ``transactions``).

A client names the operations of registered participants; the orchestrator checks each
against the participant's manifest and runs them as one saga: every two-phase operation
is prepared in parallel, the undoable actions run in the order given, then the commit
point, the confirmations, and last the actions that cannot be undone.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue

from contracts.commands import Name
from contracts.envelope import Model
from contracts.reasons import ReasonCode

TRANSACTION_REQUESTED = "transaction.requested"
TRANSACTION_COMMITTED = "transaction.committed"
TRANSACTION_ABORTED = "transaction.aborted"
MAX_OPERATIONS = 20

TransactionId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class OperationRequest(Model):
    """One operation: which participant, which of its operations, with what parameters."""

    service: Name
    operation: Name
    params: dict[str, JsonValue] = Field(default_factory=dict)


class TransactionRequested(Model):
    """Body of ``transaction.requested``."""

    transaction_id: TransactionId | None = None
    operations: tuple[OperationRequest, ...] = Field(min_length=1, max_length=MAX_OPERATIONS)
    # Seconds until the transaction gives up and rolls back (the platform's default when
    # absent).
    timeout: float | None = Field(default=None, gt=0, le=3600)


OperationStatus = Literal["committed", "rolled_back", "refused", "failed", "not_run"]


class OperationResult(Model):
    """What became of one operation, in request order."""

    service: Name
    operation: Name
    status: OperationStatus
    detail: str = Field(default="", max_length=500)


class TransactionCommitted(Model):
    """Body of ``transaction.committed``: every operation took effect."""

    transaction_id: TransactionId
    results: tuple[OperationResult, ...]


class TransactionAborted(Model):
    """Body of ``transaction.aborted``: everything done was undone (unless
    ``needs_attention``: an undo failed for good and an operator must look)."""

    transaction_id: TransactionId
    reason_code: ReasonCode
    reason: str = Field(max_length=500)
    needs_attention: bool = False
    results: tuple[OperationResult, ...] = ()
