"""Property tests: operator actions interleaved with replies and timers, on sagas that
need attention (a confirm or an undo failed for good)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.admin import Action
from contracts.commands import Operation, Outcome
from engine.decide import NoteKind, OperatorAction, ReplyReceived, TimerFired
from engine.state import OpStatus, SagaStatus
from tests.unit.scripts import order_data
from tests.unit.test_engine_properties import ORDER, Run

RESOLVED = "order.resolved"
PROPERTIES = settings(max_examples=150, deadline=None)


@dataclass(frozen=True)
class Reply:
    index: int
    outcome: Outcome


@dataclass(frozen=True)
class Tick:
    dt: float


@dataclass(frozen=True)
class Operate:
    action: Action


Step = Reply | Tick | Operate
steps: st.SearchStrategy[Step] = st.one_of(
    st.builds(Reply, st.integers(0, 3), st.sampled_from(
        [Outcome.SUCCEEDED, Outcome.SUCCEEDED, Outcome.RETRYABLE_ERROR,
         Outcome.PERMANENT_ERROR])),
    st.builds(Tick, st.floats(0.0, 500.0, allow_nan=False)),
    st.builds(Operate, st.sampled_from(list(Action))))


def needs_attention(undo: bool) -> Run:
    """An order saga stopped by a confirm (or, with ``undo``, an undo) that failed for good."""
    run = Run.begin(ORDER, order_data())

    def answer(step: str, op: Operation = Operation.FORWARD,
               outcome: Outcome = Outcome.SUCCEEDED) -> None:
        message_id = run.state.op(step, op).message_id
        assert message_id is not None
        run.apply(ReplyReceived(message_id, outcome, run.now, "SHIPPING_UNAVAILABLE"))

    for step in ("create_order", "reserve_stock", "hold_funds"):
        answer(step)
    if undo:
        answer("schedule_shipment", outcome=Outcome.REJECTED)
        answer("reserve_stock", Operation.COMPENSATE, Outcome.PERMANENT_ERROR)
        for step in ("hold_funds", "create_order"):
            answer(step, Operation.COMPENSATE)
        answer("notify_rejection")
    else:
        answer("schedule_shipment")
        answer("reserve_stock", Operation.CONFIRM, Outcome.PERMANENT_ERROR)
        answer("hold_funds", Operation.CONFIRM)
        answer("schedule_shipment", Operation.CONFIRM)
    assert run.state.status is SagaStatus.NEEDS_ATTENTION
    return run


def operate(run: Run, script: list[Step]) -> int:
    """Perform the script, then settle the saga: success to everything, and a resolve if it
    needs attention again. Returns the index of the first decision after the attention."""
    first = len(run.decisions)
    for step in script:
        match step:
            case Reply(index, outcome):
                if waiting := run.waiting():
                    run.apply(ReplyReceived(waiting[index % len(waiting)], outcome, run.now))
            case Tick(dt):
                run.now += dt
                run.apply(TimerFired(run.now))
            case Operate(action):
                check_action(run, action)
    for _ in range(300):
        if run.state.status is SagaStatus.NEEDS_ATTENTION:
            check_action(run, Action.RESOLVE)
        if run.state.finished:
            return first
        if waiting := run.waiting():
            run.apply(ReplyReceived(waiting[0], Outcome.SUCCEEDED, run.now))
        else:
            run.now += 1000.0
            run.apply(TimerFired(run.now))
    raise AssertionError(f"not finished: {run.state.status}")


def check_action(run: Run, action: Action) -> None:
    """An action is refused (changing nothing) exactly when the saga's state forbids it."""
    before = run.state
    decision = run.apply(OperatorAction(action, "ops", "because", run.now))
    allowed = (before.status is SagaStatus.RUNNING if action is Action.CANCEL
               else before.status is SagaStatus.NEEDS_ATTENTION)
    refused = NoteKind.ACTION_REFUSED in {n.kind for n in decision.notes}
    assert refused != allowed
    if refused:
        assert not decision.changed
        assert before.status.value in decision.notes[-1].detail
    else:
        assert decision.state.history[-1].kind in {action.value, "sent", "finished"}
        assert any(e.kind == action.value and e.by == "ops" for e in decision.state.history)


@given(st.booleans(), st.lists(steps, max_size=25))
@PROPERTIES
def test_operator_actions_settle_the_saga_exactly_once(undo: bool, script: list[Step]) -> None:
    run = needs_attention(undo)
    succeeded = {key for key, op in run.state.ops.items() if op.status is OpStatus.SUCCEEDED}
    first = operate(run, script)
    after = run.decisions[first:]
    # What succeeded is never sent again, and nothing new starts going the other way.
    before_commit = {s.name for stage in ORDER.before_commit for s in stage}
    for decision in after:
        for m in decision.commands:
            assert (m.step, m.op) not in succeeded, m.message_id
            assert not (m.op is Operation.FORWARD and m.step in before_commit), m.message_id
            assert m.op is not (Operation.COMPENSATE if not undo else Operation.CONFIRM)
    # Needing attention again takes a new failure for good, noted in the same decision.
    for prior, decision in zip(run.decisions[first - 1:], after, strict=False):
        if (decision.state.status is SagaStatus.NEEDS_ATTENTION
                and prior.state.status is not SagaStatus.NEEDS_ATTENTION):
            assert NoteKind.ATTENTION in {n.kind for n in decision.notes}
    ids = [m.message_id for d in run.decisions for m in d.commands]
    assert len(ids) == len(set(ids)), "a command id was reused"
    # Attempts since the last fresh budget stay within the settle policy.
    for (step, _), op in run.state.ops.items():
        assert op.budget_used <= ORDER.steps[step].settle_policy.max_attempts
    # The client hears the end once, as a follow-up, and only when it really ends.
    follow_ups = [d for d in after if d.outcome is not None]
    assert len(follow_ups) == 1
    outcome = follow_ups[0].outcome
    assert outcome is not None
    assert outcome.type == RESOLVED
    assert outcome.payload.model_dump()["status"] == run.state.status.value
    assert run.state.status in {SagaStatus.COMPLETED, SagaStatus.FAILED, SagaStatus.RESOLVED}
    assert (run.state.status is SagaStatus.FAILED) == (undo and run.state.status
                                                       is not SagaStatus.RESOLVED)
    assert run.state.next_wakeup is None
