"""What the auditor reads: every store loaded once, and which sagas each check may judge.

The checks themselves (``ledger``, ``outcomes``, ``dedup``, ``dlq``) are pure functions of
a Snapshot; only ``load`` and the dead-letter reader do I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from contracts.envelope import WireMessage
from engine.state import SagaStatus
from infra.errors import TransientError
from orchestrator.start import StartMessage
from orchestrator.store import SagaRecord, SagaStore
from sagas.order import NAME as ORDER_SAGA
from sagas.order import OrderSagaData
from sagas.transfer import TransferSagaData
from workers.account import Entry, LedgerAccount
from workers.fence import Fence
from workers.inventory import Reservation, StockItem
from workers.locks import Lock, Waiter
from workers.notification import Notification
from workers.order import OrderRecord
from workers.payment import Account, Hold
from workers.shipping import Shipment
from workers.store import Doc, DocumentStore

SubjectKind = Literal["order", "sku", "customer", "message", "saga"]

# Everything, however large: an audit that silently stops at a page size proves nothing.
ALL = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: which one, about what (an order id, a SKU, ...) and why."""

    invariant: str
    subject: str
    detail: str
    subject_kind: SubjectKind = "order"
    # For a ledger: by how much the books are off. A real error keeps it while the system
    # moves on; a read torn by a concurrent update gives a different one each time.
    imbalance: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterQueue:
    """The messages of one dead-letter queue; ``source`` names what its queue consumes:
    ``requests``, ``replies`` or a service name."""

    name: str
    source: str
    messages: tuple[WireMessage, ...]
    unread: str | None = None  # why the queue was not read, when it was not
    start: StartMessage[Any] | None = None  # what a requests queue receives


@dataclass(slots=True)
class Snapshot:
    """Everything the checks read, loaded once (sagas first, see ``load``)."""

    sagas: dict[str, SagaRecord]
    stock: list[StockItem]
    reservations: dict[str, Reservation]
    accounts: list[Account]
    holds: dict[str, Hold]
    orders: dict[str, OrderRecord]
    shipments: dict[str, Shipment]
    notifications: list[Notification]
    ledger: list[LedgerAccount] = field(default_factory=list)  # the account service's
    postings: dict[str, Entry] = field(default_factory=dict)  # by <saga id>:<step>
    fences: dict[str, dict[str, Fence]] = field(default_factory=dict)  # by service, then id
    locks: dict[str, list[Lock]] = field(default_factory=dict)  # by service
    waiters: dict[str, list[Waiter]] = field(default_factory=dict)  # parked prepares, by service
    dead_letters: tuple[DeadLetterQueue, ...] | None = None  # None: queues not read
    taken_at: float = 0.0
    # Derived from ``notifications``: which (reference, kind) pairs were sent.
    notified: set[tuple[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.notified = {(n.reference, n.kind) for n in self.notifications}


READ_ATTEMPTS = 10


async def load(sagas: SagaStore, services: Mapping[str, DocumentStore]) -> Snapshot:
    """Read every store, the sagas first.

    A saga is finished only after every participant committed its part, so whatever a
    saga loaded as finished says is already in the services' stores when they are read.
    """
    taken_at = time.time()
    records = await sagas.find(None, ALL)

    async def every[T: Doc](service: str, kind: type[T]) -> list[T]:
        # A live store may be briefly busy (a conflict, a reconnect): read again, a little
        # later, rather than fail the whole audit. A service not deployed has nothing.
        if service not in services:
            return []
        for attempt in range(READ_ATTEMPTS):
            try:
                return await services[service].all(kind, ALL)
            except TransientError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    return Snapshot(
        sagas={r.state.saga_id: r for r in records},
        stock=await every("inventory", StockItem),
        reservations={r.id: r for r in await every("inventory", Reservation)},
        accounts=await every("payment", Account),
        holds={h.id: h for h in await every("payment", Hold)},
        orders={o.id: o for o in await every("order", OrderRecord)},
        shipments={s.id: s for s in await every("shipping", Shipment)},
        notifications=await every("notification", Notification),
        ledger=await every("account", LedgerAccount),
        postings={e.id: e for e in await every("account", Entry)},
        fences={s: {f.id: f for f in await every(s, Fence)} for s in services},
        locks={s: await every(s, Lock) for s in services},
        waiters={s: await every(s, Waiter) for s in services},
        taken_at=taken_at,
    )


@dataclass(frozen=True, slots=True)
class OrderSaga:
    """A finished order saga, as the per-order checks see it."""

    order_id: str
    record: SagaRecord
    data: OrderSagaData

    @property
    def completed(self) -> bool:
        """True for COMPLETED (the order counts as approved), False for FAILED."""
        return self.record.state.status is SagaStatus.COMPLETED


@dataclass(frozen=True, slots=True)
class TransferSaga:
    """A finished funds transfer, as the transfer checks see it."""

    record: SagaRecord
    data: TransferSagaData
    completed: bool


@dataclass(slots=True)
class Scope:
    """Which sagas the checks may judge, at some moment.

    ``finished``: completed or failed order sagas, checked order by order.
    ``transfers``: completed or failed funds transfers, checked transfer by transfer.
    ``ended``: every finished saga of any definition, needs_attention included.
    ``in_flight``: not finished and not overdue; never reported.
    ``overdue``: not finished although they should be, with why.
    ``attention``: needs_attention sagas with their reason, listed on their own.
    ``resolved``: sagas a person repaired by hand (``sagactl resolve``): what they left in
    the participants is theirs to answer for, so no per-saga check judges it.
    """

    finished: dict[str, OrderSaga] = field(default_factory=dict)
    transfers: dict[str, TransferSaga] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)
    overdue: dict[str, str] = field(default_factory=dict)
    attention: dict[str, str] = field(default_factory=dict)
    resolved: set[str] = field(default_factory=set)


def scope(snapshot: Snapshot, now: float, grace: float) -> Scope:
    """Sort every saga into finished, in flight, overdue or needing attention."""
    out = Scope()
    for saga_id, record in snapshot.sagas.items():
        state = record.state
        if state.finished:
            out.ended.add(saga_id)
        if state.status is SagaStatus.NEEDS_ATTENTION:
            out.attention[saga_id] = attention_reason(record)
        elif state.status is SagaStatus.RESOLVED:
            out.resolved.add(saga_id)
        elif state.finished:
            if state.definition == ORDER_SAGA and isinstance(state.data, OrderSagaData):
                out.finished[saga_id] = OrderSaga(state.data.order_id, record, state.data)
            elif isinstance(state.data, TransferSagaData):
                out.transfers[saga_id] = TransferSaga(
                    record, state.data, state.status is SagaStatus.COMPLETED)
        elif (why := overdue(record, now, grace)) is not None:
            out.overdue[saga_id] = why
        else:
            out.in_flight.add(saga_id)
    return out


def attention_reason(record: SagaRecord) -> str:
    """What failed permanently and, if the saga was undoing a failure, which one."""
    state = record.state
    failure = state.failure
    original = "" if failure is None else f"{failure.reason_code}: {failure.reason}"
    if state.attention is None:
        return original or "needs attention"
    return f"{state.attention} (after {original})" if original else state.attention


def overdue(record: SagaRecord, now: float, grace: float) -> str | None:
    """Why an unfinished saga should have finished by ``now``, or None if it may still run.

    Before the commit point the deadline bounds the saga, so RUNNING past it (plus
    ``grace`` for the timer to fire) is stuck. After it, and while compensating, the saga
    may legitimately retry beyond its deadline, but only while a timer is pending.
    """
    state = record.state
    late = now - state.deadline_at
    if late <= grace:
        return None
    if state.status is SagaStatus.RUNNING:
        return f"still running {late:.0f}s after its deadline"
    wakeup = state.next_wakeup
    if wakeup is None:
        return f"{state.status.value} {late:.0f}s after its deadline, with no timer pending"
    if now - wakeup > grace:
        return f"{state.status.value}, its timer overdue by {now - wakeup:.0f}s"
    return None
