"""The state of one saga, as the engine sees it and the store persists it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic

from contracts.commands import Operation, Outcome
from engine.definition import D, Failure


class SagaStatus(StrEnum):
    """Where a saga is in its life."""

    RUNNING = "running"  # before the commit point: may still fail and be undone
    COMMITTED = "committed"  # past the commit point: only moves forward
    COMPENSATING = "compensating"  # failed: undoing completed steps in reverse order
    COMPLETED = "completed"
    FAILED = "failed"  # failed and fully compensated
    NEEDS_ATTENTION = "needs_attention"  # an undo or a confirm failed permanently
    RESOLVED = "resolved"  # needed attention; a person repaired it by hand and said so
    # Set aside by the store: its document cannot be decoded (its definition version is no
    # longer registered, or its data no longer fits the model). Never decided on again
    # until an operator deploys what it needs.
    QUARANTINED = "quarantined"


# NEEDS_ATTENTION is final for the engine: only an operator's retry or resolve moves it on.
TERMINAL = frozenset({SagaStatus.COMPLETED, SagaStatus.FAILED, SagaStatus.NEEDS_ATTENTION,
                      SagaStatus.RESOLVED})
# The states of a saga the engine still drives.
ACTIVE = frozenset({SagaStatus.RUNNING, SagaStatus.COMMITTED, SagaStatus.COMPENSATING})


class OpStatus(StrEnum):
    """The state of one operation (forward, confirm or compensate) of one step."""

    PENDING = "pending"  # not sent yet
    WAITING = "waiting"  # sent; waiting for its reply until due_at
    BACKOFF = "backoff"  # an attempt failed; the next one is sent at due_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"  # the saga failed while this forward operation was in flight


SETTLED = frozenset({OpStatus.SUCCEEDED, OpStatus.FAILED, OpStatus.ABANDONED})
IN_FLIGHT = frozenset({OpStatus.WAITING, OpStatus.BACKOFF})


@dataclass(frozen=True, slots=True)
class AttemptError:
    """One failed attempt, kept for ``sagactl status``."""

    attempt: int
    code: str
    detail: str
    at: float


MAX_ERRORS_KEPT = 10


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One transition of a saga: a command sent, a reply, a timeout, a retry, a status
    change or an operator's action."""

    at: float
    kind: str  # a NoteKind value, "sent", "reply", or an operator action
    step: str | None = None
    op: Operation | None = None
    detail: str = ""
    by: str | None = None  # who asked, for operator actions
    ref: str | None = None  # the message id of the operator's action


# A saga keeps its latest entries; the count of older ones dropped is kept with them.
MAX_HISTORY = 200


@dataclass(frozen=True, slots=True)
class OpState:
    """Progress of one operation of one step."""

    status: OpStatus = OpStatus.PENDING
    attempt: int = 0
    message_id: str | None = None
    due_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    outcome: Outcome | None = None
    errors: tuple[AttemptError, ...] = ()
    detail: str = ""  # what the participant said in its last reply
    # Attempts made before an operator's retry gave this operation a fresh budget.
    budget_from: int = 0
    # The participant answered "waiting": for the lock ``lock``, held by these sagas.
    waiting_on: tuple[str, ...] = ()
    lock: str | None = None

    @property
    def budget_used(self) -> int:
        """Attempts counted against the retry policy."""
        return self.attempt - self.budget_from

    def attempt_of(self, command_id: str) -> int | None:
        """Which of this operation's attempts sent ``command_id`` (None: none of them)."""
        if self.message_id is None:
            return None
        mine = self.message_id.rpartition(":")[0]
        head, _, number = command_id.rpartition(":")
        if head != mine or not number.isdigit():
            return None
        attempt = int(number)
        return attempt if 1 <= attempt <= self.attempt else None


def command_id(run: str, step: str, op: Operation, attempt: int) -> str:
    """The message id of one attempt of one operation in one round: the attempts of an
    operation differ only after the last colon (OpState.attempt_of)."""
    return f"{run}:{step}:{op}:{attempt}"


OpKey = tuple[str, Operation]


@dataclass(frozen=True, slots=True)
class SagaState(Generic[D]):
    """One saga. ``version`` belongs to the store: every save is a compare-and-set on it."""

    saga_id: str
    definition: str
    definition_version: int
    data: D
    status: SagaStatus
    created_at: float
    updated_at: float
    deadline_at: float
    cursor: int = 0
    ops: Mapping[OpKey, OpState] = field(default_factory=dict)
    failure: Failure | None = None
    attention: str | None = None
    trace_id: str | None = None  # W3C trace id shared by every message of this saga
    history: tuple[HistoryEntry, ...] = ()
    history_dropped: int = 0
    # Its clients were told it needs attention: its real end is announced as a follow-up.
    attention_announced: bool = False
    # How many times it started again after giving way in a deadlock (contracts.commands
    # run_id: the saga id its participants see in this round).
    round: int = 0
    version: int = 0

    @property
    def finished(self) -> bool:
        """True once the saga can never change again."""
        return self.status in TERMINAL

    def op(self, step: str, op: Operation) -> OpState:
        """The state of one operation (PENDING when never touched)."""
        return self.ops.get((step, op), _PENDING)

    def sent(self, command_id: str) -> OpKey | None:
        """The operation one of whose attempts (the latest or an earlier one) has this
        message id, if any."""
        return next((key for key, op in self.ops.items()
                     if op.attempt_of(command_id) is not None), None)

    @property
    def lock_waits(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        """(step, lock, holders) of every step waiting for a lock now; empty unless the saga
        runs (a failed saga's abandoned prepares wait for nothing)."""
        if self.status is not SagaStatus.RUNNING:
            return ()
        return tuple((step, o.lock or "", o.waiting_on) for (step, _), o in self.ops.items()
                     if o.status is OpStatus.WAITING and o.waiting_on)

    @property
    def next_wakeup(self) -> float | None:
        """The earliest timer: a reply timeout, a retry, or the saga deadline."""
        if self.finished:
            return None
        dues = [o.due_at for o in self.ops.values() if o.due_at is not None and
                o.status in IN_FLIGHT]
        if self.status is SagaStatus.RUNNING:
            dues.append(self.deadline_at)
        return min(dues) if dues else None


_PENDING = OpState()
