"""Notification: tell customers how their orders ended. ``python -m workers.notification``."""

from __future__ import annotations

from contracts.commands import NotificationKind, NotifyCustomer, Operation
from contracts.orders import ReasonCode
from workers.runtime import CommandHandler, ServiceSpec
from workers.store import Doc, Tx


class Notification(Doc):
    """A message sent to a customer; ``id`` is ``<order id>:<kind>``."""

    collection = "notifications"
    order_id: str
    customer_id: str
    kind: NotificationKind
    text: str
    sent_at: float


async def send(tx: Tx, cmd: NotifyCustomer, now: float) -> str:
    """Record (and, in a real deployment, deliver) one notification."""
    await tx.insert(Notification(id=f"{cmd.order_id}:{cmd.kind.value}", order_id=cmd.order_id,
                                 customer_id=cmd.customer_id, kind=cmd.kind, text=cmd.text,
                                 sent_at=now))
    return f"{cmd.kind.value} notification sent"


SPEC = ServiceSpec(
    name="notification",
    handlers=(CommandHandler("notification.send", NotifyCustomer, Operation.FORWARD, send),),
    rejection=ReasonCode.SERVICE_ERROR,
    documents=(Notification,),
)

if __name__ == "__main__":
    from workers.app import main

    main("notification")
