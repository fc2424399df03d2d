"""The auditor: clean on a world made by real sagas, and each corruption reported precisely.

Each test breaks the stores the way one bug would and asserts the exact set of
(invariant, subject) pairs reported. One wrong document can break several redundant
views of the truth (a captured hold of a rejected order is also a hold that its fence
says was undone): where that happens the docstring says why every pair is there.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import replace

import pytest

from audit.dedup import APPLIED_ONCE, FENCES_MATCH, INBOX_MATCHES, ORDER_SAGA_STEPS
from audit.invariants import INVARIANTS, Report, Violation, audit, confirmed
from audit.ledger import MONEY_CONSERVED, STOCK_CONSERVED
from audit.outcomes import (
    APPROVED_ONCE,
    HAS_SAGA,
    NOT_CAPTURED_AND_REJECTED,
    NOTHING_HELD,
    SAGA_AGREES,
    SAGA_FINISHED,
)
from contracts.commands import Operation, Outcome, StepReply
from contracts.reasons import PlatformReason
from engine.state import SagaStatus
from orchestrator.start import split_saga_id
from sagas.order import APPROVED_NOTICE, order_saga
from tests.audit.conftest import Load
from tests.audit.world import COMPLETED, FAILED, Dump
from workers.fence import Fence, FenceState, Run
from workers.inventory import Reservation, StockItem
from workers.notification import Notification
from workers.order import OrderRecord
from workers.payment import Account, Hold
from workers.shipping import Shipment
from workers.store import Doc, DocumentStore, Tx

pytestmark = pytest.mark.timeout(60)


async def audited(load: Load, dump: Dump, now: float | None = None) -> Report:
    """Load a dump into fresh stores and audit them."""
    sagas, services = await load(dump)
    return await audit(sagas, services, now=dump.taken_at + 1 if now is None else now)


def found(report: Report) -> set[tuple[str, str]]:
    """What was reported, as (invariant, subject) pairs."""
    return {(v.invariant, v.subject) for v in report.violations}


def test_the_world_has_finished_orders_of_every_kind(world: Dump) -> None:
    """The starting point really holds completed and failed sagas, with replays recorded."""
    status = {split_saga_id(r.state.saga_id)[1]: r.state.status for r in world.sagas}
    assert status == {**dict.fromkeys(COMPLETED, SagaStatus.COMPLETED),
                      **dict.fromkeys(FAILED, SagaStatus.FAILED)}
    assert [(r.outcome, r.reason_code, r.detail) for r in world.resent] == [
        (Outcome.SUCCEEDED, None, "already confirmed"),
        (Outcome.SUCCEEDED, None, "already tried"),
        (Outcome.SUCCEEDED, None, "already compensated"),
        (Outcome.SUCCEEDED, None, "nothing to undo"),
        (Outcome.REJECTED, PlatformReason.CANCELLED,
         "the step was undone before this command arrived")]


def test_the_rules_cover_every_step_of_the_order_saga() -> None:
    """The dedup rules name exactly the order saga's steps, each with its own service."""
    steps = order_saga().steps
    assert set(ORDER_SAGA_STEPS) == set(steps)
    assert {name: r.service for name, r in ORDER_SAGA_STEPS.items()} == {
        name: s.service for name, s in steps.items()}


def test_every_invariant_is_described() -> None:
    """The report lists each invariant with a sentence saying what it means."""
    assert len(INVARIANTS) == 24
    assert all(description for description in INVARIANTS.values())


async def test_a_consistent_world_is_clean(world: Dump, load: Load) -> None:
    """Real completed and failed sagas, replays and an empty rollback violate nothing."""
    report = await audited(load, world)
    assert report.violations == []
    assert report.needs_attention == []
    assert report.checked_sagas == len(COMPLETED) + len(FAILED)
    assert report.dead_letters is None


async def test_stock_appearing_from_nowhere_is_reported_against_its_sku(
        world: Dump, load: Load) -> None:
    """One unit of SKU-A on hand that nobody received breaks stock conservation, only there."""
    item = world.doc("inventory", StockItem, "SKU-A")
    report = await audited(load, world.put(
        "inventory", item.model_copy(update={"on_hand": item.on_hand + 1})))
    assert found(report) == {(STOCK_CONSERVED, "SKU-A")}
    assert report.violations[0].subject_kind == "sku"


async def test_money_disappearing_is_reported_against_its_customer(
        world: Dump, load: Load) -> None:
    """A balance short of what was deposited and captured breaks money conservation."""
    account = world.doc("payment", Account, "alice")
    report = await audited(load, world.put(
        "payment", account.model_copy(update={"balance": account.balance - 1})))
    assert found(report) == {(MONEY_CONSERVED, "alice")}


async def test_stock_still_reserved_for_a_finished_saga(world: Dump, load: Load) -> None:
    """A held reservation for the refused order (counted in ``reserved``, so the SKU's books
    balance) is still reserved for a finished saga; no fence and no inbox record explain it."""
    item = world.doc("inventory", StockItem, "SKU-A")
    held = Reservation(id="refused", lines=(), state="held", updated_at=world.taken_at)
    dump = world.put("inventory", held.model_copy(update={
        "lines": world.doc("inventory", Reservation, "ok-1").lines}))
    dump = dump.put("inventory", item.model_copy(update={"reserved": item.reserved + 2}))
    assert found(await audited(load, dump)) == {
        (NOTHING_HELD, "refused"), (FENCES_MATCH, "refused"), (INBOX_MATCHES, "refused")}


async def test_a_captured_hold_of_a_rejected_order(world: Dump, load: Load) -> None:
    """Capturing the released hold of the out-of-stock order, balance and all, is reported as
    charged-and-rejected; its fence and inbox say it was released, hence the other two."""
    hold = world.doc("payment", Hold, "no-stock")
    account = world.doc("payment", Account, hold.customer_id)
    dump = world.put("payment", hold.model_copy(update={"state": "captured"}))
    dump = dump.put("payment", account.model_copy(update={"balance": account.balance - hold.amount}))
    assert found(await audited(load, dump)) == {
        (NOT_CAPTURED_AND_REJECTED, "no-stock"), (FENCES_MATCH, "no-stock"),
        (INBOX_MATCHES, "no-stock")}


async def test_a_lost_shipment_of_an_approved_order(world: Dump, load: Load) -> None:
    """An approved order without its shipment is reported; its fence and inbox say it was
    booked."""
    report = await audited(load, world.without("shipping", Shipment, "ok-1"))
    assert found(report) == {(APPROVED_ONCE, "ok-1"), (FENCES_MATCH, "ok-1"),
                             (INBOX_MATCHES, "ok-1")}


async def test_a_second_notification(world: Dump, load: Load) -> None:
    """Telling a customer twice that the order is confirmed is reported, and only that."""
    note = world.doc("notification", Notification, f"ok-2:{APPROVED_NOTICE}")
    report = await audited(load, world.put(
        "notification", note.model_copy(update={"id": "ok-2:approved:again"})))
    assert found(report) == {(APPROVED_ONCE, "ok-2")}


async def test_an_inbox_success_without_its_effect(world: Dump, load: Load) -> None:
    """An inbox record claiming a shipment was booked for the out-of-stock order, which never
    got one, is reported, and only that."""
    reply = StepReply(saga_id="order:no-stock", step="schedule_shipment",
                      operation=Operation.FORWARD, outcome=Outcome.SUCCEEDED,
                      detail="shipment SCHEDULED")
    # The fence says "undone before it ran", which fits no shipment; its record does not.
    record = Fence(id="order:no-stock:schedule_shipment", state=FenceState.COMPENSATED, runs=(
        Run(message_id="order:no-stock:schedule_shipment:forward:1",
            reply=reply.model_dump_json(), at=world.taken_at),))
    assert found(await audited(load, world.put("shipping", record))) == {
        (INBOX_MATCHES, "no-stock")}


async def test_a_command_applied_twice(world: Dump, load: Load) -> None:
    """Two inbox records of a confirm that both ran (neither a replay) mean it was applied
    twice, whatever the stock now says."""
    reply = StepReply(saga_id="order:ok-2", step="reserve_stock", operation=Operation.CONFIRM,
                      outcome=Outcome.SUCCEEDED, detail="committed 2 units")
    fence = world.doc("inventory", Fence, "order:ok-2:reserve_stock")
    twice = fence.model_copy(update={"runs": (*fence.runs, Run(
        message_id="order:ok-2:reserve_stock:confirm:2", reply=reply.model_dump_json(),
        at=world.taken_at))})
    assert found(await audited(load, world.put("inventory", twice))) == {
        (APPLIED_ONCE, "ok-2")}


async def test_a_deleted_fence(world: Dump, load: Load) -> None:
    """A captured hold whose fence is gone is reported, and only that: the fence, and the
    inbox records that went with it."""
    report = await audited(load, world.without("payment", Fence, "order:ok-2:hold_funds"))
    assert found(report) == {(FENCES_MATCH, "ok-2"), (INBOX_MATCHES, "ok-2")}


async def test_a_saga_stuck_running_past_its_deadline(world: Dump, load: Load) -> None:
    """A saga still RUNNING an hour after its deadline is reported, and its half-done effects
    are not judged as if it had finished."""
    state = world.saga("ok-3")
    stuck = replace(state, status=SagaStatus.RUNNING, deadline_at=world.taken_at - 3600)
    report = await audited(load, world.with_saga(stuck))
    assert found(report) == {(SAGA_FINISHED, "order:ok-3")}
    assert "after its deadline" in report.violations[0].detail


async def test_a_saga_in_flight_is_not_judged(world: Dump, load: Load) -> None:
    """A saga before its deadline, its shipment not booked yet, is in flight: not reported."""
    state = world.saga("ok-3")
    running = replace(state, status=SagaStatus.RUNNING, deadline_at=world.taken_at + 60)
    dump = world.with_saga(running).without("shipping", Shipment, "ok-3")
    report = await audited(load, dump)
    assert report.violations == []
    assert report.in_flight == ["order:ok-3"]


async def test_a_committed_saga_whose_timer_is_long_overdue(world: Dump, load: Load) -> None:
    """Past the commit point a saga may outlive its deadline while it retries, but not with
    a timer nobody fired for an hour."""
    state = world.saga("ok-3")
    stuck = replace(state, status=SagaStatus.COMMITTED, deadline_at=world.taken_at - 7200,
                    ops={})
    report = await audited(load, world.with_saga(stuck))
    assert found(report) == {(SAGA_FINISHED, "order:ok-3")}
    assert "no timer pending" in report.violations[0].detail


async def test_an_approved_order_of_a_failed_saga(world: Dump, load: Load) -> None:
    """The order service approving the order whose payment was declined disagrees with the
    saga; nothing in the order service's own fences and inbox explains the approval."""
    order = world.doc("order", OrderRecord, "no-money")
    report = await audited(load, world.put("order", order.model_copy(update={"status": "APPROVED"})))
    assert found(report) == {(SAGA_AGREES, "no-money"), (FENCES_MATCH, "no-money"),
                             (INBOX_MATCHES, "no-money")}


async def test_an_order_record_without_any_saga(world: Dump, load: Load) -> None:
    """An order the order service knows but no saga ever ran is reported, and only that."""
    ghost = world.doc("order", OrderRecord, "ok-1").model_copy(update={"id": "ghost"})
    assert found(await audited(load, world.put("order", ghost))) == {(SAGA_AGREES, "ghost")}


async def test_effects_without_any_saga(world: Dump, load: Load) -> None:
    """A shipment and a fence of an order no saga knows are reported, each by the id it
    carries: the order id of the shipment, the saga id of the fence."""
    shipment = world.doc("shipping", Shipment, "ok-1").model_copy(update={"id": "ghost"})
    fence = world.doc("shipping", Fence, "order:ok-1:schedule_shipment").model_copy(
        update={"id": "order:ghost:schedule_shipment", "runs": ()})
    report = await audited(load, world.put("shipping", shipment).put("shipping", fence))
    assert found(report) == {(HAS_SAGA, "ghost"), (HAS_SAGA, "order:ghost")}
    assert len(report.violations) == 2


async def test_a_missing_order_record_although_create_succeeded(
        world: Dump, load: Load) -> None:
    """A failed saga whose create_order succeeded must have an order record, REJECTED; the
    order service's inbox says it created and rejected one. (Its fence alone could be an
    empty rollback: a reject that came before the create.)"""
    report = await audited(load, world.without("order", OrderRecord, "stranger"))
    assert found(report) == {(SAGA_AGREES, "stranger"), (INBOX_MATCHES, "stranger")}
    assert any("create_order succeeded" in v.detail for v in report.violations)


async def test_needs_attention_is_listed_apart_not_as_violations(
        world: Dump, load: Load) -> None:
    """A saga that needs attention, its notification never sent, is listed with its reason
    and judged by no other invariant."""
    attention = replace(world.saga("ok-3"), status=SagaStatus.NEEDS_ATTENTION,
                        attention="notify_customer forward failed permanently: SERVICE_ERROR x")
    dump = world.with_saga(attention).without(
        "notification", Notification, f"ok-3:{APPROVED_NOTICE}")
    undoing = replace(world.saga("no-money"), status=SagaStatus.NEEDS_ATTENTION,
                      attention="reserve_stock compensate failed permanently: SERVICE_ERROR y")
    report = await audited(load, dump.with_saga(undoing))
    assert report.violations == []
    assert report.needs_attention == ["order:no-money", "order:ok-3"]
    assert report.attention_reasons == {
        "order:ok-3": "notify_customer forward failed permanently: SERVICE_ERROR x",
        "order:no-money": "reserve_stock compensate failed permanently: SERVICE_ERROR y "
                    "(after PAYMENT_DECLINED: 500.00 needed, 12.00 available)"}


class MovingInventory:
    """An inventory store whose first read of the stock catches SKU-A mid-change."""

    def __init__(self, inner: DocumentStore) -> None:
        self.inner = inner
        self.stock_reads = 0

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """Delegate."""
        return self.inner.transaction()

    async def get[T: Doc](self, kind: type[T], id: str) -> T | None:
        """Delegate."""
        return await self.inner.get(kind, id)

    async def put(self, doc: Doc) -> None:
        """Delegate."""
        await self.inner.put(doc)

    async def ensure_indexes(self, expiring: tuple[str, ...]) -> None:
        """Delegate."""
        await self.inner.ensure_indexes(expiring)

    async def all[T: Doc](self, kind: type[T], limit: int = 100_000) -> list[T]:
        """The stored documents, except for the first read of the stock."""
        docs = await self.inner.all(kind, limit)
        if kind is StockItem:
            self.stock_reads += 1
            if self.stock_reads == 1:
                return [d.model_copy(update={"on_hand": 0}) if d.id == "SKU-A" else d
                        for d in docs]
        return docs


async def test_a_live_system_is_not_reported_for_a_torn_read(world: Dump, load_memory: Load) -> None:
    """A violation that a second, fresh read no longer shows was the system moving between two
    reads, and is dropped."""
    sagas, services = await load_memory(world)
    moving = MovingInventory(services["inventory"])
    report = await audit(sagas, {**services, "inventory": moving}, now=world.taken_at + 1)
    assert moving.stock_reads == 2
    assert report.violations == []


def test_a_ledger_error_is_confirmed_by_its_imbalance_not_its_numbers() -> None:
    """Between two reads of a live system the counts move; a real error keeps its imbalance,
    while a torn read gives another one each time."""
    def ledger(on_hand: int, sold: int) -> Report:
        off = 10 - on_hand - sold
        return Report(violations=[Violation(STOCK_CONSERVED, "SKU-A", f"{on_hand} + {sold}",
                                            "sku", off)])

    assert confirmed(ledger(8, 5), ledger(6, 7)).violations == ledger(6, 7).violations
    assert confirmed(ledger(8, 5), ledger(8, 3)).violations == []
