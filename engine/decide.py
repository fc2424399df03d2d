"""The saga engine: a pure function from (definition, state, event) to (state, commands).

It performs no I/O and reads no clock: time arrives inside each event. The runner
persists the decision together with its commands, then publishes them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Generic

from contracts.admin import Action
from contracts.commands import (
    RECORDED_OUTCOMES,
    LockWait,
    Operation,
    Outcome,
    StepCommand,
    run_id,
    saga_of,
)
from contracts.reasons import PlatformReason
from engine.definition import (
    CommandContext,
    D,
    Failure,
    OutcomeContext,
    OutcomeEvent,
    Phase,
    RetryPolicy,
    SagaDefinition,
    Step,
)
from engine.state import (
    IN_FLIGHT,
    MAX_ERRORS_KEPT,
    MAX_HISTORY,
    AttemptError,
    HistoryEntry,
    OpKey,
    OpState,
    OpStatus,
    SagaState,
    SagaStatus,
    command_id,
)

# --- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    """A participant answered the command whose message id is ``command_id``."""

    command_id: str
    outcome: Outcome
    now: float
    reason_code: str | None = None
    detail: str = ""
    waiting: LockWait | None = None  # with outcome WAITING


@dataclass(frozen=True, slots=True)
class TimerFired:
    """Time has passed: fire reply timeouts, retries and the saga deadline that are due.

    They are due by ``heard_until`` when given (orchestrator.heard): the orchestrator has
    read every reply that arrived before then, so a step not answered by then was not.
    """

    now: float
    heard_until: float | None = None


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Someone asked to abandon the saga; honoured only before the commit point."""

    reason: str
    now: float


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """An operator's cancel, retry or resolve (contracts.admin)."""

    action: Action
    operator: str
    note: str
    now: float
    action_id: str | None = None  # its message id: the same action delivered again is a repeat


@dataclass(frozen=True, slots=True)
class DeadlockFound:
    """The saga is the victim of a cycle of lock waits (orchestrator.deadlock): it gives
    way, unless it has stopped waiting meanwhile."""

    others: tuple[str, ...]  # the other sagas of the cycle
    now: float


Event = ReplyReceived | TimerFired | CancelRequested | OperatorAction | DeadlockFound

# --- decisions ----------------------------------------------------------------------


class NoteKind(StrEnum):
    """Things worth counting or logging that a decision did or saw."""

    STARTED = "started"
    STALE_REPLY = "stale_reply"
    TIMED_OUT = "timed_out"
    RETRY = "retry"
    SETTLED = "settled"  # an operation succeeded or failed for good (its latency is final)
    COMMITTED = "committed"
    FAILED = "failed"
    COMPENSATION = "compensation"
    ATTENTION = "attention"
    CANCEL_IGNORED = "cancel_ignored"
    FINISHED = "finished"
    ACTION_REFUSED = "action_refused"  # an operator action that does not fit the saga's state
    ACTION_REPEATED = "action_repeated"  # the same operator action, delivered again
    LOCK_WAIT = "lock_wait"  # a step began to wait for a lock another saga holds
    DEADLOCK = "deadlock"  # the saga gave way in a deadlock
    NEW_ROUND = "new_round"  # undone after a deadlock, the saga starts again


@dataclass(frozen=True, slots=True)
class Note:
    """One observation of a decision, for metrics and logs."""

    kind: NoteKind
    step: str | None = None
    op: Operation | None = None
    detail: str = ""
    service: str | None = None


@dataclass(frozen=True, slots=True)
class CommandOut:
    """A command to publish to ``service``; the message id is deterministic."""

    message_id: str
    service: str
    type: str
    payload: StepCommand
    step: str
    op: Operation
    attempt: int


@dataclass(frozen=True, slots=True)
class Decision(Generic[D]):
    """The new state, what to publish, and what happened."""

    state: SagaState[D]
    commands: tuple[CommandOut, ...]
    outcome: OutcomeEvent | None
    notes: tuple[Note, ...]
    changed: bool


def start(defn: SagaDefinition[D], saga_id: str, data: D, now: float,
          trace_id: str | None = None) -> Decision[D]:
    """Begin a saga: the first stage's commands."""
    state = SagaState(
        saga_id=saga_id,
        definition=defn.name,
        definition_version=defn.version,
        data=data,
        status=SagaStatus.RUNNING,
        created_at=now,
        updated_at=now,
        deadline_at=now + defn.deadline,
        trace_id=trace_id,
    )
    t = _Transition(defn, state, now)
    t.note(NoteKind.STARTED)
    t.advance()
    return t.decision()


def decide(defn: SagaDefinition[D], state: SagaState[D], event: Event) -> Decision[D]:
    """Apply one event to a saga."""
    t = _Transition(defn, state, event.now)
    if isinstance(event, OperatorAction):
        t.on_operator(event)
    elif not state.finished:
        match event:
            case ReplyReceived():
                t.on_reply(event)
            case TimerFired():
                t.on_timer(event.now if event.heard_until is None
                           else min(event.now, event.heard_until))
            case CancelRequested():
                t.on_cancel(event.reason)
            case DeadlockFound():
                t.on_deadlock(event.others)
    elif isinstance(event, ReplyReceived):
        t.note(NoteKind.STALE_REPLY, detail=event.command_id)
    return t.decision()


def undo_phases(defn: SagaDefinition[D], state: SagaState[D]) -> tuple[Phase[D], ...]:
    """What a failed saga runs: compensations stage by stage in reverse, then on_failure.

    A step is undone when its forward command was sent at least once and was not
    rejected: a timed-out or abandoned command may still take effect, and the
    participant's fence turns an undo of something that never happened into a no-op.
    """
    phases: list[Phase[D]] = []
    for stage in reversed(defn.before_commit):
        ops = tuple((s, Operation.COMPENSATE) for s in stage if _needs_undo(s, state))
        if ops:
            phases.append(Phase(ops))
    phases += [Phase(tuple((s, Operation.FORWARD) for s in st)) for st in defn.on_failure]
    return tuple(phases)


def _needs_undo(step: Step[D], state: SagaState[D]) -> bool:
    forward = state.op(step.name, Operation.FORWARD)
    return (step.compensated and forward.attempt > 0
            and forward.outcome is not Outcome.REJECTED)


class _Transition(Generic[D]):
    """Working copy of one decision; built up by the handlers, frozen by ``decision``."""

    def __init__(self, defn: SagaDefinition[D], state: SagaState[D], now: float) -> None:
        self.defn = defn
        self.original = state
        self.state = state
        self.now = now
        self.ops: dict[OpKey, OpState] = dict(state.ops)
        self.commands: list[CommandOut] = []
        self.notes: list[Note] = []
        self.outcome: OutcomeEvent | None = None
        self.history: list[HistoryEntry] = []
        self.changed = False

    # --- event handlers ---------------------------------------------------------------

    def on_reply(self, reply: ReplyReceived) -> None:
        key = self._answered_by(reply)
        if key is None:
            self.note(NoteKind.STALE_REPLY, detail=reply.command_id)
            return
        step = self.defn.steps[key[0]]
        if reply.outcome is Outcome.WAITING and reply.waiting is not None:
            self._lock_wait(step, key, reply.waiting)
            return
        self.record("reply", step.name, key[1],
                    " ".join(filter(None, (reply.outcome.value, reply.reason_code, reply.detail))))
        self._set(key, waiting_on=(), lock=None)
        if reply.outcome is Outcome.SUCCEEDED:
            self._set(key, status=OpStatus.SUCCEEDED, due_at=None, finished_at=self.now,
                      outcome=reply.outcome, detail=reply.detail)
            self.note(NoteKind.SETTLED, step.name, key[1], OpStatus.SUCCEEDED.value, step.service)
        else:
            code = reply.reason_code or PlatformReason.SERVICE_ERROR
            retryable = reply.outcome is Outcome.RETRYABLE_ERROR
            self._attempt_failed(step, key[1], code, reply.detail, reply.outcome, retryable)
        self.advance()

    def on_timer(self, at: float) -> None:
        """Fire what is due at ``at``."""
        # The deadline first: a saga out of time must not send one more retry.
        if self.state.status is SagaStatus.RUNNING and at >= self.state.deadline_at:
            self._fail(Failure(PlatformReason.TIMEOUT, "the saga deadline passed"))
        for key in list(self.ops):
            op = self.ops[key]
            if op.due_at is None or op.due_at > at or op.status not in IN_FLIGHT:
                continue
            step = self.defn.steps[key[0]]
            if op.status is OpStatus.WAITING:
                self.note(NoteKind.TIMED_OUT, step.name, key[1])
                self._attempt_failed(step, key[1], PlatformReason.TIMEOUT,
                                     "no reply before the step timeout", None, retryable=True)
            else:
                self.note(NoteKind.RETRY, step.name, key[1])
                self._send(step, key[1])
        self.advance()

    def _lock_wait(self, step: Step[D], key: OpKey, wait: LockWait) -> None:
        """The participant holds the command until the lock is free or its wait is over;
        the step's reply timeout starts again from then."""
        op = self._op(*key)
        # Participants name the holders' rounds (run_id); the graph is between sagas.
        holders = tuple(sorted({saga_of(h) for h in wait.holders} - {self.state.saga_id}))
        if (holders, wait.key) == (op.waiting_on, op.lock) or not holders:
            return  # nothing new (or a saga reported as waiting for itself: not a wait)
        due = max(op.due_at or self.now,
                  wait.until + self._policy(step, key[1]).timeout_for(op.budget_used))
        if not op.waiting_on:
            self.note(NoteKind.LOCK_WAIT, step.name, key[1], wait.key, step.service)
        self._set(key, waiting_on=holders, lock=wait.key, due_at=due)
        self.record("waiting", step.name, key[1], f"for {wait.key} held by {', '.join(holders)}")

    def on_deadlock(self, others: tuple[str, ...]) -> None:
        if self.state.status is not SagaStatus.RUNNING or not self.state.lock_waits:
            return  # it stopped waiting meanwhile: the cycle is gone
        step = self.state.lock_waits[0][0]
        detail = f"gave way in a deadlock with {', '.join(others)}"[:300]
        self.note(NoteKind.DEADLOCK, step, detail=detail)
        self._fail(Failure(PlatformReason.DEADLOCK, detail, step))
        self.advance()

    def on_cancel(self, reason: str) -> None:
        if self.state.status is not SagaStatus.RUNNING:
            self.note(NoteKind.CANCEL_IGNORED, detail=f"saga is {self.state.status}")
            return
        self.record(Action.CANCEL.value, detail=reason)
        self._fail(Failure(PlatformReason.CANCELLED, reason))
        self.advance()

    def on_operator(self, event: OperatorAction) -> None:
        status = self.state.status
        if event.action_id is not None and any(e.ref == event.action_id
                                               for e in self.state.history):
            self.note(NoteKind.ACTION_REPEATED, detail=f"the saga is {status.value}")
            return
        match event.action:
            case Action.CANCEL:
                if status is not SagaStatus.RUNNING:
                    self._refuse(f"the saga is {status.value}; only a running saga that has "
                                 "not committed can be cancelled")
                    return
                self.record(Action.CANCEL.value, detail=event.note, by=event.operator,
                            ref=event.action_id)
                self._fail(Failure(PlatformReason.CANCELLED,
                                   event.note or "cancelled by an operator"))
                self.advance()
            case _ if status is not SagaStatus.NEEDS_ATTENTION:
                self._refuse(f"the saga is {status.value}; only a saga that needs attention "
                             f"can be {'retried' if event.action is Action.RETRY else 'resolved'}")
            case Action.RETRY:
                self.record(Action.RETRY.value, detail=event.note, by=event.operator,
                            ref=event.action_id)
                self._retry()
            case Action.RESOLVE:
                self.record(Action.RESOLVE.value, detail=event.note, by=event.operator,
                            ref=event.action_id)
                self._update(status=SagaStatus.RESOLVED)
                self._announce_resolved(event.note)
                self.note(NoteKind.FINISHED, detail=SagaStatus.RESOLVED.value)

    def _refuse(self, why: str) -> None:
        self.note(NoteKind.ACTION_REFUSED, detail=why)

    def _retry(self) -> None:
        """Run what failed for good again, with a fresh attempt budget: the confirms, undos
        and notices (a forward step before the commit point failed the saga; it stays)."""
        settling = {s.name for stage in (*self.defn.after_commit, *self.defn.on_failure)
                    for s in stage}
        for key, op in list(self.ops.items()):
            if op.status is OpStatus.FAILED and (key[1] is not Operation.FORWARD
                                                 or key[0] in settling):
                self._set(key, status=OpStatus.PENDING, budget_from=op.attempt, due_at=None,
                          finished_at=None)
        undoing = self.state.failure is not None
        # Undo phases are walked again from the start: what already settled is skipped.
        self._update(status=SagaStatus.COMPENSATING if undoing else SagaStatus.COMMITTED,
                     attention=None, cursor=0 if undoing else self.state.cursor)
        self.advance()

    # --- progress -----------------------------------------------------------------------

    def advance(self) -> None:
        """Send what the current phase still needs; move on while phases complete."""
        while not self.state.finished:
            phases = self._phases()
            if self._undone_after_deadlock(phases):
                self._new_round()
                return
            if self.state.cursor >= len(phases):
                self._finish()
                return
            phase = phases[self.state.cursor]
            for step, op in phase.ops:
                if self._op(step.name, op).status is OpStatus.PENDING:
                    self._send(step, op)
            ops = [self._op(step.name, op) for step, op in phase.ops]
            if any(o.status in IN_FLIGHT for o in ops):
                return
            if self.state.status is SagaStatus.COMMITTED and self.state.attention:
                self._finish()
                return
            self._update(cursor=self.state.cursor + 1)
            if (self.state.status is SagaStatus.RUNNING
                    and self.state.cursor >= self.defn.commit_index):
                self._update(status=SagaStatus.COMMITTED)
                self.note(NoteKind.COMMITTED)

    def _undone_after_deadlock(self, phases: tuple[Phase[D], ...]) -> bool:
        """A deadlock victim with rounds left whose compensations are all done (its
        on_failure steps, such as a failure notice, are for its last round only)."""
        state = self.state
        return (state.status is SagaStatus.COMPENSATING and state.attention is None
                and state.failure is not None
                and state.failure.reason_code == PlatformReason.DEADLOCK
                and state.round < self.defn.deadlock_retries
                and state.cursor >= len(phases) - len(self.defn.on_failure))

    def _new_round(self) -> None:
        """Start again from the first stage, after a backoff, as a new saga to the
        participants (a new run id: new fences, effects and locks). The saga keeps its id,
        its start time (its age for the victim rule: it only gets older than newcomers, so
        it ends up first in line) and its deadline."""
        number = self.state.round + 1
        delay = self.defn.deadlock_backoff * 2 ** (number - 1)
        self.ops = {(step.name, op): OpState(status=OpStatus.BACKOFF, due_at=self.now + delay)
                    for step, op in self.defn.forward_phases[0].ops}
        self._update(status=SagaStatus.RUNNING, cursor=0, failure=None, round=number)
        self.note(NoteKind.NEW_ROUND, detail=f"round {number} of "
                                             f"{self.defn.deadlock_retries + 1} in {delay:.1f}s")

    def _phases(self) -> tuple[Phase[D], ...]:
        if self.state.status is SagaStatus.COMPENSATING:
            return undo_phases(self.defn, self._snapshot())
        return self.defn.forward_phases

    def _send(self, step: Step[D], op: Operation) -> None:
        current = self._op(step.name, op)
        attempt = current.attempt + 1
        run = run_id(self.state.saga_id, self.state.round)
        message_id = command_id(run, step.name, op, attempt)
        context = CommandContext(self.state.saga_id, step.name, self.state.data,
                                 self.state.failure)
        payload = step.command(op, context)
        if run != self.state.saga_id:
            payload = payload.model_copy(update={"saga_id": run})
        self.commands.append(CommandOut(message_id, step.service, step.command_type(op),
                                        payload, step.name, op, attempt))
        if op is Operation.COMPENSATE and attempt == 1:
            self.note(NoteKind.COMPENSATION, step.name, op)
        self.record("sent", step.name, op, f"attempt {attempt}")
        timeout = self._policy(step, op).timeout_for(attempt - current.budget_from)
        # A new attempt waits for nothing until its own reply says so.
        self._set((step.name, op), status=OpStatus.WAITING, attempt=attempt,
                  message_id=message_id, due_at=self.now + timeout,
                  started_at=self.now if current.started_at is None else current.started_at,
                  waiting_on=(), lock=None)

    def _attempt_failed(self, step: Step[D], op: Operation, code: str, detail: str,
                        outcome: Outcome | None, retryable: bool) -> None:
        key = (step.name, op)
        current = self._op(*key)
        error = AttemptError(current.attempt, code, detail, self.now)
        errors = (*current.errors, error)[-MAX_ERRORS_KEPT:]
        policy = self._policy(step, op)
        if retryable and current.budget_used < policy.max_attempts:
            delay = policy.delay(current.budget_used, current.message_id or step.name)
            self._set(key, status=OpStatus.BACKOFF, due_at=self.now + delay, errors=errors,
                      outcome=outcome, detail=detail)
            return
        self._set(key, status=OpStatus.FAILED, due_at=None, finished_at=self.now,
                  errors=errors, outcome=outcome, detail=detail)
        self.note(NoteKind.SETTLED, step.name, op, OpStatus.FAILED.value, step.service)
        if op is Operation.FORWARD and self.state.status is SagaStatus.RUNNING:
            self._fail(Failure(code, detail or code, step.name))
        else:
            self.note(NoteKind.ATTENTION, step.name, op, detail)
            self._update(attention=f"{step.name} {op} failed permanently: {code} {detail}")

    def _fail(self, failure: Failure) -> None:
        """Stop going forward; abandon in-flight forward commands; start undoing."""
        for key, op in list(self.ops.items()):
            if key[1] is Operation.FORWARD and op.status in IN_FLIGHT:
                self._set(key, status=OpStatus.ABANDONED, due_at=None, finished_at=self.now,
                          waiting_on=(), lock=None)
        self._update(status=SagaStatus.COMPENSATING, cursor=0, failure=failure)
        self.note(NoteKind.FAILED, failure.step, detail=failure.reason_code)

    def _finish(self) -> None:
        status, failure = self._final()
        self._update(status=status)
        attention = status is SagaStatus.NEEDS_ATTENTION
        if not self.state.attention_announced:
            self.outcome = self.defn.outcome(
                OutcomeContext(self.state.saga_id, self.state.data, failure, attention,
                               self.ops))
            self._update(attention_announced=attention)
        elif not attention:
            # Its clients heard "needs attention"; they hear the end as a follow-up. Needing
            # attention once more is not announced again (the alert counts every incident).
            self._announce_resolved("after an operator's retry")
        self.note(NoteKind.FINISHED, detail=status.value)

    def _announce_resolved(self, detail: str) -> None:
        start = self.defn.start
        if start is None or not self.state.attention_announced:
            return
        failure = self.state.failure
        self.outcome = start.resolved_event(
            self.state.saga_id, self.state.status.value,
            None if failure is None or self.state.status is SagaStatus.COMPLETED
            else failure.reason_code, detail)

    def _final(self) -> tuple[SagaStatus, Failure | None]:
        state = self.state
        if state.attention is None:
            done = state.status is not SagaStatus.COMPENSATING
            return (SagaStatus.COMPLETED if done else SagaStatus.FAILED), state.failure
        code = (PlatformReason.COMPENSATION_FAILED if state.status is SagaStatus.COMPENSATING
                else PlatformReason.CONFIRMATION_FAILED)
        original = f" after {state.failure.reason_code}" if state.failure else ""
        return SagaStatus.NEEDS_ATTENTION, Failure(code, state.attention + original)

    # --- small helpers --------------------------------------------------------------------

    def _policy(self, step: Step[D], op: Operation) -> RetryPolicy:
        # Only forward steps before the commit point may give up and fail the saga;
        # everything after it, and every undo, must settle.
        if op is Operation.FORWARD and self.state.status is SagaStatus.RUNNING:
            return step.policy
        return step.settle_policy

    def _answered_by(self, reply: ReplyReceived) -> OpKey | None:
        """The operation this reply answers: the one waiting for exactly this command, or
        one still in flight that an earlier attempt's final answer settles.

        Participants fence every step and repeat its recorded answer (RECORDED_OUTCOMES) to
        every later attempt. A success read only after its attempt timed out, behind a
        backlog of replies say, is therefore the operation's answer; ignoring it would time
        the step out again on every attempt whose reply waits behind the same backlog. Any
        other answer to an earlier attempt (a retryable error, a lock wait, an injected
        failure) says nothing about the latest one.
        """
        for key, op in self.ops.items():
            attempt = op.attempt_of(reply.command_id)
            if attempt is None or op.status not in IN_FLIGHT:
                continue
            if attempt == op.attempt and op.status is OpStatus.WAITING:
                return key
            if reply.outcome in RECORDED_OUTCOMES:
                return key
        return None

    def _op(self, step: str, op: Operation) -> OpState:
        return self.ops.get((step, op)) or OpState()

    def _set(self, key: OpKey, **changes: object) -> None:
        self.ops[key] = replace(self._op(*key), **changes)  # type: ignore[arg-type]
        self.changed = True

    def _update(self, **changes: object) -> None:
        self.state = replace(self.state, **changes)  # type: ignore[arg-type]
        self.changed = True

    def _snapshot(self) -> SagaState[D]:
        return replace(self.state, ops=dict(self.ops))

    def note(self, kind: NoteKind, step: str | None = None, op: Operation | None = None,
             detail: str = "", service: str | None = None) -> None:
        self.notes.append(Note(kind, step, op, detail, service))
        if kind in RECORDED:
            self.record(kind.value, step, op, detail)

    def record(self, kind: str, step: str | None = None, op: Operation | None = None,
               detail: str = "", by: str | None = None, ref: str | None = None) -> None:
        """Append to the saga's history (kept only if the decision changes the saga)."""
        self.history.append(HistoryEntry(self.now, kind, step, op, detail[:300], by, ref))

    def decision(self) -> Decision[D]:
        if not self.changed:
            return Decision(self.original, tuple(self.commands), self.outcome,
                            tuple(self.notes), False)
        history = (*self.state.history, *self.history)
        dropped = max(0, len(history) - MAX_HISTORY)
        state = replace(self._snapshot(), updated_at=self.now, history=history[dropped:],
                        history_dropped=self.state.history_dropped + dropped)
        return Decision(state, tuple(self.commands), self.outcome, tuple(self.notes), True)


# Notes that belong in a saga's history (sent commands and replies are recorded directly).
RECORDED = frozenset({NoteKind.STARTED, NoteKind.TIMED_OUT, NoteKind.RETRY, NoteKind.COMMITTED,
                      NoteKind.FAILED, NoteKind.ATTENTION, NoteKind.FINISHED,
                      NoteKind.DEADLOCK, NoteKind.NEW_ROUND})
