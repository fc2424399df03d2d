"""The fence: per (saga, step), what has happened, so that every order of arrival is safe.

Two-phase systems such as Seata keep a table like this to solve two problems:

* empty rollback: a cancel arrives before (or without) its prepare. It is recorded and
  answered "done" with nothing to undo.
* suspension: a prepare arrives after its cancel. It is refused, so no resource stays
  reserved for a saga that has already been rolled back.

The same rules make every operation idempotent at the business level, whatever the
message id of the attempt.

The fence is also the step's inbox: each command that changed the step is kept in it with
its message id and its reply, so that a copy of that message gets the recorded reply, and an
auditor can count how often each operation really ran. A step changes at most twice
(forward, then confirm or compensate), so the list stays short.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from contracts.commands import Operation
from workers.store import Doc


class FenceState(StrEnum):
    """The last thing that happened to one step of one saga at this participant."""

    TRIED = "tried"  # forward done (prepared, or an action applied)
    REJECTED = "rejected"  # forward refused for a business reason
    CONFIRMED = "confirmed"
    COMPENSATED = "compensated"  # undone, or fenced before anything happened


class Run(BaseModel):
    """One command that changed the step: its message id and the reply it got (JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    message_id: str
    reply: str
    at: float


class Fence(Doc):
    """Fence record; ``id`` is ``<saga id>:<step>``."""

    collection = "fences"
    state: FenceState
    reason_code: str | None = None
    detail: str = ""
    updated_at: float = 0.0
    expires_at: datetime | None = None  # deleted then by a TTL index (Retention.fence)
    runs: tuple[Run, ...] = ()  # the commands that changed the step, oldest first

    def run_of(self, message_id: str) -> Run | None:
        """The change this message made, if it made one (a copy of it is a duplicate)."""
        return next((run for run in self.runs if run.message_id == message_id), None)


class Verdict(StrEnum):
    """What the runtime should do with a command, given the fence."""

    RUN = "run"  # call the handler
    REPLAY = "replay"  # already done: answer as before, change nothing
    EMPTY_ROLLBACK = "empty_rollback"  # record the cancel; nothing to undo
    SUSPENDED = "suspended"  # refuse: the step was undone before this arrived
    IMPOSSIBLE = "impossible"  # a permanent error: e.g. confirm without prepare


_RULES: dict[tuple[Operation, FenceState | None], Verdict] = {
    (Operation.FORWARD, None): Verdict.RUN,
    (Operation.FORWARD, FenceState.TRIED): Verdict.REPLAY,
    (Operation.FORWARD, FenceState.CONFIRMED): Verdict.REPLAY,
    (Operation.FORWARD, FenceState.REJECTED): Verdict.REPLAY,
    (Operation.FORWARD, FenceState.COMPENSATED): Verdict.SUSPENDED,
    (Operation.CONFIRM, FenceState.TRIED): Verdict.RUN,
    (Operation.CONFIRM, FenceState.CONFIRMED): Verdict.REPLAY,
    (Operation.COMPENSATE, None): Verdict.EMPTY_ROLLBACK,
    (Operation.COMPENSATE, FenceState.TRIED): Verdict.RUN,
    (Operation.COMPENSATE, FenceState.REJECTED): Verdict.EMPTY_ROLLBACK,
    (Operation.COMPENSATE, FenceState.COMPENSATED): Verdict.REPLAY,
}

AFTER_RUN = {
    Operation.FORWARD: FenceState.TRIED,
    Operation.CONFIRM: FenceState.CONFIRMED,
    Operation.COMPENSATE: FenceState.COMPENSATED,
}


def verdict(op: Operation, state: FenceState | None) -> Verdict:
    """The fence rule for an operation arriving when the step is in ``state``."""
    return _RULES.get((op, state), Verdict.IMPOSSIBLE)


def fence_id(saga_id: str, step: str) -> str:
    """The fence key of one step of one saga."""
    return f"{saga_id}:{step}"
