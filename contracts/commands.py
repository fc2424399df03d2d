"""Commands the orchestrator sends to participants, and the one reply they send back.

Every command has the same body, a ``StepCommand``: which saga and step it belongs to, the
operation's parameters (validated by the participant against the operation's own model,
published in its manifest), and, when undoing, why the saga failed. Its message type says
which operation of which service it is and which phase of it (``command_type``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, JsonValue, model_validator

from contracts.envelope import Model
from contracts.reasons import ReasonCode

# The orchestrator names sagas <definition>:<business key>, e.g. "order:o-17", unique
# across definitions; participants treat the id as opaque.
SagaId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
_RUN = re.compile(r"([^:]+:[^:]+):r([1-9][0-9]*)")


def run_id(saga_id: str, round_: int) -> str:
    """The saga id participants see in one round of a saga: its own id, or
    ``<saga id>:r<n>`` for its n-th new attempt after giving way in a deadlock. Each round
    is a new saga to them (new fences, new effects, new locks), so a retry never meets the
    records of the round it replaces."""
    return saga_id if round_ == 0 else f"{saga_id}:r{round_}"


def saga_of(run: str) -> str:
    """The saga a participant's saga id belongs to (the inverse of ``run_id``)."""
    found = _RUN.fullmatch(run)
    return run if found is None else found[1]


def round_of(run: str) -> int:
    """The round of a participant's saga id (0 for the saga's own id)."""
    found = _RUN.fullmatch(run)
    return 0 if found is None else int(found[2])


StepName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
# A participant service or one of its operations.
Name = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]


class Operation(StrEnum):
    """What a command does to its step: run it, confirm a prepared step, or undo it."""

    FORWARD = "forward"
    CONFIRM = "confirm"
    COMPENSATE = "compensate"


class OperationKind(StrEnum):
    """How a participant's operation takes part in a saga."""

    # Runs once; undone by its compensation when the saga fails (if it has one).
    ACTION = "action"
    # Prepare (a reservation that changes no committed state), then confirm or cancel.
    TWO_PHASE = "two_phase"


_SUFFIX = {
    (OperationKind.ACTION, Operation.FORWARD): "",
    (OperationKind.ACTION, Operation.COMPENSATE): ".undo",
    (OperationKind.TWO_PHASE, Operation.FORWARD): ".prepare",
    (OperationKind.TWO_PHASE, Operation.CONFIRM): ".confirm",
    (OperationKind.TWO_PHASE, Operation.COMPENSATE): ".cancel",
}


def command_type(service: str, operation: str, kind: OperationKind, phase: Operation) -> str:
    """The message type of one phase of an operation: ``inventory.reserve.prepare``,
    ``order.create``, ``order.create.undo``."""
    try:
        return f"{service}.{operation}{_SUFFIX[(kind, phase)]}"
    except KeyError:
        raise ValueError(f"a {kind} operation has no {phase} phase") from None


def phases(kind: OperationKind, undoable: bool = True) -> tuple[Operation, ...]:
    """The phases an operation of ``kind`` has."""
    if kind is OperationKind.TWO_PHASE:
        return Operation.FORWARD, Operation.CONFIRM, Operation.COMPENSATE
    return (Operation.FORWARD, Operation.COMPENSATE) if undoable else (Operation.FORWARD,)


class Outcome(StrEnum):
    """How a participant answered a command."""

    SUCCEEDED = "succeeded"
    # A business "no" (insufficient stock, payment declined): never retried.
    REJECTED = "rejected"
    # Worth another attempt later (a crash, a conflict, an unreachable dependency).
    RETRYABLE_ERROR = "retryable_error"
    # The participant can never carry this command out.
    PERMANENT_ERROR = "permanent_error"
    # Not an answer yet: a semantic lock the step needs is held by other sagas. The
    # participant keeps the command and answers again when the lock is free or its wait
    # times out (workers.locks, policy ``wait``); ``StepReply.waiting`` says on what.
    WAITING = "waiting"


# The answers a participant records with the step's fence and repeats to every later
# attempt of the same operation: whichever attempt's copy arrives first is the answer.
RECORDED_OUTCOMES = frozenset({Outcome.SUCCEEDED, Outcome.REJECTED})


class StepFailure(Model):
    """Why the saga is being undone, sent with its compensations."""

    reason_code: ReasonCode
    reason: str = Field(max_length=500)


class StepCommand(Model):
    """The body of every command: saga, step, the operation's parameters, and on an undo the
    saga's failure."""

    saga_id: SagaId
    step: StepName
    params: dict[str, JsonValue] = Field(default_factory=dict)
    failure: StepFailure | None = None


class LockWait(Model):
    """What a waiting step waits for: one key, the sagas holding it, and until when the
    participant lets it wait (epoch seconds) before answering ``LOCK_TIMEOUT``."""

    key: str = Field(min_length=1, max_length=200)
    holders: list[SagaId] = Field(min_length=1, max_length=50)
    until: float


class StepReply(Model):
    """saga.reply: a participant's answer to one command (causation id = the command's id)."""

    saga_id: SagaId
    step: StepName
    operation: Operation
    outcome: Outcome
    reason_code: ReasonCode | None = None
    detail: str = Field(default="", max_length=500)
    waiting: LockWait | None = None  # with outcome WAITING only

    @model_validator(mode="after")
    def _waiting_says_on_what(self) -> StepReply:
        if (self.outcome is Outcome.WAITING) != (self.waiting is not None):
            raise ValueError("a waiting reply, and only a waiting reply, says what it waits for")
        return self
