"""Operator actions on the pure engine: retry and resolve a saga that needs attention,
cancel one that runs, and refusals that name the state."""

from __future__ import annotations

import pytest

from contracts.admin import Action
from contracts.orders import OrderReason
from contracts.reasons import PlatformReason
from contracts.registry import ORDER_COMPLETED, ORDER_FAILED
from engine.decide import NoteKind
from engine.definition import Tuning
from engine.state import MAX_HISTORY, OpStatus, SagaStatus
from sagas.order import order_saga
from tests.unit.scripts import Script
from tests.unit.test_engine import CONFIRMS, committed

ORDER_RESOLVED = "order.resolved"


def follow_up(s: Script) -> dict[str, object]:
    """The body of the ``order.resolved`` event the last decision published."""
    outcome = s.last.outcome
    assert outcome is not None
    assert outcome.type == ORDER_RESOLVED
    return outcome.payload.model_dump()


def stuck_confirm() -> Script:
    """A committed saga whose stock confirm failed for good: it needs attention."""
    s = committed()
    s.permanent_error("reserve_stock:confirm")
    s.succeed("hold_funds:confirm", "schedule_shipment:confirm")
    s.expect_status(SagaStatus.NEEDS_ATTENTION)
    return s


def stuck_undo() -> Script:
    """A saga refused by shipping whose stock undo failed for good."""
    s = Script()
    s.succeed("create_order", "reserve_stock", "hold_funds")
    s.reject("schedule_shipment", OrderReason.SHIPPING_UNAVAILABLE)
    s.permanent_error("reserve_stock:compensate")
    s.succeed("hold_funds:compensate", "create_order:compensate", "notify_rejection")
    s.expect_status(SagaStatus.NEEDS_ATTENTION)
    return s


def test_retry_runs_the_failed_confirm_again_and_completes_with_a_follow_up() -> None:
    s = stuck_confirm()
    s.operator(Action.RETRY, "stock service fixed", by="alice")
    (confirm,) = s.expect_sent("reserve_stock:confirm")
    assert confirm.message_id == "order:o-1:reserve_stock:confirm:2"  # never reused
    s.expect_status(SagaStatus.COMMITTED)
    assert s.state.attention is None
    s.succeed("reserve_stock:confirm")
    s.expect_sent("approve_order")
    s.succeed("approve_order", "notify_customer")
    s.expect_status(SagaStatus.COMPLETED)
    # The client heard "needs attention" once; the end is a follow-up, not a second outcome.
    assert follow_up(s) == {"order_id": "o-1", "status": "completed",
                                            "reason_code": None,
                                            "detail": "after an operator's retry"}
    retry = next(e for e in s.state.history if e.kind == "retry")
    assert (retry.by, retry.detail) == ("alice", "stock service fixed")


def test_retry_gives_a_fresh_attempt_budget() -> None:
    """The settle policy counts attempts since the retry, not since the saga began."""
    s = Script(order_saga(Tuning(settle_attempts=2)))
    s.succeed("create_order")
    s.reject("reserve_stock", OrderReason.INSUFFICIENT_STOCK)
    s.retryable_error("hold_funds:compensate")
    s.tick_to_wakeup()
    s.retryable_error("hold_funds:compensate")
    s.expect_op("hold_funds:compensate", OpStatus.FAILED, attempt=2)
    s.succeed("create_order:compensate", "notify_rejection")
    s.expect_status(SagaStatus.NEEDS_ATTENTION)
    s.operator(Action.RETRY)
    s.expect_sent("hold_funds:compensate")
    s.retryable_error("hold_funds:compensate")
    s.expect_op("hold_funds:compensate", OpStatus.BACKOFF, attempt=3)  # 1 of 2 since the retry
    s.tick_to_wakeup()
    s.succeed("hold_funds:compensate")
    s.expect_status(SagaStatus.FAILED)
    assert follow_up(s)["reason_code"] == OrderReason.INSUFFICIENT_STOCK


def test_retry_of_an_undo_runs_only_what_failed() -> None:
    """Undos that succeeded are not sent again; the on-failure notice is not repeated."""
    s = stuck_undo()
    s.operator(Action.RETRY)
    s.expect_sent("reserve_stock:compensate")
    s.expect_status(SagaStatus.COMPENSATING)
    s.succeed("reserve_stock:compensate")
    s.expect_sent()
    s.expect_status(SagaStatus.FAILED)
    assert follow_up(s)["reason_code"] == OrderReason.SHIPPING_UNAVAILABLE


def test_a_retry_that_fails_again_needs_attention_without_a_second_announcement() -> None:
    s = stuck_confirm()
    s.operator(Action.RETRY)
    s.permanent_error("reserve_stock:confirm")
    s.expect_status(SagaStatus.NEEDS_ATTENTION)
    s.expect_note(NoteKind.ATTENTION)  # counted again: the alert fires per incident
    assert s.last.outcome is None


def test_resolve_ends_the_saga_resolved_with_a_follow_up() -> None:
    s = stuck_undo()
    s.operator(Action.RESOLVE, "released 2 units of SKU-1 by hand", by="bob")
    s.expect_status(SagaStatus.RESOLVED)
    s.expect_sent()
    assert follow_up(s) == {
        "order_id": "o-1", "status": "resolved",
        "reason_code": OrderReason.SHIPPING_UNAVAILABLE,
        "detail": "released 2 units of SKU-1 by hand"}
    assert s.state.next_wakeup is None
    s.tick(1_000.0)
    assert not s.last.changed


@pytest.mark.parametrize("action", [Action.RETRY, Action.RESOLVE])
def test_retry_and_resolve_are_refused_unless_the_saga_needs_attention(action: Action) -> None:
    running = Script()
    running.operator(action)
    running.expect_note(NoteKind.ACTION_REFUSED)
    assert not running.last.changed
    assert "the saga is running" in running.last.notes[-1].detail
    done = committed()
    done.succeed(*CONFIRMS, "approve_order", "notify_customer")
    done.operator(action)
    assert "the saga is completed" in done.last.notes[-1].detail
    assert not done.last.changed


def test_resolve_twice_is_refused_the_second_time() -> None:
    s = stuck_confirm()
    s.operator(Action.RESOLVE)
    s.operator(Action.RESOLVE)
    s.expect_note(NoteKind.ACTION_REFUSED)
    assert "the saga is resolved" in s.last.notes[-1].detail


def test_operator_cancel_before_the_commit_point_is_recorded_with_its_operator() -> None:
    s = Script()
    s.succeed("create_order")
    s.operator(Action.CANCEL, "fraud suspected", by="carol")
    s.expect_status(SagaStatus.COMPENSATING)
    s.succeed("reserve_stock:compensate", "hold_funds:compensate", "create_order:compensate",
              "notify_rejection")
    s.expect_outcome(ORDER_FAILED, PlatformReason.CANCELLED)
    cancel = next(e for e in s.state.history if e.kind == "cancel")
    assert (cancel.by, cancel.detail) == ("carol", "fraud suspected")


def test_operator_cancel_after_the_commit_point_is_refused() -> None:
    s = committed()
    s.operator(Action.CANCEL)
    s.expect_note(NoteKind.ACTION_REFUSED)
    assert "the saga is committed" in s.last.notes[-1].detail
    s.succeed(*CONFIRMS, "approve_order", "notify_customer")
    s.expect_outcome(ORDER_COMPLETED)


def test_history_records_every_transition_in_order() -> None:
    s = Script()
    s.retryable_error("create_order")
    s.tick_to_wakeup()
    s.succeed("create_order")
    kinds = [(e.kind, e.step) for e in s.state.history]
    assert kinds[:6] == [("started", None), ("sent", "create_order"),
                         ("reply", "create_order"), ("retry", "create_order"),
                         ("sent", "create_order"), ("reply", "create_order")]
    assert s.state.history[2].detail.startswith("retryable_error")
    assert [e.at for e in s.state.history] == sorted(e.at for e in s.state.history)


def test_history_is_bounded_and_counts_what_it_dropped() -> None:
    s = Script(order_saga(Tuning(max_attempts=10_000, step_timeout=1.0)))
    for _ in range(MAX_HISTORY):
        s.tick_to_wakeup()
    assert len(s.state.history) == MAX_HISTORY
    assert s.state.history_dropped > 0
    assert s.state.history[-1].kind in {"sent", "retry", "timed_out"}
