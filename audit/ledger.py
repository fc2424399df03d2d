"""Stock and money are conserved: per SKU and per customer, the books balance.

These hold at every instant, in flight or not: each participant moves a counter and
the document that explains it in one transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from audit.snapshot import Snapshot, Violation

STOCK_CONSERVED = "stock conserved"
RESERVATIONS_MATCH = "reservations match"
MONEY_CONSERVED = "money conserved"
HOLDS_MATCH = "holds match"

DESCRIPTIONS = {
    STOCK_CONSERVED: "per SKU: units received = on hand + units sold (committed reservations)",
    RESERVATIONS_MATCH: "per SKU: units reserved = units in held reservations",
    MONEY_CONSERVED: "per customer: deposited = balance + captured holds",
    HOLDS_MATCH: "per customer: amount held = open holds",
}


def check(s: Snapshot) -> list[Violation]:
    """Every ledger invariant."""
    return [*_stock(s), *_money(s)]


def _sums(entries: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """(state, key, amount) triples summed per state, then per key."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for state, key, amount in entries:
        totals[state][key] += amount
    return totals


def _stock(s: Snapshot) -> list[Violation]:
    sums = _sums((r.state, line.sku, line.quantity)
                 for r in s.reservations.values() for line in r.lines)
    sold, held = sums["committed"], sums["held"]
    out = []
    for item in s.stock:
        off = item.received - item.on_hand - sold[item.id]
        if off or item.on_hand < 0:
            out.append(Violation(STOCK_CONSERVED, item.id,
                                 f"received {item.received} != on hand {item.on_hand} + "
                                 f"sold {sold[item.id]}", "sku", off))
        off = item.reserved - held[item.id]
        if off or item.reserved < 0:
            out.append(Violation(RESERVATIONS_MATCH, item.id,
                                 f"reserved {item.reserved}, held reservations {held[item.id]}",
                                 "sku", off))
    known = {item.id for item in s.stock}
    for sku in sorted((set(sold) | set(held)) - known):
        out.append(Violation(STOCK_CONSERVED, sku, "reserved or sold, but no such SKU", "sku"))
    return out


def _money(s: Snapshot) -> list[Violation]:
    sums = _sums((h.state, h.customer_id, h.amount) for h in s.holds.values())
    captured, held = sums["captured"], sums["held"]
    out = []
    for a in s.accounts:
        off = a.deposited - a.balance - captured[a.id]
        if off or a.balance < 0:
            out.append(Violation(MONEY_CONSERVED, a.id,
                                 f"deposited {a.deposited} != balance {a.balance} + "
                                 f"captured {captured[a.id]} (cents)", "customer", off))
        off = a.held - held[a.id]
        if off or a.held < 0:
            out.append(Violation(HOLDS_MATCH, a.id,
                                 f"held {a.held}, open holds {held[a.id]} (cents)", "customer",
                                 off))
    known = {a.id for a in s.accounts}
    for customer in sorted((set(captured) | set(held)) - known):
        out.append(Violation(MONEY_CONSERVED, customer, "money held or captured, but no account",
                             "customer"))
    return out
