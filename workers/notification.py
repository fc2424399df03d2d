"""Notification: tell people how their sagas ended, once per (reference, kind)."""

from __future__ import annotations

from contracts.notices import Notify
from workers.sdk import Action, Participant, StepContext
from workers.store import Doc, Tx


class Notification(Doc):
    """A message sent; ``id`` is ``<reference>:<kind>``."""

    collection = "notifications"
    reference: str
    recipient: str
    kind: str
    text: str
    sent_at: float


async def send(tx: Tx, cmd: Notify, step: StepContext) -> str:
    """Record (and, in a real deployment, deliver) one notification."""
    await tx.insert(Notification(id=f"{cmd.reference}:{cmd.kind}", reference=cmd.reference,
                                 recipient=cmd.recipient, kind=cmd.kind, text=cmd.text,
                                 sent_at=step.now))
    return f"{cmd.kind} notification sent"


SERVICE = Participant(
    metrics_port=9405,
    name="notification",
    description="Messages to customers and account holders.",
    operations=(Action("send", Notify, run=send),),
    documents=(Notification,),
    rejection="NOT_DELIVERED",
)
