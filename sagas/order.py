"""The order saga, version 2.

    create_order ─► reserve_stock ┐ ─► schedule_shipment ─► COMMIT ─► approve_order ─► notify
                    hold_funds    ┘                         (confirm stock, funds, shipment)

Shipping is booked before the commit point, so every step that can say "no" does so
while everything can still be undone: no order is ever charged and then rejected.
On failure: cancel the shipment, release stock and funds in parallel, reject the
order with the reason, then tell the customer.

Version 2 books the shipment in two phases: it stays tentative (``TENTATIVE``, invisible to
whoever reads scheduled shipments) until the saga passes its commit point, and is confirmed
with the stock and the funds. Version 1 booked it at once (``SCHEDULED`` before the commit
point, so a reader could see a booking that was later cancelled); sagas started under
version 1 finish under it (docs/isolation.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from contracts.envelope import Model
from contracts.notices import Notify
from contracts.order_steps import (
    ApproveOrder,
    CreateOrder,
    HoldFunds,
    ReserveStock,
    ScheduleShipment,
    StockLine,
)
from contracts.orders import (
    CustomerId,
    OrderCompleted,
    OrderFailed,
    OrderId,
    OrderItem,
    OrderReason,
    OrderRequested,
    order_total,
)
from contracts.registry import ORDER_COMPLETED, ORDER_FAILED, ORDER_REQUESTED
from engine.definition import (
    DEFAULT_TUNING,
    CommandContext,
    Failure,
    OutcomeContext,
    OutcomeEvent,
    ParamsBuilder,
    SagaDefinition,
    Tuning,
    action,
    notice,
    two_phase,
)
from orchestrator.start import InvalidRequest, StartMessage, is_key

if TYPE_CHECKING:
    from orchestrator.registry import Setup

NAME = "order"
MAX_ORDER_TOTAL = 1_000_000_000
# The notification kinds the order saga sends, one per order at most.
APPROVED_NOTICE = "approved"
REJECTED_NOTICE = "rejected"


class OrderSagaData(Model):
    """What the order saga knows about its order."""

    order_id: OrderId
    customer_id: CustomerId
    items: tuple[OrderItem, ...]
    total: Decimal


Ctx = CommandContext[OrderSagaData]


def _lines(d: OrderSagaData) -> tuple[StockLine, ...]:
    return tuple(StockLine(sku=i.sku, quantity=i.quantity) for i in d.items)


def _create(x: Ctx) -> Model:
    d = x.data
    return CreateOrder(order_id=d.order_id, customer_id=d.customer_id, items=d.items,
                       total=d.total)


def _approve(x: Ctx) -> Model:
    return ApproveOrder(order_id=x.data.order_id)


def _reserve(x: Ctx) -> Model:
    return ReserveStock(order_id=x.data.order_id, lines=_lines(x.data))


def _hold(x: Ctx) -> Model:
    return HoldFunds(order_id=x.data.order_id, customer_id=x.data.customer_id,
                     amount=x.data.total)


def _schedule(x: Ctx) -> Model:
    return ScheduleShipment(order_id=x.data.order_id, customer_id=x.data.customer_id,
                            lines=_lines(x.data))


def _notify(kind: str) -> ParamsBuilder[OrderSagaData]:
    def build(x: Ctx) -> Model:
        d = x.data
        text = (f"Order {d.order_id} is confirmed: {d.total}." if x.failure is None
                else f"Order {d.order_id} was not placed: {x.failure.reason}")
        return Notify(reference=d.order_id, recipient=d.customer_id, kind=kind, text=text[:500])
    return build


def _outcome(x: OutcomeContext[OrderSagaData]) -> OutcomeEvent:
    d = x.data
    if x.failure is None:
        return OutcomeEvent(ORDER_COMPLETED, OrderCompleted(
            order_id=d.order_id, customer_id=d.customer_id, total=d.total))
    return OutcomeEvent(ORDER_FAILED, OrderFailed(
        order_id=d.order_id, customer_id=d.customer_id, reason_code=x.failure.reason_code,
        reason=x.failure.reason[:500], needs_attention=x.needs_attention))


def _data(request: OrderRequested, key: str) -> OrderSagaData:
    total = order_total(request.items)
    if total > MAX_ORDER_TOTAL:
        raise InvalidRequest(f"order total {total} exceeds {MAX_ORDER_TOTAL}")
    return OrderSagaData(order_id=key, customer_id=request.customer_id, items=request.items,
                         total=total)


def _refusal(key: str, fields: Mapping[str, Any], failure: Failure) -> OutcomeEvent:
    customer = fields.get("customer_id")
    readable = isinstance(customer, str) and is_key(customer)
    return OutcomeEvent(ORDER_FAILED, OrderFailed(
        order_id=key, customer_id=customer if readable else None,
        reason_code=failure.reason_code, reason=failure.reason[:500]))


START: StartMessage[OrderSagaData] = StartMessage(
    exchange="orders", requested=ORDER_REQUESTED, model=OrderRequested, key_field="order_id",
    data=_data, completed=ORDER_COMPLETED, failed=ORDER_FAILED, refusal=_refusal,
    completed_model=OrderCompleted, failed_model=OrderFailed,
    duplicate_reason=OrderReason.DUPLICATE_ORDER_ID)


def order_saga(tuning: Tuning = DEFAULT_TUNING) -> SagaDefinition[OrderSagaData]:
    """The order saga as new orders run it: version 2, the shipment tentative until the
    commit point."""
    return _order_saga(tuning, 2)


def order_saga_v1(tuning: Tuning = DEFAULT_TUNING) -> SagaDefinition[OrderSagaData]:
    """Version 1, kept for the sagas started under it: the shipment booked at once."""
    return _order_saga(tuning, 1)


def _order_saga(tuning: Tuning, version: int) -> SagaDefinition[OrderSagaData]:
    policy, settle = tuning.policies()
    shipment = (two_phase("schedule_shipment", "shipping", "book", _schedule, policy=policy,
                          settle_policy=settle) if version >= 2 else
                action("schedule_shipment", "shipping", "schedule", _schedule, policy=policy,
                       settle_policy=settle))
    return SagaDefinition(
        name=NAME,
        version=version,
        description="An e-commerce order: stock and money held in two phases, a shipment "
                    "booked, then everything confirmed.",
        data_model=OrderSagaData,
        deadline=tuning.deadline,
        start=START,
        reasons=tuple(OrderReason),
        before_commit=(
            (action("create_order", "order", "create", _create, policy=policy,
                    settle_policy=settle),),
            (two_phase("reserve_stock", "inventory", "reserve", _reserve, policy=policy,
                       settle_policy=settle),
             two_phase("hold_funds", "payment", "hold", _hold, policy=policy,
                       settle_policy=settle)),
            (shipment,),
        ),
        after_commit=(
            (notice("approve_order", "order", "approve", _approve, policy=settle),),
            (notice("notify_customer", "notification", "send", _notify(APPROVED_NOTICE),
                    policy=settle),),
        ),
        on_failure=(
            (notice("notify_rejection", "notification", "send", _notify(REJECTED_NOTICE),
                    policy=settle),),
        ),
        outcome=_outcome,
    )


def definitions(setup: Setup) -> list[SagaDefinition[OrderSagaData]]:
    """Every registered version of the order saga (the registration entry point)."""
    return [order_saga_v1(setup.tuning), order_saga(setup.tuning)]
