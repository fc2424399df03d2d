"""Inventory: two-phase stock reservations.

Committed stock is ``on_hand``. A reservation only raises ``reserved``; confirm moves it
out of ``on_hand``; cancel releases it. Readers of ``on_hand`` never see tentative
changes, and ``on_hand - reserved`` is what can still be promised.
"""

from __future__ import annotations

from typing import Literal

from contracts.order_steps import ReserveStock, StockLine
from contracts.orders import OrderReason
from workers.sdk import Impossible, Participant, Rejected, StepContext, TwoPhase
from workers.store import Change, Doc, Tx


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
            raise Rejected(OrderReason.UNKNOWN_SKU, f"unknown SKU {sku}")
        items[sku] = item
    return items


async def reserve(tx: Tx, cmd: ReserveStock, step: StepContext) -> str:
    """Hold stock for every line, or for none of them (a refusal rolls back the others)."""
    wanted = _merged(cmd.lines)
    for sku, quantity in sorted(wanted.items()):
        # One write per SKU: the reservation grows only within the stock on hand.
        if await tx.modify(StockItem, sku, Change(within={"reserved": "on_hand"},
                                                  add={"reserved": quantity})) is None:
            items = await _items(tx, list(wanted))  # an unknown SKU is the first reason
            free = items[sku].on_hand - items[sku].reserved
            raise Rejected(OrderReason.INSUFFICIENT_STOCK, f"{sku}: {quantity} wanted, {free} free")
    await tx.insert(Reservation(id=cmd.order_id, lines=cmd.lines, state="held",
                                updated_at=step.now))
    return f"reserved {sum(wanted.values())} units"


async def _settle(tx: Tx, order_id: str, now: float, commit: bool) -> str:
    # Writes only: the reservation moves on only if it is still held, and each SKU changes
    # by what that reservation carried.
    state = "committed" if commit else "released"
    reservation = await tx.modify(Reservation, order_id, Change(
        when={"state": "held"}, assign={"state": state, "updated_at": now}))
    if reservation is None:
        raise Impossible(f"no held reservation for order {order_id}")
    wanted = _merged(reservation.lines)
    for sku, quantity in sorted(wanted.items()):
        taken = quantity if commit else 0
        if await tx.modify(StockItem, sku, Change(
                add={"reserved": -quantity, "on_hand": -taken})) is None:
            raise Impossible(f"SKU {sku} of a held reservation disappeared")
    return f"{state} {sum(wanted.values())} units"


async def commit(tx: Tx, cmd: ReserveStock, step: StepContext) -> str:
    """Deduct the reserved stock from stock on hand."""
    return await _settle(tx, cmd.order_id, step.now, commit=True)


async def release(tx: Tx, cmd: ReserveStock, step: StepContext) -> str:
    """Give the reserved stock back."""
    return await _settle(tx, cmd.order_id, step.now, commit=False)


SERVICE = Participant(
    metrics_port=9402,
    name="inventory",
    description="Stock per SKU, reserved in two phases.",
    operations=(TwoPhase("reserve", ReserveStock, prepare=reserve, confirm=commit,
                         cancel=release),),
    documents=(StockItem, Reservation),
    rejection=OrderReason.INSUFFICIENT_STOCK,
    reasons=(OrderReason.INSUFFICIENT_STOCK, OrderReason.UNKNOWN_SKU),
)
