"""Shipping: book and cancel shipments."""

from __future__ import annotations

from typing import Literal

from contracts.order_steps import ScheduleShipment, StockLine
from contracts.orders import OrderReason
from workers.sdk import Action, Impossible, Participant, StepContext
from workers.store import Doc, Tx


class Shipment(Doc):
    """A shipment booked for one order; ``id`` is the order id."""

    collection = "shipments"
    customer_id: str
    lines: tuple[StockLine, ...]
    status: Literal["SCHEDULED", "CANCELLED"]
    updated_at: float


async def schedule(tx: Tx, cmd: ScheduleShipment, step: StepContext) -> str:
    """Book a shipment."""
    await tx.insert(Shipment(id=cmd.order_id, customer_id=cmd.customer_id, lines=cmd.lines,
                             status="SCHEDULED", updated_at=step.now))
    return "shipment SCHEDULED"


async def cancel(tx: Tx, cmd: ScheduleShipment, step: StepContext) -> str:
    """The undo of schedule: cancel the booking."""
    shipment = await tx.get(Shipment, cmd.order_id)
    if shipment is None or shipment.status != "SCHEDULED":
        raise Impossible(f"no scheduled shipment for order {cmd.order_id}")
    await tx.update(shipment.model_copy(update={"status": "CANCELLED", "updated_at": step.now}))
    return "shipment CANCELLED"


SERVICE = Participant(
    metrics_port=9404,
    name="shipping",
    description="Shipments, booked and cancelled.",
    operations=(Action("schedule", ScheduleShipment, run=schedule, undo=cancel,
                       rejectable=True),),
    documents=(Shipment,),
    rejection=OrderReason.SHIPPING_UNAVAILABLE,
    reasons=(OrderReason.SHIPPING_UNAVAILABLE,),
)
