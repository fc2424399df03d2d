"""Parameters of the participant operations the order saga calls.

Each model is the ``params`` of a ``StepCommand``; every phase of an operation (prepare,
confirm and cancel, or the action and its undo) receives the same parameters.
"""

from __future__ import annotations

from pydantic import Field

from contracts.envelope import Model
from contracts.orders import CustomerId, Money, OrderId, OrderItem, Quantity, Sku


class StockLine(Model):
    """A quantity of one SKU."""

    sku: Sku
    quantity: Quantity


class CreateOrder(Model):
    """order.create: record the order as PENDING; its undo marks it REJECTED with the
    saga's failure."""

    order_id: OrderId
    customer_id: CustomerId
    items: tuple[OrderItem, ...] = Field(min_length=1, max_length=50)
    total: Money


class ApproveOrder(Model):
    """order.approve: mark the order APPROVED (after the commit point)."""

    order_id: OrderId


class ReserveStock(Model):
    """inventory.reserve: prepare reserves stock without changing stock on hand, confirm
    deducts it, cancel releases it."""

    order_id: OrderId
    lines: tuple[StockLine, ...] = Field(min_length=1, max_length=50)


class HoldFunds(Model):
    """payment.hold: prepare holds an amount without changing the balance, confirm captures
    it, cancel releases it."""

    order_id: OrderId
    customer_id: CustomerId
    amount: Money


class ScheduleShipment(Model):
    """shipping.book (two-phase: tentative, then confirmed or cancelled) or, for the order
    saga's version 1, shipping.schedule (booked at once; its undo cancels it)."""

    order_id: OrderId
    customer_id: CustomerId
    lines: tuple[StockLine, ...] = Field(min_length=1, max_length=50)
