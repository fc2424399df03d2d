"""Message type names of the platform and of the shipped sagas, and the model each carries."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from contracts import commands as c
from contracts import orders as o
from contracts import transactions as x
from contracts import transfers as t
from contracts.admin import ADMIN_ACTION, ADMIN_RESULT, AdminAction, AdminResult, resolved_key, resolved_model
from contracts.cancels import cancel_key, cancel_models, cancel_refused_key
from contracts.envelope import Model

ORDER_REQUESTED = "order.requested"
ORDER_COMPLETED = "order.completed"
ORDER_FAILED = "order.failed"
ORDER_CANCEL = cancel_key(ORDER_REQUESTED)
ORDER_CANCEL_REFUSED = cancel_refused_key(ORDER_REQUESTED)
ORDER_RESOLVED = resolved_key(ORDER_REQUESTED)
STEP_REPLY = "saga.reply"
# Not a message type of its own: every command (``<service>.<operation>[.<phase>]``) has
# this body. The name is the one its JSON Schema is published under.
STEP_COMMAND = "saga.command"

EVENTS: Mapping[str, type[Model]] = MappingProxyType(
    {
        ORDER_REQUESTED: o.OrderRequested,
        ORDER_COMPLETED: o.OrderCompleted,
        ORDER_FAILED: o.OrderFailed,
        ORDER_CANCEL: cancel_models("Order", "order_id")[0],
        ORDER_CANCEL_REFUSED: cancel_models("Order", "order_id")[1],
        ORDER_RESOLVED: resolved_model("Order", "order_id"),
        t.TRANSFER_REQUESTED: t.TransferRequested,
        t.TRANSFER_COMPLETED: t.TransferCompleted,
        t.TRANSFER_FAILED: t.TransferFailed,
        cancel_key(t.TRANSFER_REQUESTED): cancel_models("Transfer", "transfer_id")[0],
        cancel_refused_key(t.TRANSFER_REQUESTED): cancel_models("Transfer", "transfer_id")[1],
        resolved_key(t.TRANSFER_REQUESTED): resolved_model("Transfer", "transfer_id"),
        x.TRANSACTION_REQUESTED: x.TransactionRequested,
        x.TRANSACTION_COMMITTED: x.TransactionCommitted,
        x.TRANSACTION_ABORTED: x.TransactionAborted,
        cancel_key(x.TRANSACTION_REQUESTED): cancel_models("Transaction", "transaction_id")[0],
        cancel_refused_key(x.TRANSACTION_REQUESTED):
            cancel_models("Transaction", "transaction_id")[1],
        resolved_key(x.TRANSACTION_REQUESTED): resolved_model("Transaction", "transaction_id"),
        ADMIN_ACTION: AdminAction,
        ADMIN_RESULT: AdminResult,
        STEP_REPLY: c.StepReply,
        STEP_COMMAND: c.StepCommand,
    }
)


def all_message_types() -> Mapping[str, type[Model]]:
    """Every message body of the system, for schema export and documentation."""
    return EVENTS
