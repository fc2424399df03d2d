"""Message type names and the payload model each one carries."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from contracts import commands as c
from contracts import orders as o
from contracts.envelope import Model

ORDER_REQUESTED = "order.requested"
ORDER_COMPLETED = "order.completed"
ORDER_FAILED = "order.failed"
STEP_REPLY = "saga.reply"

# Command type -> payload model, grouped by the service that handles it.
SERVICE_COMMANDS: Mapping[str, Mapping[str, type[c.SagaCommand]]] = MappingProxyType(
    {
        "order": {
            "order.create": c.CreateOrder,
            "order.reject": c.RejectOrder,
            "order.approve": c.ApproveOrder,
        },
        "inventory": {
            "inventory.prepare": c.ReserveStock,
            "inventory.confirm": c.CommitStock,
            "inventory.cancel": c.ReleaseStock,
        },
        "payment": {
            "payment.prepare": c.HoldFunds,
            "payment.confirm": c.CaptureFunds,
            "payment.cancel": c.ReleaseFunds,
        },
        "shipping": {
            "shipping.schedule": c.ScheduleShipment,
            "shipping.cancel": c.CancelShipment,
        },
        "notification": {
            "notification.send": c.NotifyCustomer,
        },
    }
)

SERVICES: tuple[str, ...] = tuple(SERVICE_COMMANDS)

EVENTS: Mapping[str, type[Model]] = MappingProxyType(
    {
        ORDER_REQUESTED: o.OrderRequested,
        ORDER_COMPLETED: o.OrderCompleted,
        ORDER_FAILED: o.OrderFailed,
        STEP_REPLY: c.StepReply,
    }
)


def all_message_types() -> Mapping[str, type[Model]]:
    """Every message type of the system, for schema export and documentation."""
    merged: dict[str, type[Model]] = dict(EVENTS)
    for commands in SERVICE_COMMANDS.values():
        merged.update(commands)
    return merged
