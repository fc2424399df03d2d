"""Inventory: two-phase stock reservations. ``python -m workers.inventory``.

Committed stock is ``on_hand``. A reservation only raises ``reserved``; confirm moves it
out of ``on_hand``; cancel releases it. Readers of ``on_hand`` never see tentative
changes, and ``on_hand - reserved`` is what can still be promised.
"""

from __future__ import annotations

from typing import Literal

from contracts.commands import CommitStock, Operation, ReleaseStock, ReserveStock, StockLine
from contracts.orders import ReasonCode
from workers.runtime import CommandHandler, Impossible, Rejected, ServiceSpec
from workers.store import Doc, Tx


class StockItem(Doc):
    """Stock of one SKU; ``received`` is everything ever added (for audits)."""

    collection = "stock"
    on_hand: int
    reserved: int = 0
    received: int = 0


class Reservation(Doc):
    """Stock held for one order; ``id`` is the order id."""

    collection = "reservations"
    lines: tuple[StockLine, ...]
    state: Literal["held", "committed", "released"]
    updated_at: float


def _merged(lines: tuple[StockLine, ...]) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    return wanted


async def _items(tx: Tx, skus: list[str]) -> dict[str, StockItem]:
    items = {}
    for sku in sorted(skus):
        item = await tx.get(StockItem, sku)
        if item is None:
            raise Rejected(ReasonCode.UNKNOWN_SKU, f"unknown SKU {sku}")
        items[sku] = item
    return items


async def reserve(tx: Tx, cmd: ReserveStock, now: float) -> str:
    """Hold stock for every line, or for none of them."""
    wanted = _merged(cmd.lines)
    items = await _items(tx, list(wanted))
    for sku, quantity in wanted.items():
        free = items[sku].on_hand - items[sku].reserved
        if free < quantity:
            raise Rejected(ReasonCode.INSUFFICIENT_STOCK, f"{sku}: {quantity} wanted, {free} free")
    for sku, quantity in wanted.items():
        await tx.update(items[sku].model_copy(update={"reserved": items[sku].reserved + quantity}))
    await tx.insert(Reservation(id=cmd.order_id, lines=cmd.lines, state="held", updated_at=now))
    return f"reserved {sum(wanted.values())} units"


async def _settle(tx: Tx, order_id: str, now: float, commit: bool) -> str:
    reservation = await tx.get(Reservation, order_id)
    if reservation is None or reservation.state != "held":
        raise Impossible(f"no held reservation for order {order_id}")
    wanted = _merged(reservation.lines)
    items = await _items(tx, list(wanted))
    for sku, quantity in wanted.items():
        item = items[sku]
        on_hand = item.on_hand - quantity if commit else item.on_hand
        await tx.update(item.model_copy(update={"reserved": item.reserved - quantity,
                                                "on_hand": on_hand}))
    state = "committed" if commit else "released"
    await tx.update(reservation.model_copy(update={"state": state, "updated_at": now}))
    return f"{state} {sum(wanted.values())} units"


async def commit(tx: Tx, cmd: CommitStock, now: float) -> str:
    """Deduct the reserved stock from stock on hand."""
    return await _settle(tx, cmd.order_id, now, commit=True)


async def release(tx: Tx, cmd: ReleaseStock, now: float) -> str:
    """Give the reserved stock back."""
    return await _settle(tx, cmd.order_id, now, commit=False)


SPEC = ServiceSpec(
    name="inventory",
    handlers=(
        CommandHandler("inventory.prepare", ReserveStock, Operation.FORWARD, reserve, rejectable=True),
        CommandHandler("inventory.confirm", CommitStock, Operation.CONFIRM, commit),
        CommandHandler("inventory.cancel", ReleaseStock, Operation.COMPENSATE, release),
    ),
    rejection=ReasonCode.INSUFFICIENT_STOCK,
    documents=(StockItem, Reservation),
)

if __name__ == "__main__":
    from workers.app import main

    main("inventory")
