"""Order: the order record and its status. ``python -m workers.order``."""

from __future__ import annotations

from typing import Literal

from contracts.commands import ApproveOrder, CreateOrder, Operation, RejectOrder
from contracts.orders import OrderItem, ReasonCode, to_cents
from workers.runtime import CommandHandler, Impossible, ServiceSpec
from workers.store import Doc, Tx


class OrderRecord(Doc):
    """An order as the order service knows it; ``id`` is the order id."""

    collection = "orders"
    customer_id: str
    items: tuple[OrderItem, ...]
    total: int
    status: Literal["PENDING", "APPROVED", "REJECTED"]
    reason_code: ReasonCode | None = None
    reason: str = ""
    created_at: float
    updated_at: float


async def create(tx: Tx, cmd: CreateOrder, now: float) -> str:
    """Record the order as PENDING."""
    await tx.insert(OrderRecord(id=cmd.order_id, customer_id=cmd.customer_id, items=cmd.items,
                                total=to_cents(cmd.total), status="PENDING", created_at=now,
                                updated_at=now))
    return "order PENDING"


async def _pending(tx: Tx, order_id: str) -> OrderRecord:
    order = await tx.get(OrderRecord, order_id)
    if order is None or order.status != "PENDING":
        raise Impossible(f"order {order_id} is not PENDING")
    return order


async def reject(tx: Tx, cmd: RejectOrder, now: float) -> str:
    """Compensation of create: REJECTED, with the saga's reason."""
    order = await _pending(tx, cmd.order_id)
    await tx.update(order.model_copy(update={"status": "REJECTED", "reason_code": cmd.reason_code,
                                             "reason": cmd.reason, "updated_at": now}))
    return f"order REJECTED ({cmd.reason_code})"


async def approve(tx: Tx, cmd: ApproveOrder, now: float) -> str:
    """After the commit point: APPROVED."""
    order = await _pending(tx, cmd.order_id)
    await tx.update(order.model_copy(update={"status": "APPROVED", "updated_at": now}))
    return "order APPROVED"


SPEC = ServiceSpec(
    name="order",
    handlers=(
        CommandHandler("order.create", CreateOrder, Operation.FORWARD, create, rejectable=True),
        CommandHandler("order.reject", RejectOrder, Operation.COMPENSATE, reject),
        CommandHandler("order.approve", ApproveOrder, Operation.FORWARD, approve),
    ),
    rejection=ReasonCode.ORDER_REFUSED,
    documents=(OrderRecord,),
)

if __name__ == "__main__":
    from workers.app import main

    main("order")
