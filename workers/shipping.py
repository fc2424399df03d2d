"""Shipping: book and cancel shipments.

``book`` is two-phase (the order saga, version 2): a booking is ``TENTATIVE`` until the
saga passes its commit point and confirms it (``SCHEDULED``), or cancels it
(``CANCELLED``); whoever reads scheduled shipments never sees one that may still be undone.
``schedule`` books at once, with an undo: the order saga's version 1, kept for the sagas
started under it.
"""

from __future__ import annotations

from typing import Literal

from contracts.order_steps import ScheduleShipment, StockLine
from contracts.orders import OrderReason
from workers.sdk import Action, Impossible, Participant, StepContext, TwoPhase
from workers.store import Change, Doc, Tx


class Shipment(Doc):
    """A shipment booked for one order; ``id`` is the order id."""

    collection = "shipments"
    customer_id: str
    lines: tuple[StockLine, ...]
    status: Literal["TENTATIVE", "SCHEDULED", "CANCELLED"]
    updated_at: float


async def schedule(tx: Tx, cmd: ScheduleShipment, step: StepContext) -> str:
    """Book a shipment."""
    await tx.insert(Shipment(id=cmd.order_id, customer_id=cmd.customer_id, lines=cmd.lines,
                             status="SCHEDULED", updated_at=step.now))
    return "shipment SCHEDULED"


async def cancel(tx: Tx, cmd: ScheduleShipment, step: StepContext) -> str:
    """The undo of schedule: cancel the booking."""
    if await tx.modify(Shipment, cmd.order_id, Change(
            when={"status": "SCHEDULED"},
            assign={"status": "CANCELLED", "updated_at": step.now})) is None:
        raise Impossible(f"no scheduled shipment for order {cmd.order_id}")
    return "shipment CANCELLED"


async def book(tx: Tx, cmd: ScheduleShipment, step: StepContext) -> str:
    """Book a shipment tentatively."""
    await tx.insert(Shipment(id=cmd.order_id, customer_id=cmd.customer_id, lines=cmd.lines,
                             status="TENTATIVE", updated_at=step.now))
    return "shipment TENTATIVE"


async def _settle(tx: Tx, order_id: str, now: float, status: Literal["SCHEDULED", "CANCELLED"],
                  ) -> str:
    if await tx.modify(Shipment, order_id, Change(
            when={"status": "TENTATIVE"}, assign={"status": status, "updated_at": now})) is None:
        raise Impossible(f"no tentative shipment for order {order_id}")
    return f"shipment {status}"


async def confirm_booking(tx: Tx, cmd: ScheduleShipment, step: StepContext) -> str:
    """The saga passed its commit point: the booking stands."""
    return await _settle(tx, cmd.order_id, step.now, "SCHEDULED")


async def cancel_booking(tx: Tx, cmd: ScheduleShipment, step: StepContext) -> str:
    """The saga failed: the tentative booking goes."""
    return await _settle(tx, cmd.order_id, step.now, "CANCELLED")


SERVICE = Participant(
    metrics_port=9404,
    name="shipping",
    description="Shipments, booked tentatively then confirmed, or cancelled.",
    operations=(TwoPhase("book", ScheduleShipment, prepare=book, confirm=confirm_booking,
                         cancel=cancel_booking),
                Action("schedule", ScheduleShipment, run=schedule, undo=cancel,
                       rejectable=True)),
    documents=(Shipment,),
    rejection=OrderReason.SHIPPING_UNAVAILABLE,
    reasons=(OrderReason.SHIPPING_UNAVAILABLE,),
)
