"""Shipping: book and cancel shipments. ``python -m workers.shipping``."""

from __future__ import annotations

from typing import Literal

from contracts.commands import CancelShipment, Operation, ScheduleShipment, StockLine
from contracts.orders import ReasonCode
from workers.runtime import CommandHandler, Impossible, ServiceSpec
from workers.store import Doc, Tx


class Shipment(Doc):
    """A shipment booked for one order; ``id`` is the order id."""

    collection = "shipments"
    customer_id: str
    lines: tuple[StockLine, ...]
    status: Literal["SCHEDULED", "CANCELLED"]
    updated_at: float


async def schedule(tx: Tx, cmd: ScheduleShipment, now: float) -> str:
    """Book a shipment."""
    await tx.insert(Shipment(id=cmd.order_id, customer_id=cmd.customer_id, lines=cmd.lines,
                             status="SCHEDULED", updated_at=now))
    return "shipment SCHEDULED"


async def cancel(tx: Tx, cmd: CancelShipment, now: float) -> str:
    """Compensation: cancel the booking."""
    shipment = await tx.get(Shipment, cmd.order_id)
    if shipment is None or shipment.status != "SCHEDULED":
        raise Impossible(f"no scheduled shipment for order {cmd.order_id}")
    await tx.update(shipment.model_copy(update={"status": "CANCELLED", "updated_at": now}))
    return "shipment CANCELLED"


SPEC = ServiceSpec(
    name="shipping",
    handlers=(
        CommandHandler("shipping.schedule", ScheduleShipment, Operation.FORWARD, schedule,
                       rejectable=True),
        CommandHandler("shipping.cancel", CancelShipment, Operation.COMPENSATE, cancel),
    ),
    rejection=ReasonCode.SHIPPING_UNAVAILABLE,
    documents=(Shipment,),
)

if __name__ == "__main__":
    from workers.app import main

    main("shipping")
