"""Property tests: the engine under arbitrary interleavings of replies, timers and cancels."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.commands import Operation, Outcome
from contracts.orders import OrderReason
from contracts.reasons import PlatformReason
from contracts.registry import ORDER_COMPLETED
from engine.decide import (
    CancelRequested,
    CommandOut,
    Decision,
    Event,
    NoteKind,
    ReplyReceived,
    TimerFired,
    decide,
    start,
)
from engine.definition import SagaDefinition, Tuning
from engine.state import IN_FLIGHT, OpStatus, SagaState, SagaStatus
from orchestrator.registry import DefinitionRegistry
from orchestrator.serde import from_document, to_document
from sagas.order import order_saga
from tests.unit.scripts import (
    SAGA_ID,
    ToyData,
    action,
    notice,
    order_data,
    reservation,
    toy_saga,
)

MAX_DRAIN = 300
# A short deadline and few settle attempts, so that random runs reach both often.
ORDER = order_saga(Tuning(deadline=60.0, settle_attempts=4))
TOY = toy_saga((action("a"),), (reservation("b"),), (action("c"),),
               after_commit=((notice("finish"),),), on_failure=((notice("report"),),))
PROPERTIES = settings(max_examples=200, deadline=None)

# --- what the test may do to a saga --------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """Reply to the ``index``-th command currently awaiting a reply."""

    index: int
    outcome: Outcome
    reason_code: str | None


@dataclass(frozen=True)
class Stale:
    """Reply to a command that is no longer awaited (or was never sent)."""

    index: int


@dataclass(frozen=True)
class Late:
    """A success for an earlier attempt of an operation still in flight, read only now."""

    index: int


@dataclass(frozen=True)
class Duplicate:
    """Deliver the last reply again."""


@dataclass(frozen=True)
class Tick:
    """Let ``dt`` seconds pass and fire the timers."""

    dt: float


@dataclass(frozen=True)
class Cancel:
    """Ask the saga to stop."""


Action = Answer | Stale | Late | Duplicate | Tick | Cancel

# Successes are likelier than each kind of failure, and a script cancels at most once, so
# that runs reach the commit point and every later stage often enough.
OUTCOMES = (Outcome.SUCCEEDED, Outcome.SUCCEEDED, Outcome.SUCCEEDED, Outcome.REJECTED,
            Outcome.RETRYABLE_ERROR, Outcome.PERMANENT_ERROR)
answers = st.builds(Answer, st.integers(0, 3), st.sampled_from(OUTCOMES),
                    st.none() | st.sampled_from([*OrderReason, *PlatformReason]))
ticks = st.builds(Tick, st.floats(0.0, 40.0, allow_nan=False))
actions: st.SearchStrategy[Action] = st.one_of(
    *[answers] * 8, *[ticks] * 3, st.builds(Stale, st.integers(0, 40)),
    st.builds(Late, st.integers(0, 40)), st.just(Duplicate()))


@st.composite
def scripts(draw: st.DrawFn) -> list[Action]:
    """Up to 30 actions, with one cancel somewhere in a third of them."""
    script = draw(st.lists(actions, max_size=30))
    if draw(st.integers(0, 2)) == 0:
        script.insert(draw(st.integers(0, len(script))), Cancel())
    return script

# --- one saga under test, checking every decision ------------------------------------------------


@dataclass
class Run:
    """A saga driven event by event; every decision is checked as it is made."""

    defn: SagaDefinition[Any]
    state: SagaState[Any]
    registry: DefinitionRegistry
    now: float = 0.0
    decisions: list[Decision[Any]] = field(default_factory=list)
    last_reply: ReplyReceived | None = None

    @classmethod
    def begin(cls, defn: SagaDefinition[Any], data: Any) -> Run:
        """Start a saga at t=0."""
        first = start(defn, SAGA_ID, data, 0.0)
        run = cls(defn, first.state, DefinitionRegistry([defn]), decisions=[first])
        run.check_serde()
        return run

    @property
    def sent(self) -> list[CommandOut]:
        """Every command published so far, in order."""
        return [m for d in self.decisions for m in d.commands]

    def waiting(self) -> list[str]:
        """Message ids of the commands currently awaiting a reply, in a stable order."""
        return sorted(o.message_id for o in self.state.ops.values()
                      if o.status is OpStatus.WAITING and o.message_id)

    def apply(self, event: Event) -> Decision[Any]:
        """Decide one event and check what can be checked about that single decision."""
        before = self.state
        decision = decide(self.defn, before, event)
        assert decide(self.defn, before, event) == decision, "decide is not deterministic"
        if not decision.changed:
            assert decision.state is before
            assert decision.commands == ()
        self.state = decision.state
        self.decisions.append(decision)
        self.check_serde()
        if isinstance(event, ReplyReceived):
            self.last_reply = event
            check_replay_is_stale(self.defn, decision.state, event)
        return decision

    def _in_flight(self, command_id: str) -> bool:
        key = self.state.sent(command_id)
        return key is not None and self.state.ops[key].status in IN_FLIGHT

    def check_serde(self) -> None:
        """The state survives a trip through its stored JSON document unchanged."""
        document = json.loads(json.dumps(to_document(self.state)))
        assert from_document(document, self.registry).state == self.state

    def perform(self, act: Action) -> None:
        """Turn one abstract action into an event, if it applies to the saga as it is now."""
        match act:
            case Answer(index, outcome, code):
                waiting = self.waiting()
                if waiting:
                    self.apply(ReplyReceived(waiting[index % len(waiting)], outcome, self.now, code))
            case Stale(index):
                # Commands of operations no longer in flight: their answer came, or they
                # were abandoned or given up on.
                ids = [m.message_id for m in self.sent if not self._in_flight(m.message_id)]
                ids.append(f"{SAGA_ID}:ghost:forward:1")
                expect_ignored(self.apply(ReplyReceived(ids[index % len(ids)], Outcome.SUCCEEDED,
                                                        self.now)))
            case Late(index):
                awaited = set(self.waiting())
                late = [m for m in self.sent
                        if self._in_flight(m.message_id) and m.message_id not in awaited]
                if late:
                    command = late[index % len(late)]
                    self.apply(ReplyReceived(command.message_id, Outcome.SUCCEEDED, self.now))
                    assert self.state.op(command.step, command.op).status is OpStatus.SUCCEEDED
            case Duplicate():
                if self.last_reply is not None:
                    again = self.last_reply
                    expect_ignored(self.apply(ReplyReceived(again.command_id, again.outcome,
                                                            self.now, again.reason_code)))
            case Tick(dt):
                self.now += dt
                self.apply(TimerFired(self.now))
            case Cancel():
                self.apply(CancelRequested("test", self.now))

    def drain(self) -> None:
        """Answer everything with success and jump far ahead until the saga finishes."""
        poked = False
        for _ in range(MAX_DRAIN):
            if self.state.finished:
                return
            assert self.state.next_wakeup is not None, "an unfinished saga has no timer"
            if self.state.status is SagaStatus.COMMITTED and not poked:
                self.poke_committed()
                poked = True
            elif waiting := self.waiting():
                self.apply(ReplyReceived(waiting[0], Outcome.SUCCEEDED, self.now))
            else:
                self.now += 1000.0
                self.apply(TimerFired(self.now))
        raise AssertionError(f"not finished after {MAX_DRAIN} events: {self.state.status}")

    def poke_committed(self) -> None:
        """Past the commit point, neither a cancel nor the deadline may turn the saga back."""
        ignored = self.apply(CancelRequested("too late", self.now))
        assert not ignored.changed
        assert NoteKind.CANCEL_IGNORED in {n.kind for n in ignored.notes}
        self.now += 1000.0
        self.apply(TimerFired(self.now))
        assert self.state.status in (SagaStatus.COMMITTED, SagaStatus.NEEDS_ATTENTION)


def expect_ignored(decision: Decision[Any]) -> None:
    """A reply nobody waits for changes nothing."""
    assert not decision.changed
    assert NoteKind.STALE_REPLY in {n.kind for n in decision.notes}


def check_replay_is_stale(defn: SagaDefinition[Any], state: SagaState[Any],
                          event: ReplyReceived) -> None:
    """Delivering the same reply again is a no-op."""
    again = decide(defn, state, event)
    expect_ignored(again)
    assert again.state is state


def run_script(defn: SagaDefinition[Any], data: Any, script: list[Action]) -> Run:
    """Start a saga, perform the script, then drive it to its end."""
    run = Run.begin(defn, data)
    for act in script:
        if run.state.finished:
            break
        run.perform(act)
    run.drain()
    return run


# --- properties of a whole run ------------------------------------------------------------


def stage_of(defn: SagaDefinition[Any]) -> dict[str, int]:
    """The index of the pre-commit stage of every step that can be undone."""
    return {s.name: i for i, stage in enumerate(defn.before_commit) for s in stage}


def check_confirm_and_undo_exclude_each_other(run: Run) -> None:
    """No confirm once undoing began, and no undo once anything was confirmed."""
    compensating = confirmed = False
    for decision in run.decisions:
        for m in decision.commands:
            if m.op is Operation.CONFIRM:
                assert not compensating
                assert decision.state.failure is None
                confirmed = True
            if m.op is Operation.COMPENSATE:
                assert not confirmed
        compensating |= decision.state.status is SagaStatus.COMPENSATING


def check_undo_only_what_was_sent(run: Run) -> None:
    """A compensation follows its step's forward command, and never a rejected step."""
    forwarded: set[str] = set()
    for m in run.sent:
        if m.op is Operation.FORWARD:
            forwarded.add(m.step)
        if m.op is Operation.COMPENSATE:
            assert m.step in forwarded, f"{m.step} undone but never sent"
            assert run.state.op(m.step, Operation.FORWARD).outcome is not Outcome.REJECTED


def check_undo_in_reverse_stage_order(run: Run) -> None:
    """Compensations go out newest stage first, and on_failure steps only after them all."""
    stages = stage_of(run.defn)
    undo = [stages[m.step] for m in run.sent if m.op is Operation.COMPENSATE]
    assert undo == sorted(undo, reverse=True)
    on_failure = {s.name for stage in run.defn.on_failure for s in stage}
    last_undo = max((i for i, m in enumerate(run.sent) if m.op is Operation.COMPENSATE), default=-1)
    first_report = min((i for i, m in enumerate(run.sent) if m.step in on_failure), default=None)
    assert first_report is None or first_report > last_undo


def check_command_ids(run: Run) -> None:
    """Every command has a unique id derived from (saga, step, op, attempt), attempts counting up."""
    ids = [m.message_id for m in run.sent]
    assert len(ids) == len(set(ids))
    attempts: dict[tuple[str, Operation], int] = {}
    for m in run.sent:
        assert m.message_id == f"{SAGA_ID}:{m.step}:{m.op}:{m.attempt}"
        assert m.attempt == attempts.get((m.step, m.op), 0) + 1
        attempts[(m.step, m.op)] = m.attempt


def check_attempt_budgets(run: Run) -> None:
    """No operation is tried more often than its retry policy allows."""
    stages = stage_of(run.defn)
    for m in run.sent:
        step = run.defn.steps[m.step]
        may_fail = m.op is Operation.FORWARD and m.step in stages
        budget = step.policy if may_fail else step.settle_policy
        assert m.attempt <= budget.max_attempts, m.message_id


def check_attention_stops_going_forward(run: Run) -> None:
    """After a confirm or a later step fails for good, no further forward step is started."""
    for before, decision in zip(run.decisions, run.decisions[1:], strict=False):
        if before.state.status is SagaStatus.COMMITTED and decision.state.attention is not None:
            assert not [m for m in decision.commands if m.attempt == 1], decision.commands


def check_outcome(run: Run, completed_type: str) -> None:
    """Exactly the finishing decision carries the outcome; it says completed iff it completed."""
    with_outcome = [i for i, d in enumerate(run.decisions) if d.outcome is not None]
    assert with_outcome == [len(run.decisions) - 1]
    outcome = run.decisions[-1].outcome
    assert outcome is not None
    status = run.state.status
    assert (outcome.type == completed_type) == (status is SagaStatus.COMPLETED)
    assert getattr(outcome.payload, "needs_attention", False) == (
        status is SagaStatus.NEEDS_ATTENTION)
    assert run.state.next_wakeup is None


def check_run(run: Run, completed_type: str) -> None:
    """Every whole-run property."""
    assert run.state.finished
    check_confirm_and_undo_exclude_each_other(run)
    check_undo_only_what_was_sent(run)
    check_undo_in_reverse_stage_order(run)
    check_command_ids(run)
    check_attempt_budgets(run)
    check_attention_stops_going_forward(run)
    check_outcome(run, completed_type)


# --- the properties -----------------------------------------------------------------------------


@PROPERTIES
@given(scripts())
def test_order_saga_always_finishes_consistently(script: list[Action]) -> None:
    """Whatever happens first, the order saga ends, and every run obeys the saga's rules."""
    check_run(run_script(ORDER, order_data(), script), ORDER_COMPLETED)


@PROPERTIES
@given(st.lists(st.builds(Answer, st.integers(0, 3), st.just(Outcome.SUCCEEDED), st.none()),
                max_size=12))
def test_order_saga_completes_when_everything_succeeds(script: list[Action]) -> None:
    """Successes in any order of the parallel replies complete the order without undoing."""
    run = run_script(ORDER, order_data(), script)
    assert run.state.status is SagaStatus.COMPLETED
    assert not any(m.op is Operation.COMPENSATE for m in run.sent)
    assert {m.step for m in run.sent if m.op is Operation.CONFIRM} == {"reserve_stock", "hold_funds",
                                                                        "schedule_shipment"}


@PROPERTIES
@given(scripts())
def test_toy_saga_undoes_in_reverse_stage_order(script: list[Action]) -> None:
    """A three-stage saga with a two-phase middle stage undoes newest stage first."""
    run = run_script(TOY, ToyData(), script)
    check_run(run, "toy.completed")
    undone = [m.step for m in run.sent if m.op is Operation.COMPENSATE and m.attempt == 1]
    assert undone == [s for s in ("c", "b", "a") if s in undone]
