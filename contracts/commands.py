"""Commands the orchestrator sends to participant services, and the one reply they send back."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from contracts.envelope import Model
from contracts.orders import CustomerId, Money, OrderId, OrderItem, Quantity, ReasonCode, Sku

StepName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
Amount = Money


class Operation(StrEnum):
    """What a command does to its step: run it, confirm a prepared step, or undo it."""

    FORWARD = "forward"
    CONFIRM = "confirm"
    COMPENSATE = "compensate"


class Outcome(StrEnum):
    """How a participant answered a command."""

    SUCCEEDED = "succeeded"
    # A business "no" (insufficient stock, payment declined): never retried.
    REJECTED = "rejected"
    # Worth another attempt later (a crash, a conflict, an unreachable dependency).
    RETRYABLE_ERROR = "retryable_error"
    # The participant can never carry this command out.
    PERMANENT_ERROR = "permanent_error"


class SagaCommand(Model):
    """Base of every command: which saga and which of its steps it belongs to."""

    saga_id: OrderId
    step: StepName


class StockLine(Model):
    """A quantity of one SKU."""

    sku: Sku
    quantity: Quantity


class CreateOrder(SagaCommand):
    """order.create: record the order as PENDING."""

    order_id: OrderId
    customer_id: CustomerId
    items: tuple[OrderItem, ...] = Field(min_length=1, max_length=50)
    total: Amount


class RejectOrder(SagaCommand):
    """order.reject: compensation of order.create; mark the order REJECTED with a reason."""

    order_id: OrderId
    reason_code: ReasonCode
    reason: str = Field(max_length=500)


class ApproveOrder(SagaCommand):
    """order.approve: mark the order APPROVED (after the commit point)."""

    order_id: OrderId


class ReserveStock(SagaCommand):
    """inventory.prepare: reserve stock without changing stock on hand."""

    order_id: OrderId
    lines: tuple[StockLine, ...] = Field(min_length=1, max_length=50)


class CommitStock(SagaCommand):
    """inventory.confirm: deduct the reserved stock from stock on hand."""

    order_id: OrderId


class ReleaseStock(SagaCommand):
    """inventory.cancel: release a reservation (or fence one that never arrived)."""

    order_id: OrderId


class HoldFunds(SagaCommand):
    """payment.prepare: hold an amount without changing the balance."""

    order_id: OrderId
    customer_id: CustomerId
    amount: Amount


class CaptureFunds(SagaCommand):
    """payment.confirm: take the held amount from the balance."""

    order_id: OrderId


class ReleaseFunds(SagaCommand):
    """payment.cancel: release a hold (or fence one that never arrived)."""

    order_id: OrderId


class ScheduleShipment(SagaCommand):
    """shipping.schedule: book a shipment for the order."""

    order_id: OrderId
    customer_id: CustomerId
    lines: tuple[StockLine, ...] = Field(min_length=1, max_length=50)


class CancelShipment(SagaCommand):
    """shipping.cancel: compensation of shipping.schedule."""

    order_id: OrderId


class NotificationKind(StrEnum):
    """Which outcome a notification announces."""

    APPROVED = "approved"
    REJECTED = "rejected"


class NotifyCustomer(SagaCommand):
    """notification.send: tell the customer how the order ended."""

    order_id: OrderId
    customer_id: CustomerId
    kind: NotificationKind
    text: str = Field(max_length=500)


class StepReply(Model):
    """saga.reply: a participant's answer to one command (causation id = the command's id)."""

    saga_id: OrderId
    step: StepName
    operation: Operation
    outcome: Outcome
    reason_code: ReasonCode | None = None
    detail: str = Field(default="", max_length=500)
