"""Order: the order record and its status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from contracts.order_steps import ApproveOrder, CreateOrder
from contracts.orders import OrderItem, OrderReason, to_cents
from contracts.reasons import PlatformReason
from workers.sdk import Action, Impossible, Participant, StepContext
from workers.store import Change, Doc, Tx


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


async def _decide(tx: Tx, order_id: str, change: Mapping[str, object]) -> None:
    """A PENDING order moves on, in one write; any other is an error."""
    if await tx.modify(OrderRecord, order_id, Change(when={"status": "PENDING"},
                                                     assign=change)) is None:
        raise Impossible(f"order {order_id} is not PENDING")


async def reject(tx: Tx, cmd: CreateOrder, step: StepContext) -> str:
    """The undo of create: REJECTED, with the saga's reason."""
    code = step.failure.reason_code if step.failure else PlatformReason.SERVICE_ERROR
    reason = step.failure.reason if step.failure else "rejected"
    await _decide(tx, cmd.order_id, {"status": "REJECTED", "reason_code": code,
                                     "reason": reason, "updated_at": step.now})
    return f"order REJECTED ({code})"


async def approve(tx: Tx, cmd: ApproveOrder, step: StepContext) -> str:
    """After the commit point: APPROVED."""
    await _decide(tx, cmd.order_id, {"status": "APPROVED", "updated_at": step.now})
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
