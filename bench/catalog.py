"""The benchmark's orders and the stock and money that let every one of them complete."""

from __future__ import annotations

from decimal import Decimal

from contracts.orders import OrderItem, OrderRequested
from workers.store import DocumentStore

SKUS = tuple(f"SKU-{i:03d}" for i in range(20))
CUSTOMERS = tuple(f"cust-{i:03d}" for i in range(100))
PRICE = Decimal("12.50")
# Far more than any run uses, so no saga is ever rejected for lack of stock or money.
UNITS_PER_SKU = 1_000_000_000
CENTS_PER_CUSTOMER = 10**15


def orders(prefix: str, count: int) -> list[OrderRequested]:
    """One-line orders spread over every SKU and customer (few optimistic-lock conflicts)."""
    return [
        OrderRequested(order_id=f"{prefix}-{i:06d}", customer_id=CUSTOMERS[i % len(CUSTOMERS)],
                       items=(OrderItem(sku=SKUS[i % len(SKUS)], quantity=1, unit_price=PRICE),))
        for i in range(count)
    ]


async def seed(service: str, store: DocumentStore) -> None:
    """Stock for the inventory service, money for the payment service, nothing for others."""
    # Imported here: client.seed pulls in the worker modules, which only workers need.
    from client.seed import add_funds, add_stock

    if service == "inventory":
        for sku in SKUS:
            await add_stock(store, sku, UNITS_PER_SKU)
    elif service == "payment":
        for customer in CUSTOMERS:
            await add_funds(store, customer, CENTS_PER_CUSTOMER)
