"""The order saga, version 1.

    create_order ─► reserve_stock ┐ ─► schedule_shipment ─► COMMIT ─► approve_order ─► notify
                    hold_funds    ┘                         (confirm stock, capture funds)

Shipping is booked before the commit point, so every step that can say "no" does so
while everything can still be undone: no order is ever charged and then rejected.
On failure: cancel the shipment, release stock and funds in parallel, reject the
order with the reason, then tell the customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from contracts import commands as c
from contracts.envelope import Model
from contracts.orders import CustomerId, OrderCompleted, OrderFailed, OrderId, OrderItem, ReasonCode
from contracts.registry import ORDER_COMPLETED, ORDER_FAILED
from orchestrator.definition import (
    CommandContext,
    CommandSpec,
    OutcomeContext,
    OutcomeEvent,
    RetryPolicy,
    SagaDefinition,
    Step,
    two_phase,
)

NAME = "order"


class OrderSagaData(Model):
    """What the order saga knows about its order."""

    order_id: OrderId
    customer_id: CustomerId
    items: tuple[OrderItem, ...]
    total: Decimal


@dataclass(frozen=True, slots=True)
class OrderSagaTuning:
    """Operational knobs: they change how long the saga waits, never what it does."""

    step_timeout: float = 10.0
    max_attempts: int = 3
    backoff: float = 0.2
    settle_attempts: int = 30
    settle_backoff_max: float = 30.0
    deadline: float = 120.0


Ctx = CommandContext[OrderSagaData]


def _lines(d: OrderSagaData) -> tuple[c.StockLine, ...]:
    return tuple(c.StockLine(sku=i.sku, quantity=i.quantity) for i in d.items)


def _create(x: Ctx) -> c.SagaCommand:
    d = x.data
    return c.CreateOrder(saga_id=x.saga_id, step=x.step, order_id=d.order_id,
                         customer_id=d.customer_id, items=d.items, total=d.total)


def _reject(x: Ctx) -> c.SagaCommand:
    failure = x.failure
    code = failure.reason_code if failure else ReasonCode.SERVICE_ERROR
    reason = failure.reason if failure else "rejected"
    return c.RejectOrder(saga_id=x.saga_id, step=x.step, order_id=x.data.order_id,
                         reason_code=code, reason=reason[:500])


def _approve(x: Ctx) -> c.SagaCommand:
    return c.ApproveOrder(saga_id=x.saga_id, step=x.step, order_id=x.data.order_id)


def _reserve(x: Ctx) -> c.SagaCommand:
    return c.ReserveStock(saga_id=x.saga_id, step=x.step, order_id=x.data.order_id,
                          lines=_lines(x.data))


def _hold(x: Ctx) -> c.SagaCommand:
    return c.HoldFunds(saga_id=x.saga_id, step=x.step, order_id=x.data.order_id,
                       customer_id=x.data.customer_id, amount=x.data.total)


def _schedule(x: Ctx) -> c.SagaCommand:
    return c.ScheduleShipment(saga_id=x.saga_id, step=x.step, order_id=x.data.order_id,
                              customer_id=x.data.customer_id, lines=_lines(x.data))


def _by_order(model: type[c.CommitStock | c.ReleaseStock | c.CaptureFunds | c.ReleaseFunds
                           | c.CancelShipment]) -> CommandSpec[OrderSagaData]:
    """Commands that need nothing but the order id."""
    kind = {c.CommitStock: "inventory.confirm", c.ReleaseStock: "inventory.cancel",
            c.CaptureFunds: "payment.confirm", c.ReleaseFunds: "payment.cancel",
            c.CancelShipment: "shipping.cancel"}[model]
    return CommandSpec(kind, lambda x: model(saga_id=x.saga_id, step=x.step,
                                             order_id=x.data.order_id))


def _notify(kind: c.NotificationKind) -> CommandSpec[OrderSagaData]:
    def build(x: Ctx) -> c.SagaCommand:
        d = x.data
        text = (f"Order {d.order_id} is confirmed: {d.total}." if x.failure is None
                else f"Order {d.order_id} was not placed: {x.failure.reason}")
        return c.NotifyCustomer(saga_id=x.saga_id, step=x.step, order_id=d.order_id,
                                customer_id=d.customer_id, kind=kind, text=text[:500])
    return CommandSpec("notification.send", build)


def _outcome(x: OutcomeContext[OrderSagaData]) -> OutcomeEvent:
    d = x.data
    if x.failure is None:
        return OutcomeEvent(ORDER_COMPLETED, OrderCompleted(
            order_id=d.order_id, customer_id=d.customer_id, total=d.total))
    return OutcomeEvent(ORDER_FAILED, OrderFailed(
        order_id=d.order_id, customer_id=d.customer_id, reason_code=x.failure.reason_code,
        reason=x.failure.reason[:500], needs_attention=x.needs_attention))


def order_saga(tuning: OrderSagaTuning = OrderSagaTuning()) -> SagaDefinition[OrderSagaData]:
    """Version 1 of the order saga."""
    policy = RetryPolicy(timeout=tuning.step_timeout, max_attempts=tuning.max_attempts,
                         backoff=tuning.backoff, backoff_max=tuning.step_timeout)
    settle = RetryPolicy(timeout=tuning.step_timeout, max_attempts=tuning.settle_attempts,
                         backoff=tuning.backoff, backoff_max=tuning.settle_backoff_max,
                         timeout_growth=2.0, timeout_max=8 * tuning.step_timeout)

    def step(name: str, service: str, forward: CommandSpec[OrderSagaData],
             compensate: CommandSpec[OrderSagaData] | None = None) -> Step[OrderSagaData]:
        return Step(name, service, forward, compensate, policy=policy, settle_policy=settle)

    return SagaDefinition(
        name=NAME,
        version=1,
        data_model=OrderSagaData,
        deadline=tuning.deadline,
        before_commit=(
            (step("create_order", "order", CommandSpec("order.create", _create),
                  CommandSpec("order.reject", _reject)),),
            (two_phase("reserve_stock", "inventory",
                       prepare=CommandSpec("inventory.prepare", _reserve),
                       confirm=_by_order(c.CommitStock), cancel=_by_order(c.ReleaseStock),
                       policy=policy, settle_policy=settle),
             two_phase("hold_funds", "payment",
                       prepare=CommandSpec("payment.prepare", _hold),
                       confirm=_by_order(c.CaptureFunds), cancel=_by_order(c.ReleaseFunds),
                       policy=policy, settle_policy=settle)),
            (step("schedule_shipment", "shipping", CommandSpec("shipping.schedule", _schedule),
                  _by_order(c.CancelShipment)),),
        ),
        after_commit=(
            (step("approve_order", "order", CommandSpec("order.approve", _approve)),),
            (step("notify_customer", "notification", _notify(c.NotificationKind.APPROVED)),),
        ),
        on_failure=(
            (step("notify_rejection", "notification", _notify(c.NotificationKind.REJECTED)),),
        ),
        outcome=_outcome,
    )
