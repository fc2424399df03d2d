"""Given/expect scripts of the order saga on the pure engine."""

from __future__ import annotations

import pytest

from contracts.commands import Operation, Outcome
from contracts.orders import OrderReason
from contracts.reasons import PlatformReason
from contracts.registry import ORDER_COMPLETED, ORDER_FAILED
from engine.decide import NoteKind, ReplyReceived, TimerFired
from engine.definition import RetryPolicy, Tuning
from engine.state import OpStatus, SagaStatus
from sagas.order import APPROVED_NOTICE, REJECTED_NOTICE, order_saga, order_saga_v1
from tests.unit.scripts import Script

CONFIRMS = ("reserve_stock:confirm", "hold_funds:confirm", "schedule_shipment:confirm")


def committed(tuning: Tuning | None = None) -> Script:
    """A saga whose every pre-commit step succeeded: its confirms are in flight."""
    s = Script(order_saga(tuning or Tuning()))
    s.succeed("create_order", "reserve_stock", "hold_funds", "schedule_shipment")
    s.expect_sent(*CONFIRMS)
    return s


def fail_hold_funds() -> Script:
    """A saga whose payment was declined after its stock was reserved."""
    s = Script()
    s.succeed("create_order", "reserve_stock")
    s.reject("hold_funds", OrderReason.PAYMENT_DECLINED)
    s.expect_sent("reserve_stock:compensate")
    return s


# --- the happy path ------------------------------------------------------------------------


def test_happy_path_runs_every_stage_in_order_and_completes() -> None:
    """Every step succeeding runs the stages in order, confirms in parallel and completes."""
    s = Script()
    (create,) = s.expect_sent("create_order")
    assert create.message_id == "order:o-1:create_order:forward:1"
    assert create.type == "order.create"
    assert create.payload.params["order_id"] == "o-1"
    s.succeed("create_order")
    s.expect_sent("reserve_stock", "hold_funds")
    s.succeed("reserve_stock")
    s.expect_sent()
    s.succeed("hold_funds")
    s.expect_sent("schedule_shipment")
    s.succeed("schedule_shipment")
    confirms = s.expect_sent(*CONFIRMS)
    assert [m.message_id for m in confirms] == ["order:o-1:reserve_stock:confirm:1",
                                                "order:o-1:hold_funds:confirm:1",
                                                "order:o-1:schedule_shipment:confirm:1"]
    s.expect_status(SagaStatus.COMMITTED)
    s.expect_note(NoteKind.COMMITTED)
    s.succeed(*CONFIRMS)
    s.expect_sent("approve_order")
    s.succeed("approve_order")
    (notify,) = s.expect_sent("notify_customer")
    assert notify.type == "notification.send"
    assert notify.payload.params["kind"] == APPROVED_NOTICE
    s.succeed("notify_customer")
    s.expect_status(SagaStatus.COMPLETED)
    s.expect_outcome(ORDER_COMPLETED)
    assert s.compensated() == []


# --- business rejections before the commit point ------------------------------------------


REJECTIONS = [
    pytest.param([], "create_order", OrderReason.ORDER_REFUSED, [],
                 id="create_order"),
    pytest.param(["create_order", "hold_funds"], "reserve_stock", OrderReason.INSUFFICIENT_STOCK,
                 [["hold_funds:compensate"], ["create_order:compensate"]], id="reserve_stock"),
    pytest.param(["create_order", "reserve_stock"], "hold_funds", OrderReason.PAYMENT_DECLINED,
                 [["reserve_stock:compensate"], ["create_order:compensate"]], id="hold_funds"),
    pytest.param(["create_order", "reserve_stock", "hold_funds"], "schedule_shipment",
                 OrderReason.SHIPPING_UNAVAILABLE,
                 [["reserve_stock:compensate", "hold_funds:compensate"],
                  ["create_order:compensate"]], id="schedule_shipment"),
]


@pytest.mark.parametrize(("succeeded", "rejected", "code", "undo"), REJECTIONS)
def test_rejection_compensates_completed_steps_in_reverse_stage_order(
        succeeded: list[str], rejected: str, code: str, undo: list[list[str]]) -> None:
    """A business "no" undoes what succeeded, newest stage first, but not the rejected step."""
    s = Script()
    s.succeed(*succeeded)
    s.reject(rejected, code)
    s.expect_note(NoteKind.FAILED)
    for phase in undo:
        s.expect_status(SagaStatus.COMPENSATING)
        s.expect_sent(*phase)
        s.succeed(*phase)
    (notify,) = s.expect_sent("notify_rejection")
    assert notify.type == "notification.send"
    assert notify.payload.params["kind"] == REJECTED_NOTICE
    s.succeed("notify_rejection")
    s.expect_status(SagaStatus.FAILED)
    s.expect_outcome(ORDER_FAILED, code)
    assert rejected not in s.compensated()
    assert not any(m.op is Operation.CONFIRM for m in s.sent)


def test_undo_of_the_order_carries_the_failure_reason() -> None:
    """The undo of order.create tells the order service why the order failed."""
    s = fail_hold_funds()
    s.succeed("reserve_stock:compensate")
    (reject,) = s.expect_sent("create_order:compensate")
    assert reject.type == "order.create.undo"
    assert reject.payload.failure is not None
    assert reject.payload.failure.reason_code == OrderReason.PAYMENT_DECLINED


def test_sibling_in_flight_is_compensated_and_its_late_reply_is_stale() -> None:
    """A parallel step still waiting when its sibling fails is undone, and its reply ignored."""
    s = Script()
    s.succeed("create_order")
    late = s.message_id("reserve_stock")
    s.reject("hold_funds", OrderReason.PAYMENT_DECLINED)
    s.expect_sent("reserve_stock:compensate")
    s.expect_op("reserve_stock", OpStatus.ABANDONED)
    s.reply("reserve_stock", Outcome.SUCCEEDED, message_id=late)
    s.expect_ignored()
    s.succeed("reserve_stock:compensate")
    s.expect_sent("create_order:compensate")


def test_sibling_in_backoff_is_compensated_and_never_retried() -> None:
    """A parallel step waiting to retry when its sibling fails is undone instead of retried."""
    s = Script()
    s.succeed("create_order")
    s.retryable_error("reserve_stock")
    s.reject("hold_funds", OrderReason.PAYMENT_DECLINED)
    s.expect_sent("reserve_stock:compensate")
    s.tick(5.0)
    assert not any(m.step == "reserve_stock" and m.attempt == 2 for m in s.sent)
    s.expect_op("reserve_stock", OpStatus.ABANDONED, attempt=1)


# --- transient failures, timeouts and deadlines -------------------------------------------------


def test_transient_failure_is_retried_after_the_backoff_with_a_new_attempt_id() -> None:
    """A retryable error waits out the backoff, then resends under a new message id."""
    s = Script()
    s.tick(1.0)
    s.retryable_error("create_order")
    s.expect_sent()
    s.expect_op("create_order", OpStatus.BACKOFF, attempt=1)
    delay = order_saga().steps["create_order"].policy.delay(1, "order:o-1:create_order:forward:1")
    assert s.state.next_wakeup == pytest.approx(1.0 + delay)
    s.tick(1.0 + delay / 2)
    s.expect_sent()
    s.tick_to_wakeup()
    (retry,) = s.expect_sent("create_order")
    assert retry.message_id.endswith(":2")
    assert retry.attempt == 2
    s.expect_note(NoteKind.RETRY)
    s.succeed("create_order")
    s.expect_sent("reserve_stock", "hold_funds")


def test_retries_exhausted_fail_the_saga_with_service_error() -> None:
    """A step that keeps failing transiently fails the saga once its attempts are used up."""
    s = Script()
    for _ in range(2):
        s.retryable_error("create_order")
        s.tick_to_wakeup()
    s.retryable_error("create_order")
    s.expect_op("create_order", OpStatus.FAILED, attempt=3)
    s.expect_sent("create_order:compensate")  # it may have taken effect before failing
    s.succeed("create_order:compensate", "notify_rejection")
    s.expect_outcome(ORDER_FAILED, PlatformReason.SERVICE_ERROR)


def test_reply_timeout_retries_the_step() -> None:
    """No reply within the step timeout counts as a failed attempt, retried after the backoff."""
    s = Script()
    s.tick(9.99)
    s.expect_sent()
    assert not s.last.changed
    s.tick(10.0)
    s.expect_note(NoteKind.TIMED_OUT)
    s.expect_op("create_order", OpStatus.BACKOFF, attempt=1)
    s.tick_to_wakeup()
    (retry,) = s.expect_sent("create_order")
    assert retry.message_id == "order:o-1:create_order:forward:2"
    s.succeed("create_order")
    s.expect_sent("reserve_stock", "hold_funds")


def test_timeouts_exhausted_fail_the_saga_with_timeout() -> None:
    """A participant that never answers fails the saga with TIMEOUT after its last attempt."""
    s = Script()
    s.succeed("create_order")
    s.succeed("reserve_stock")
    for _ in range(2):
        s.tick_to_wakeup()  # the reply timeout
        s.tick_to_wakeup()  # the retry
        s.expect_sent("hold_funds")
    s.tick_to_wakeup()
    s.expect_op("hold_funds", OpStatus.FAILED, attempt=3)
    s.expect_sent("reserve_stock:compensate", "hold_funds:compensate")
    s.succeed("reserve_stock:compensate", "hold_funds:compensate", "create_order:compensate",
              "notify_rejection")
    s.expect_outcome(ORDER_FAILED, PlatformReason.TIMEOUT)


def test_deadline_passing_before_the_commit_point_fails_and_compensates() -> None:
    """A saga still running at its deadline fails with TIMEOUT and undoes everything sent."""
    s = Script(order_saga(Tuning(deadline=5.0)))
    s.succeed("create_order", "reserve_stock", "hold_funds")
    s.expect_sent("schedule_shipment")
    assert s.state.next_wakeup == 5.0
    s.tick(5.0)
    s.expect_status(SagaStatus.COMPENSATING)
    s.expect_op("schedule_shipment", OpStatus.ABANDONED)
    s.expect_sent("schedule_shipment:compensate")
    s.succeed("schedule_shipment:compensate")
    s.expect_sent("reserve_stock:compensate", "hold_funds:compensate")
    s.succeed("reserve_stock:compensate", "hold_funds:compensate", "create_order:compensate",
              "notify_rejection")
    s.expect_outcome(ORDER_FAILED, PlatformReason.TIMEOUT)


def test_deadline_after_the_commit_point_does_nothing() -> None:
    """Once committed, the saga deadline no longer applies: the saga only moves forward."""
    s = committed(Tuning(deadline=5.0))
    s.tick(6.0)
    s.expect_sent()
    assert not s.last.changed
    s.expect_status(SagaStatus.COMMITTED)
    assert s.state.next_wakeup == 10.0  # the confirms' reply timeout, not the deadline
    s.succeed(*CONFIRMS, "approve_order", "notify_customer")
    s.expect_outcome(ORDER_COMPLETED)


# --- stale and duplicate replies ------------------------------------------------------------


@pytest.mark.parametrize("late", [Outcome.RETRYABLE_ERROR, Outcome.PERMANENT_ERROR,
                                  Outcome.WAITING])
def test_an_unrecorded_answer_to_an_earlier_attempt_is_ignored(late: Outcome) -> None:
    """After a retry, a late error from the first attempt says nothing about the second."""
    s = Script()
    first = s.message_id("create_order")
    s.tick_to_wakeup()  # attempt 1 times out
    s.tick_to_wakeup()  # attempt 2 is sent
    s.expect_op("create_order", OpStatus.WAITING, attempt=2)
    s.reply("create_order", late, message_id=first)
    s.expect_ignored()
    s.expect_op("create_order", OpStatus.WAITING, attempt=2)


@pytest.mark.parametrize("retried", [False, True])
def test_a_success_read_after_its_attempt_timed_out_settles_the_step(retried: bool) -> None:
    """Participants repeat a step's recorded answer to every attempt, so the first
    attempt's success is the step's answer even when it is read after that attempt timed
    out: in its backoff, or while the next attempt waits."""
    s = Script()
    first = s.message_id("create_order")
    s.tick_to_wakeup()  # attempt 1 times out: backoff
    if retried:
        s.tick_to_wakeup()  # attempt 2 is sent
    s.reply("create_order", Outcome.SUCCEEDED, message_id=first)
    s.expect_op("create_order", OpStatus.SUCCEEDED)
    s.expect_sent("reserve_stock", "hold_funds")


def test_a_late_rejection_of_an_earlier_attempt_fails_the_saga() -> None:
    """A business "no" is recorded with the fence like a success: any attempt's copy of
    it is the step's answer."""
    s = Script()
    first = s.message_id("create_order")
    s.tick_to_wakeup()
    s.tick_to_wakeup()
    s.reply("create_order", Outcome.REJECTED, OrderReason.ORDER_REFUSED, message_id=first)
    s.expect_op("create_order", OpStatus.FAILED)
    s.expect_status(SagaStatus.COMPENSATING)


def test_second_reply_for_the_same_command_is_ignored() -> None:
    """A redelivered reply is stale: its command was already answered."""
    s = Script()
    s.succeed("create_order")
    before = s.state
    s.reject("create_order")
    s.expect_ignored()
    assert s.state is before


def test_reply_to_a_finished_saga_is_ignored() -> None:
    """Nothing reopens a finished saga."""
    s = committed()
    s.succeed(*CONFIRMS, "approve_order", "notify_customer")
    s.expect_status(SagaStatus.COMPLETED)
    s.reply("notify_customer", Outcome.PERMANENT_ERROR)
    s.expect_ignored()
    s.expect_status(SagaStatus.COMPLETED)


def test_reply_to_an_unknown_command_is_ignored() -> None:
    """A reply naming a command this saga never sent is stale."""
    s = Script()
    s.send(ReplyReceived("order:o-1:ghost:forward:1", Outcome.SUCCEEDED, 1.0))
    s.expect_ignored()


# --- compensations and confirmations that fail -------------------------------------------------


def test_compensation_failing_permanently_needs_attention_while_others_still_run() -> None:
    """An undo that can never succeed is flagged, and every other undo still runs."""
    s = Script()
    s.succeed("create_order", "reserve_stock", "hold_funds")
    s.reject("schedule_shipment", OrderReason.SHIPPING_UNAVAILABLE)
    s.expect_sent("reserve_stock:compensate", "hold_funds:compensate")
    s.permanent_error("reserve_stock:compensate")
    s.expect_note(NoteKind.ATTENTION)
    s.expect_sent()
    s.succeed("hold_funds:compensate")
    s.expect_sent("create_order:compensate")
    s.succeed("create_order:compensate")
    s.expect_sent("notify_rejection")
    s.succeed("notify_rejection")
    s.expect_status(SagaStatus.NEEDS_ATTENTION)
    s.expect_outcome(ORDER_FAILED, PlatformReason.COMPENSATION_FAILED, needs_attention=True)
    outcome = s.last.outcome
    assert outcome is not None
    assert "SHIPPING_UNAVAILABLE" in getattr(outcome.payload, "reason", "")


def test_compensation_out_of_settle_attempts_needs_attention() -> None:
    """An undo that keeps failing transiently gives up after its settle attempts."""
    s = Script(order_saga(Tuning(settle_attempts=2)))
    s.succeed("create_order")
    s.reject("reserve_stock", OrderReason.INSUFFICIENT_STOCK)
    s.expect_sent("hold_funds:compensate")
    s.retryable_error("hold_funds:compensate")
    s.tick_to_wakeup()
    s.expect_sent("hold_funds:compensate")
    s.retryable_error("hold_funds:compensate")
    s.expect_op("hold_funds:compensate", OpStatus.FAILED, attempt=2)
    s.expect_sent("create_order:compensate")
    s.succeed("create_order:compensate", "notify_rejection")
    s.expect_outcome(ORDER_FAILED, PlatformReason.COMPENSATION_FAILED, needs_attention=True)


def test_confirm_failing_permanently_needs_attention() -> None:
    """A confirm that can never succeed stops the saga for an operator, with no undo."""
    s = committed()
    s.permanent_error("reserve_stock:confirm")
    s.expect_sent()
    s.expect_status(SagaStatus.COMMITTED)
    s.succeed("hold_funds:confirm", "schedule_shipment:confirm")
    s.expect_status(SagaStatus.NEEDS_ATTENTION)
    s.expect_outcome(ORDER_FAILED, PlatformReason.CONFIRMATION_FAILED, needs_attention=True)
    assert not any(m.step == "approve_order" for m in s.sent)
    assert s.compensated() == []


# --- cancellation -------------------------------------------------------------------------------


def test_cancel_before_the_commit_point_compensates() -> None:
    """A cancelled saga abandons what is in flight and undoes everything it sent."""
    s = Script()
    s.succeed("create_order")
    s.cancel("customer changed their mind")
    s.expect_sent("reserve_stock:compensate", "hold_funds:compensate")
    s.succeed("reserve_stock:compensate", "hold_funds:compensate")
    (reject,) = s.expect_sent("create_order:compensate")
    assert reject.payload.failure is not None
    assert reject.payload.failure.reason == "customer changed their mind"
    s.succeed("create_order:compensate", "notify_rejection")
    s.expect_outcome(ORDER_FAILED, PlatformReason.CANCELLED)


def test_cancel_after_the_commit_point_is_ignored() -> None:
    """Past the commit point a cancel is noted and the saga carries on to completion."""
    s = committed()
    s.cancel()
    s.expect_note(NoteKind.CANCEL_IGNORED)
    s.expect_sent()
    assert not s.last.changed
    s.succeed(*CONFIRMS, "approve_order", "notify_customer")
    s.expect_outcome(ORDER_COMPLETED)


def test_cancel_while_compensating_is_ignored() -> None:
    """A second reason to stop does not restart an undo already under way."""
    s = fail_hold_funds()
    s.cancel()
    s.expect_note(NoteKind.CANCEL_IGNORED)
    assert not s.last.changed
    s.succeed("reserve_stock:compensate", "create_order:compensate", "notify_rejection")
    s.expect_outcome(ORDER_FAILED, OrderReason.PAYMENT_DECLINED)


# --- timers ---------------------------------------------------------------------------------


def test_next_wakeup_is_the_earliest_due_timer() -> None:
    """The wake-up time is the earliest reply timeout, retry or (while running) deadline."""
    s = Script(order_saga(Tuning(step_timeout=10.0, deadline=30.0)))
    assert s.state.next_wakeup == 10.0
    s.tick(2.0)
    s.succeed("create_order")
    assert s.state.next_wakeup == 12.0
    s.tick(3.0)
    s.retryable_error("reserve_stock")
    retry_at = s.state.op("reserve_stock", Operation.FORWARD).due_at
    assert retry_at is not None
    assert 3.0 < retry_at < 12.0
    assert s.state.next_wakeup == retry_at
    s.succeed("hold_funds")
    s.tick(retry_at)
    s.succeed("reserve_stock")
    assert s.state.next_wakeup == retry_at + 10.0  # schedule_shipment's reply timeout


def test_next_wakeup_is_the_deadline_when_it_comes_first() -> None:
    """A deadline earlier than every reply timeout is the next wake-up while running."""
    s = Script(order_saga(Tuning(step_timeout=10.0, deadline=4.0)))
    assert s.state.next_wakeup == 4.0


def test_next_wakeup_is_none_once_finished() -> None:
    """A finished saga needs no timer."""
    s = fail_hold_funds()
    s.succeed("reserve_stock:compensate", "create_order:compensate", "notify_rejection")
    assert s.state.finished
    assert s.state.next_wakeup is None


# --- retry policy ---------------------------------------------------------------------------


def test_retry_delay_is_deterministic() -> None:
    """The same message always gets the same delay, so the engine stays pure."""
    policy = RetryPolicy()
    assert policy.delay(2, "o-1:x:forward:2") == RetryPolicy().delay(2, "o-1:x:forward:2")


def test_retry_delay_grows_and_is_capped() -> None:
    """Without jitter the delay doubles per attempt up to its cap."""
    policy = RetryPolicy(backoff=0.5, backoff_max=3.0, jitter=0.0)
    assert [policy.delay(n, "k") for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("key", ["a", "o-1:create_order:forward:1", "o-9:hold_funds:confirm:7"])
def test_retry_delay_with_jitter_stays_within_its_bounds(key: str) -> None:
    """Jitter only shortens a delay, never below half of it, and never past the cap."""
    policy = RetryPolicy(backoff=0.2, backoff_max=10.0, jitter=0.5)
    delays = [policy.delay(n, key) for n in range(1, 40)]
    assert delays == sorted(delays)
    for n, d in enumerate(delays, start=1):
        base = min(10.0, 0.2 * 2 ** (n - 1))
        assert base / 2 <= d <= base


def test_retry_delay_is_capped_for_very_many_attempts() -> None:
    """A settle policy with a huge attempt budget keeps backing off at its cap."""
    assert RetryPolicy().delay(1100, "k") <= RetryPolicy().backoff_max


# --- the shipment: tentative until the commit point (version 2), at once (version 1) --------


def test_version_2_confirms_the_tentative_shipment_at_the_commit_point() -> None:
    s = committed()
    (confirm,) = [c for c in s.last.commands if c.step == "schedule_shipment"]
    assert confirm.type == "shipping.book.confirm"
    s.succeed(*CONFIRMS)
    s.expect_sent("approve_order")


def test_version_2_cancels_the_tentative_shipment_when_a_later_step_fails() -> None:
    s = Script(order_saga(Tuning()))
    s.succeed("create_order", "reserve_stock", "hold_funds")
    s.expect_sent("schedule_shipment")
    s.cancel()
    undo = [c for c in s.last.commands if c.step == "schedule_shipment"]
    assert [c.type for c in undo] == ["shipping.book.cancel"]


def test_a_version_1_saga_keeps_booking_the_shipment_at_once() -> None:
    """Sagas started under version 1 finish under it: no shipment confirm, and the undo of
    a failed saga is shipping.schedule.undo."""
    s = Script(order_saga_v1(Tuning()))
    assert s.state.definition_version == 1
    s.succeed("create_order", "reserve_stock", "hold_funds")
    (schedule,) = s.expect_sent("schedule_shipment")
    assert schedule.type == "shipping.schedule"
    s.succeed("schedule_shipment")
    s.expect_sent("reserve_stock:confirm", "hold_funds:confirm")

    v1_undo = Script(order_saga_v1(Tuning()), saga_id="order:o-3")
    v1_undo.succeed("create_order", "reserve_stock", "hold_funds")
    v1_undo.cancel()
    assert [c.type for c in v1_undo.last.commands if c.step == "schedule_shipment"] == [
        "shipping.schedule.undo"]


# --- the heard clock ---------------------------------------------------------------------------


def test_timers_are_due_by_the_heard_time_not_the_wall_clock() -> None:
    """A step whose reply may still wait unread in the orchestrator's queue does not time
    out, nor does the saga's deadline pass, until the orchestrator has heard that far."""
    s = Script()
    due = s.state.op("create_order", Operation.FORWARD).due_at
    assert due is not None
    s.send(TimerFired(s.state.deadline_at + 100.0, heard_until=due - 1.0))
    s.expect_op("create_order", OpStatus.WAITING, attempt=1)
    s.expect_status(SagaStatus.RUNNING)
    s.send(TimerFired(s.state.deadline_at + 100.0, heard_until=due))
    s.expect_op("create_order", OpStatus.BACKOFF, attempt=1)
    s.expect_status(SagaStatus.RUNNING)
    s.send(TimerFired(s.state.deadline_at + 200.0, heard_until=s.state.deadline_at))
    s.expect_status(SagaStatus.COMPENSATING)
