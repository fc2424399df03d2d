"""Every finished order saga agrees with what each service did for its order.

An order counts as approved when its saga completed and as rejected when it failed: the
saga is the record of what was decided. Whether the order service agrees is an invariant
of its own, so that one wrong document is reported once, not by every check that reads it.
Sagas in flight are not judged; needs_attention sagas are listed apart (see ``Scope``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from audit.snapshot import OrderSaga, Scope, Snapshot, Violation
from contracts.commands import Operation
from contracts.order_steps import StockLine
from contracts.orders import OrderItem, to_cents
from engine.state import OpStatus
from orchestrator.start import split_saga_id
from sagas.order import APPROVED_NOTICE, REJECTED_NOTICE
from sagas.order import NAME as ORDER_SAGA
from workers.notification import Notification

SAGA_FINISHED = "saga finished by its deadline"
SAGA_AGREES = "saga agrees with order"
STOCK_SOLD = "sold stock matches approved orders"
MONEY_CAPTURED = "captured money matches approved orders"
NOTHING_HELD = "nothing held for a finished saga"
NOT_CAPTURED_AND_REJECTED = "no order both captured and rejected"
APPROVED_ONCE = "approved order shipped and notified once"
REJECTED_UNSHIPPED = "rejected order unshipped and notified once"
HAS_SAGA = "every effect has a saga"

DESCRIPTIONS = {
    SAGA_FINISHED: "a saga past its deadline is finished, or still has a timer pending",
    SAGA_AGREES: "completed <=> order APPROVED, failed <=> REJECTED or never created; "
                 "no order record without its saga",
    STOCK_SOLD: "an approved order's stock is sold, exactly its items; a rejected one's is not",
    MONEY_CAPTURED: "an approved order's total is captured from its customer",
    NOTHING_HELD: "no reservation or hold is left open for a finished saga",
    NOT_CAPTURED_AND_REJECTED: "no rejected order has its payment captured",
    APPROVED_ONCE: "an approved order has one scheduled shipment and one notification",
    REJECTED_UNSHIPPED: "a rejected order has no scheduled shipment and one notification",
    HAS_SAGA: "every reservation, hold, shipment, notification, fence and inbox record "
              "belongs to a saga",
}


def check(s: Snapshot, scope: Scope) -> list[Violation]:
    """Every per-order invariant, over finished sagas, plus overdue sagas and orphans."""
    out = [Violation(SAGA_FINISHED, saga_id, why) for saga_id, why in sorted(scope.overdue.items())]
    notes = _by_order(s.notifications)
    for o in scope.finished.values():
        out += _agreement(s, o) + _stock(s, o) + _money(s, o)
        out += _shipped(s, o, notes.get(o.order_id, []))
    return out + _orphans(s)


def _by_order(notifications: Iterable[Notification]) -> dict[str, list[Notification]]:
    found: dict[str, list[Notification]] = defaultdict(list)
    for n in notifications:
        found[n.reference].append(n)
    return found


def _agreement(s: Snapshot, o: OrderSaga) -> list[Violation]:
    order, state = s.orders.get(o.order_id), o.record.state
    created = state.op("create_order", Operation.FORWARD).status is OpStatus.SUCCEEDED
    wanted = "APPROVED" if o.completed else "REJECTED"
    problem = None
    if order is None and (o.completed or created):
        problem = "order record missing although create_order succeeded"
    elif order is not None and order.status != wanted:
        problem = f"saga {state.status.value} but order is {order.status}"
    elif order is not None and (order.customer_id, _merged(order.items), order.total) != (
            o.data.customer_id, _merged(o.data.items), to_cents(o.data.total)):
        problem = "order record differs from the saga's customer, items or total"
    return [] if problem is None else [Violation(SAGA_AGREES, o.order_id, problem)]


def _merged(lines: Iterable[OrderItem | StockLine]) -> dict[str, int]:
    units: dict[str, int] = defaultdict(int)
    for line in lines:
        units[line.sku] += line.quantity
    return dict(units)


def _stock(s: Snapshot, o: OrderSaga) -> list[Violation]:
    r = s.reservations.get(o.order_id)
    if r is not None and r.state == "held":
        return [Violation(NOTHING_HELD, o.order_id, "stock still reserved")]
    if not o.completed:
        committed = r is not None and r.state == "committed"
        return ([Violation(STOCK_SOLD, o.order_id, "stock sold for a rejected order")]
                if committed else [])
    if r is None or r.state != "committed":
        return [Violation(STOCK_SOLD, o.order_id,
                          f"approved, but stock {'never reserved' if r is None else r.state}")]
    sold, ordered = _merged(r.lines), _merged(o.data.items)
    if sold != ordered:
        return [Violation(STOCK_SOLD, o.order_id, f"sold {sold}, ordered {ordered}")]
    return []


def _money(s: Snapshot, o: OrderSaga) -> list[Violation]:
    h, order = s.holds.get(o.order_id), s.orders.get(o.order_id)
    if h is not None and h.state == "held":
        return [Violation(NOTHING_HELD, o.order_id, "money still held")]
    captured = h is not None and h.state == "captured"
    rejected = not o.completed or (order is not None and order.status == "REJECTED")
    if captured and rejected:
        return [Violation(NOT_CAPTURED_AND_REJECTED, o.order_id,
                          "payment captured for a rejected order")]
    if not o.completed:
        return []
    if h is None or h.state != "captured":
        return [Violation(MONEY_CAPTURED, o.order_id,
                          f"approved, but payment {'never held' if h is None else h.state}")]
    total = to_cents(o.data.total)
    if (h.customer_id, h.amount) != (o.data.customer_id, total):
        return [Violation(MONEY_CAPTURED, o.order_id,
                          f"captured {h.amount} from {h.customer_id}, "
                          f"order total {total} from {o.data.customer_id} (cents)")]
    return []


def _shipped(s: Snapshot, o: OrderSaga, notes: list[Notification]) -> list[Violation]:
    shipment = s.shipments.get(o.order_id)
    status = None if shipment is None else shipment.status
    kinds = sorted(n.kind for n in notes)
    if o.completed:
        name, wanted = APPROVED_ONCE, [APPROVED_NOTICE]
        problems = [] if status == "SCHEDULED" else [
            "no scheduled shipment" + (f" (it is {status})" if status else "")]
    else:
        name, wanted = REJECTED_UNSHIPPED, [REJECTED_NOTICE]
        # A tentative booking left behind is as wrong as a scheduled one: it was never undone.
        problems = [f"shipment still {status.lower()}"] if status in ("SCHEDULED",
                                                                        "TENTATIVE") else []
    if kinds != wanted:
        problems.append(f"notifications sent: {kinds or 'none'}, expected {wanted}")
    return [Violation(name, o.order_id, p) for p in problems]


def _orphans(s: Snapshot) -> list[Violation]:
    orders = {key for name, key in map(split_saga_id, s.sagas) if name == ORDER_SAGA}
    keys = {key for _, key in map(split_saga_id, s.sagas)}
    out = [Violation(SAGA_AGREES, order_id, "order record without any saga")
           for order_id in sorted(s.orders.keys() - orders)]
    kinds: list[tuple[str, Iterable[str], set[str]]] = [
        ("reservation", s.reservations, orders), ("hold", s.holds, orders),
        ("shipment", s.shipments, orders),
        ("notification", (n.reference for n in s.notifications), keys)]
    for kind, order_ids, known in kinds:
        for order_id in sorted(set(order_ids) - known):
            out.append(Violation(HAS_SAGA, order_id, f"{kind} without any saga"))
    return out
