"""The public contract of the order saga: requests in, outcomes out (exchange ``orders``)."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BeforeValidator, Field, WithJsonSchema

from contracts.envelope import Model
from contracts.reasons import ReasonCode

OrderId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
CustomerId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Quantity = Annotated[int, Field(ge=1, le=10_000, strict=True)]


def _decimal_string(value: object) -> object:
    # JSON numbers are binary floats (0.1 + 0.2 != 0.3): money must arrive as text.
    if isinstance(value, str | Decimal):
        return value
    raise ValueError('must be a decimal string such as "12.50"')


_AS_TEXT = BeforeValidator(_decimal_string)
# At most two fractional digits, so amounts convert to integer cents exactly.
Price = Annotated[
    Decimal, _AS_TEXT, Field(gt=0, le=Decimal("1000000"), decimal_places=2),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]{1,7}(\.[0-9]{1,2})?$",
                    "examples": ["12.50"]})]
Money = Annotated[
    Decimal, _AS_TEXT, Field(gt=0, le=Decimal("1000000000"), decimal_places=2),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,2})?$",
                    "examples": ["1250.00"]})]

MAX_ITEMS = 50


class OrderReason(StrEnum):
    """The order saga's business reasons, next to the platform's (``contracts.reasons``)."""

    INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
    UNKNOWN_SKU = "UNKNOWN_SKU"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    UNKNOWN_CUSTOMER = "UNKNOWN_CUSTOMER"
    SHIPPING_UNAVAILABLE = "SHIPPING_UNAVAILABLE"
    ORDER_REFUSED = "ORDER_REFUSED"
    # Another order with different content already has this order id.
    DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"


class OrderItem(Model):
    """One order line."""

    sku: Sku
    quantity: Quantity
    unit_price: Price


class OrderRequested(Model):
    """Body of ``order.requested``: a customer asks for an order to be placed."""

    order_id: OrderId | None = None
    customer_id: CustomerId
    items: tuple[OrderItem, ...] = Field(min_length=1, max_length=MAX_ITEMS)


class OrderCompleted(Model):
    """Body of ``order.completed``: stock deducted, payment captured, shipment scheduled."""

    order_id: OrderId
    customer_id: CustomerId
    total: Money


class OrderFailed(Model):
    """Body of ``order.failed``: the order was rejected and everything done for it undone.

    ``needs_attention`` is true when an undo or a confirmation failed permanently: an
    operator must look at the order (``sagactl status``) before anything is assumed.
    ``customer_id`` is absent only when the request itself was unreadable
    (``INVALID_REQUEST``).
    """

    order_id: OrderId
    customer_id: CustomerId | None = None
    reason_code: ReasonCode
    reason: str
    needs_attention: bool = False


def order_total(items: tuple[OrderItem, ...]) -> Decimal:
    """The sum of quantity times unit price over all lines."""
    return sum((item.unit_price * item.quantity for item in items), Decimal("0.00"))


def to_cents(amount: Decimal) -> int:
    """Convert a two-decimal amount to integer cents (exact)."""
    return int((amount * 100).to_integral_exact())
