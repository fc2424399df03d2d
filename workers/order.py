"""Order: the order record and its status."""

from __future__ import annotations

from typing import Literal

from contracts.order_steps import ApproveOrder, CreateOrder
from contracts.orders import OrderItem, OrderReason, to_cents
from contracts.reasons import PlatformReason
from workers.sdk import Action, Impossible, Participant, StepContext
from workers.store import Doc, Tx


class OrderRecord(Doc):
    """An order as the order service knows it; ``id`` is the order id."""

    collection = "orders"
    customer_id: str
    items: tuple[OrderItem, ...]
    total: int
    status: Literal["PENDING", "APPROVED", "REJECTED"]
    reason_code: str | None = None
    reason: str = ""
    created_at: float
    updated_at: float


async def create(tx: Tx, cmd: CreateOrder, step: StepContext) -> str:
    """Record the order as PENDING."""
    await tx.insert(OrderRecord(id=cmd.order_id, customer_id=cmd.customer_id, items=cmd.items,
                                total=to_cents(cmd.total), status="PENDING", created_at=step.now,
                                updated_at=step.now))
    return "order PENDING"


async def _pending(tx: Tx, order_id: str) -> OrderRecord:
    order = await tx.get(OrderRecord, order_id)
    if order is None or order.status != "PENDING":
        raise Impossible(f"order {order_id} is not PENDING")
    return order


async def reject(tx: Tx, cmd: CreateOrder, step: StepContext) -> str:
    """The undo of create: REJECTED, with the saga's reason."""
    order = await _pending(tx, cmd.order_id)
    code = step.failure.reason_code if step.failure else PlatformReason.SERVICE_ERROR
    reason = step.failure.reason if step.failure else "rejected"
    await tx.update(order.model_copy(update={"status": "REJECTED", "reason_code": code,
                                             "reason": reason, "updated_at": step.now}))
    return f"order REJECTED ({code})"


async def approve(tx: Tx, cmd: ApproveOrder, step: StepContext) -> str:
    """After the commit point: APPROVED."""
    order = await _pending(tx, cmd.order_id)
    await tx.update(order.model_copy(update={"status": "APPROVED", "updated_at": step.now}))
    return "order APPROVED"


SERVICE = Participant(
    metrics_port=9401,
    name="order",
    description="Order records: PENDING, then APPROVED or REJECTED.",
    operations=(
        Action("create", CreateOrder, run=create, undo=reject, rejectable=True),
        Action("approve", ApproveOrder, run=approve),
    ),
    documents=(OrderRecord,),
    rejection=OrderReason.ORDER_REFUSED,
    reasons=(OrderReason.ORDER_REFUSED,),
)
