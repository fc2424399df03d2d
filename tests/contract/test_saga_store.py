"""One contract for every SagaStore adapter: the in-memory one and MongoDB."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts.commands import Operation, Outcome
from contracts.orders import OrderItem, OrderReason
from contracts.topology import Topology
from engine.decide import start
from engine.definition import Failure
from engine.state import AttemptError, OpState, OpStatus, SagaState, SagaStatus
from infra.errors import VersionConflict
from orchestrator.outbox import outbox_messages
from orchestrator.registry import DefinitionRegistry
from orchestrator.serde import Undecodable
from orchestrator.store import OutboxMessage, SagaQuery, SagaStore, StoreHealth
from orchestrator.store_memory import MemorySagaStore
from orchestrator.store_mongo import MongoSagaStore
from sagas.order import OrderSagaData, order_saga

DEFINITION = order_saga()
TOPOLOGY = Topology("contract")
T0 = 1_000.0
# A saga started at ``t`` next wakes up when its first command's reply is due.
STEP_TIMEOUT = 10.0

Saga = SagaState[OrderSagaData]


def data(order_id: str) -> OrderSagaData:
    """An order of two lines, with a total that only survives as an exact Decimal."""
    items = (OrderItem(sku="SKU-1", quantity=2, unit_price=Decimal("9.99")),
             OrderItem(sku="SKU-2", quantity=1, unit_price=Decimal("0.01")))
    return OrderSagaData(order_id=order_id, customer_id="cust-1", items=items,
                         total=Decimal("19.99"))


def started(saga_id: str, now: float = T0) -> tuple[Saga, tuple[OutboxMessage, ...]]:
    """A fresh saga as the engine starts it, with the outbox the runner would store."""
    decision = start(DEFINITION, saga_id, data(saga_id), now)
    return decision.state, outbox_messages(decision, TOPOLOGY, None, now, None,
                                           TOPOLOGY.orders_exchange)


def message(saga_id: str, n: int, created_at: float) -> OutboxMessage:
    """An outbox entry with every optional field set."""
    return OutboxMessage(f"{saga_id}:m{n}", TOPOLOGY.commands_exchange, "inventory",
                         "inventory.prepare", f'{{"n": {n}}}', saga_id, f"cause-{n}", created_at,
                         traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def finished(state: Saga, at: float) -> Saga:
    """The same saga, completed: it has no timer any more."""
    return replace(state, status=SagaStatus.COMPLETED, updated_at=at)


@pytest.fixture(params=["memory", "mongo"])
def unindexed_store(request: pytest.FixtureRequest) -> MemorySagaStore | MongoSagaStore:
    """Each adapter; MongoDB fixtures are only set up for the mongo case."""
    registry = DefinitionRegistry([DEFINITION])
    if request.param == "memory":
        return MemorySagaStore(registry)
    # Resolved here, in a synchronous fixture: an async fixture cannot set up another one.
    client: AsyncMongoClient[Any] = request.getfixturevalue("mongo_client")
    name: str = request.getfixturevalue("mongo_db_name")
    return MongoSagaStore(client[name], registry)


@pytest.fixture
async def store(unindexed_store: MemorySagaStore | MongoSagaStore) -> SagaStore:
    """The adapter under test, with its indexes in place."""
    await unindexed_store.ensure_indexes()
    return unindexed_store


# --- create and load -------------------------------------------------------------------------


async def test_create_then_load_round_trips_state_and_outbox(store: SagaStore) -> None:
    """A created saga loads back equal, field for field, with its outbox in order."""
    state, outbox = started("o-1")
    extra = message("o-1", 1, T0)
    assert await store.create(state, (*outbox, extra)) is True
    record = await store.load("o-1")
    assert record is not None
    assert record.state == state
    assert record.outbox == (*outbox, extra)
    assert record.state.data.total == Decimal("19.99")


async def test_state_with_errors_failure_and_attention_round_trips(store: SagaStore) -> None:
    """Every optional part of a state (errors, outcomes, failure, attention) survives storage."""
    state, _ = started("o-1")
    undo = OpState(status=OpStatus.FAILED, attempt=2, message_id="o-1:reserve_stock:compensate:2",
                   due_at=None, started_at=T0 + 1, finished_at=T0 + 2,
                   outcome=Outcome.PERMANENT_ERROR,
                   errors=(AttemptError(1, "retryable_error", "timeout", T0 + 1.5),
                           AttemptError(2, "permanent_error", "no held reservation", T0 + 2)))
    decided = replace(state, status=SagaStatus.NEEDS_ATTENTION, cursor=3,
                      ops={**state.ops, ("reserve_stock", Operation.COMPENSATE): undo},
                      failure=Failure(OrderReason.PAYMENT_DECLINED, "12.00 needed", "hold_funds"),
                      attention="release of stock failed")
    assert await store.create(decided, ())
    record = await store.load("o-1")
    assert record is not None
    assert record.state == decided
    assert record.outbox == ()


async def test_load_of_unknown_id_is_none(store: SagaStore) -> None:
    """Loading a saga that was never created gives None, not an error."""
    assert await store.load("nope") is None


async def test_create_of_existing_id_returns_false_and_changes_nothing(store: SagaStore) -> None:
    """A second create with the same id is refused and leaves the first saga untouched."""
    state, outbox = started("o-1")
    assert await store.create(state, outbox)
    other = replace(state, status=SagaStatus.FAILED, updated_at=T0 + 5)
    assert await store.create(other, (message("o-1", 9, T0),)) is False
    record = await store.load("o-1")
    assert record is not None
    assert record.state == state
    assert record.outbox == outbox


# --- save ------------------------------------------------------------------------------------


async def test_save_with_current_version_bumps_version_and_appends_outbox(store: SagaStore) -> None:
    """A save at the version read stores the state at version + 1 and appends its messages."""
    state, outbox = started("o-1")
    await store.create(state, outbox)
    changed = replace(state, cursor=1, updated_at=T0 + 1)
    appended = (message("o-1", 1, T0 + 1), message("o-1", 2, T0 + 1))
    saved = await store.save(changed, 0, appended)
    assert saved == replace(changed, version=1)
    record = await store.load("o-1")
    assert record is not None
    assert record.state == saved
    assert record.outbox == (*outbox, *appended)

    again = await store.save(replace(saved, cursor=2), 1, ())
    assert again.version == 2
    record = await store.load("o-1")
    assert record is not None
    assert record.state == again
    assert record.outbox == (*outbox, *appended)


async def test_save_with_stale_version_raises_and_loses_no_update(store: SagaStore) -> None:
    """Two writers load the same version: the second save fails and the first one's change stays."""
    state, outbox = started("o-1")
    await store.create(state, outbox)
    first = await store.load("o-1")
    second = await store.load("o-1")
    assert first is not None
    assert second is not None
    won = await store.save(replace(first.state, cursor=1), first.state.version,
                           (message("o-1", 1, T0),))
    with pytest.raises(VersionConflict):
        await store.save(replace(second.state, cursor=2), second.state.version,
                         (message("o-1", 2, T0),))
    record = await store.load("o-1")
    assert record is not None
    assert record.state == won
    assert record.state.cursor == 1
    assert [m.message_id for m in record.outbox] == [*(m.message_id for m in outbox), "o-1:m1"]


async def test_save_of_a_saga_never_created_raises_version_conflict(store: SagaStore) -> None:
    """Saving creates nothing: a missing saga is a conflict, and it stays missing."""
    state, _ = started("ghost")
    with pytest.raises(VersionConflict):
        await store.save(state, 0, ())
    assert await store.load("ghost") is None


# --- timers ----------------------------------------------------------------------------------


async def test_due_returns_only_passed_timers_earliest_first_within_limit(store: SagaStore) -> None:
    """Sagas whose wakeup is at or before now come back earliest first, at most ``limit``."""
    for saga_id, at in [("late", T0 + 30), ("first", T0), ("second", T0 + 10), ("future", T0 + 100)]:
        state, outbox = started(saga_id, at)
        await store.create(state, outbox)
    now = T0 + 30 + STEP_TIMEOUT  # exactly the wakeup of "late"
    assert await store.due(now, 10) == ["first", "second", "late"]
    assert await store.due(now, 2) == ["first", "second"]
    assert await store.due(T0 + STEP_TIMEOUT - 0.001, 10) == []


def waiting_for(state: Saga, *holders: str) -> Saga:
    """The saga with its first step waiting for a lock those sagas hold."""
    key = ("create_order", Operation.FORWARD)
    op = replace(state.ops[key], waiting_on=holders, lock="order:o")
    return replace(state, ops={**state.ops, key: op})


async def test_waiting_lists_the_running_sagas_that_wait_for_a_lock(store: SagaStore) -> None:
    """Saved with a wait, a saga is listed (its wait round-trips); saved without, or no
    longer running, it is not."""
    for saga_id in ("w-1", "w-2", "idle"):
        state, outbox = started(saga_id)
        await store.create(waiting_for(state, "x") if saga_id == "w-1" else state, outbox)
    w2 = await store.load("w-2")
    assert w2 is not None
    await store.save(waiting_for(w2.state, "w-1", "x"), w2.state.version, ())
    found = {r.state.saga_id: r.state.lock_waits for r in await store.waiting(10)}
    assert found == {"w-1": (("create_order", "order:o", ("x",)),),
                     "w-2": (("create_order", "order:o", ("w-1", "x")),)}
    w1 = await store.load("w-1")
    assert w1 is not None
    await store.save(waiting_for(w1.state), w1.state.version, ())  # the wait is over
    w2 = await store.load("w-2")
    assert w2 is not None
    await store.save(replace(w2.state, status=SagaStatus.COMPENSATING), w2.state.version, ())
    assert await store.waiting(10) == []


async def test_finished_saga_is_never_due(store: SagaStore) -> None:
    """A saga saved as completed loses its timer, and one created completed never had one."""
    running, outbox = started("was-running")
    await store.create(running, outbox)
    await store.save(finished(running, T0 + 1), 0, ())
    done, _ = started("born-done")
    await store.create(finished(done, T0), ())
    still, outbox = started("still-running")
    await store.create(still, outbox)
    assert await store.due(T0 + 10_000, 10) == ["still-running"]


async def test_save_moves_the_timer(store: SagaStore) -> None:
    """A save that pushes the next wakeup later takes the saga out of due() until then."""
    state, outbox = started("o-1")
    await store.create(state, outbox)
    later = replace(state, ops={key: replace(op, due_at=T0 + 50) for key, op in state.ops.items()})
    await store.save(later, 0, ())
    assert await store.due(T0 + STEP_TIMEOUT, 10) == []
    assert await store.due(T0 + 50, 10) == ["o-1"]


# --- outbox relay ----------------------------------------------------------------------------


async def test_pending_outbox_returns_sagas_with_old_entries(store: SagaStore) -> None:
    """Only sagas holding an entry written up to ``created_before`` are pending, within limit."""
    for saga_id, at in [("old", T0), ("older", T0 - 5), ("new", T0 + 20)]:
        state, _ = started(saga_id, at)
        await store.create(state, (message(saga_id, 1, at),))
    empty, _ = started("empty", T0 - 50)
    await store.create(empty, ())
    pending = await store.pending_outbox(T0 + 1, 10)
    assert sorted(r.state.saga_id for r in pending) == ["old", "older"]
    assert all(r.outbox == (message(r.state.saga_id, 1, r.state.created_at),) for r in pending)
    assert len(await store.pending_outbox(T0 + 1, 1)) == 1
    assert await store.pending_outbox(T0 - 10, 10) == []


async def test_pending_outbox_pages_through_every_saga_by_id(store: SagaStore) -> None:
    """A relay pages with ``after``: every pending saga comes once, in id order."""
    for saga_id in ["c", "a", "e", "b", "d"]:
        state, _ = started(saga_id)
        await store.create(state, (message(saga_id, 1, T0),))
    seen, after = [], None
    while page := await store.pending_outbox(T0 + 1, 2, after):
        seen.append([r.state.saga_id for r in page])
        after = page[-1].state.saga_id
    assert seen == [["a", "b"], ["c", "d"], ["e"]]


async def test_clear_outbox_removes_only_named_entries_and_keeps_version(store: SagaStore) -> None:
    """Clearing drops exactly the named messages, never bumps versions, and ignores unknown ids."""
    a, _ = started("a")
    b, _ = started("b")
    await store.create(a, (message("a", 1, T0), message("a", 2, T0), message("a", 3, T0)))
    await store.create(b, (message("b", 1, T0),))
    saved = await store.save(replace(a, cursor=1), 0, ())
    await store.clear_outbox([("a", ["a:m1", "a:m3", "a:unknown"]), ("missing", ["x"])])
    record_a = await store.load("a")
    record_b = await store.load("b")
    assert record_a is not None
    assert record_b is not None
    assert record_a.outbox == (message("a", 2, T0),)
    assert record_a.state == saved
    assert record_a.state.version == 1
    assert record_b.outbox == (message("b", 1, T0),)
    assert record_b.state.version == 0

    await store.clear_outbox([])
    await store.clear_outbox([("a", ["a:m2"]), ("b", ["b:m1"])])
    assert await store.pending_outbox(T0 + 1_000, 10) == []


async def test_save_after_clear_still_needs_the_version_read(store: SagaStore) -> None:
    """A relay clearing the outbox does not invalidate a writer's version, nor refresh a stale one."""
    state, outbox = started("o-1")
    await store.create(state, outbox)
    await store.clear_outbox([("o-1", [m.message_id for m in outbox])])
    saved = await store.save(replace(state, cursor=1), 0, (message("o-1", 1, T0 + 1),))
    assert saved.version == 1
    with pytest.raises(VersionConflict):
        await store.save(replace(state, cursor=2), 0, ())
    record = await store.load("o-1")
    assert record is not None
    assert record.outbox == (message("o-1", 1, T0 + 1),)


# --- queries ---------------------------------------------------------------------------------


async def populate(store: SagaStore) -> None:
    """Five sagas in three states, created a second apart in the order listed."""
    statuses = [("s0", SagaStatus.RUNNING), ("s1", SagaStatus.COMPLETED), ("s2", SagaStatus.FAILED),
                ("s3", SagaStatus.COMPLETED), ("s4", SagaStatus.RUNNING)]
    for i, (saga_id, status) in enumerate(statuses):
        state, _ = started(saga_id, T0 + i)
        await store.create(replace(state, status=status), ())


async def test_find_filters_by_status_newest_first(store: SagaStore) -> None:
    """find() keeps the asked states, orders by creation time descending and honours limit."""
    await populate(store)
    ids = [r.state.saga_id for r in await store.find(None, 10)]
    assert ids == ["s4", "s3", "s2", "s1", "s0"]
    done = await store.find([SagaStatus.COMPLETED, SagaStatus.FAILED], 10)
    assert [r.state.saga_id for r in done] == ["s3", "s2", "s1"]
    assert [r.state.saga_id for r in await store.find([SagaStatus.RUNNING], 1)] == ["s4"]
    assert await store.find([SagaStatus.COMPENSATING], 10) == []
    assert await store.find([], 10) == []


async def test_search_filters_and_pages_newest_first(store: SagaStore) -> None:
    """Filters combine; the cursor pages through equal creation times without a gap."""
    await populate(store)
    for twin in ("t-a", "t-b"):  # two sagas created at the same instant
        state, _ = started(twin, T0 + 10)
        await store.create(state, ())

    async def ids(**query: Any) -> list[str]:
        return [r.state.saga_id for r in await store.search(SagaQuery(**query))]

    assert await ids() == ["t-b", "t-a", "s4", "s3", "s2", "s1", "s0"]
    assert await ids(statuses=frozenset({SagaStatus.COMPLETED, SagaStatus.FAILED})) == [
        "s3", "s2", "s1"]
    assert await ids(since=T0 + 3) == ["t-b", "t-a", "s4", "s3"]
    assert await ids(text="T-") == ["t-b", "t-a"]  # a case-insensitive substring
    assert await ids(text=".*") == []  # matched literally, never as a pattern
    assert await ids(definition="order", limit=2) == ["t-b", "t-a"]
    assert await ids(definition="transfer") == []
    assert await ids(after=(T0 + 10, "t-b"), limit=2) == ["t-a", "s4"]
    assert await ids(after=(T0 + 4, "s4"), statuses=frozenset({SagaStatus.RUNNING})) == ["s0"]


async def test_count_by_status_counts_every_saga(store: SagaStore) -> None:
    """The counts per state add up to every saga, and states with none are absent."""
    assert await store.count_by_status() == {}
    await populate(store)
    assert await store.count_by_status() == {SagaStatus.RUNNING: 2, SagaStatus.COMPLETED: 2,
                                             SagaStatus.FAILED: 1}


async def test_health_of_an_empty_store_is_all_zero(store: SagaStore) -> None:
    """No sagas: nothing unfinished, overdue or waiting in an outbox."""
    assert await store.health(T0) == StoreHealth()


async def test_health_counts_unfinished_overdue_and_the_outbox_backlog(store: SagaStore) -> None:
    """The oldest unfinished saga ignores finished ones; overdue means unfinished past the
    deadline; the backlog counts every unconfirmed outbox entry and finds the oldest."""
    await populate(store)  # s0 (T0) and s4 (T0+4) running; s1..s3 finished
    old, _ = started("s-old", T0 - 50)
    await store.create(replace(old, status=SagaStatus.COMPLETED), (message("s-old", 1, T0 - 50),))
    late, _ = started("s-late", T0 + 5)
    await store.create(replace(late, status=SagaStatus.COMPENSATING, deadline_at=T0 + 6),
                       (message("s-late", 1, T0 + 7), message("s-late", 2, T0 + 8)))

    health = await store.health(T0 + 10)

    # Only what the gauges show: finished sagas kept for their retention are not read.
    assert health.by_status == {SagaStatus.RUNNING: 2, SagaStatus.COMMITTED: 0,
                                SagaStatus.COMPENSATING: 1, SagaStatus.NEEDS_ATTENTION: 0}
    assert health.oldest_unfinished_at == T0
    assert health.overdue == 1  # s-late; s0 and s4 have the default deadline, far away
    assert health.outbox_messages == 3
    assert health.oldest_outbox_at == T0 - 50
    await store.clear_outbox([("s-old", ["s-old:m1"])])
    after = await store.health(T0 + 10)
    assert (after.outbox_messages, after.oldest_outbox_at) == (2, T0 + 7)


# --- quarantine ------------------------------------------------------------------------------


def _unregistered(store: SagaStore, version: int = 7) -> None:
    """Swap the store's registry for one without ``version`` of the order saga's successor:
    documents written under DEFINITION then name a version nobody registered."""
    store.definitions = DefinitionRegistry([replace(DEFINITION, version=version)])


async def test_a_saga_of_an_unregistered_version_is_quarantined_not_stuck(
        store: SagaStore) -> None:
    """Loading it says why; once quarantined it has no timer, no listing returns it as a
    saga, and the quarantine listing names it with its reason."""
    state, outbox = started("lost")
    healthy, _ = started("fine", T0 + 1)
    assert await store.create(state, outbox)
    _unregistered(store)
    assert await store.create(replace(healthy, definition_version=7), ())
    with pytest.raises(Undecodable) as caught:
        await store.load("lost")
    assert caught.value.reason == "unknown_definition"
    await store.quarantine("lost", caught.value.reason, caught.value.detail, T0 + 5)
    assert await store.due(T0 + 10_000, 10) == ["fine"]
    assert [r.state.saga_id for r in await store.find(None, 10)] == ["fine"]
    [q] = await store.quarantined(10)
    assert (q.saga_id, q.reason, q.definition_version, q.at) == (
        "lost", "unknown_definition", DEFINITION.version, T0 + 5)
    health = await store.health(T0 + 10)
    assert health.quarantined == {"unknown_definition": 1}
    assert SagaStatus.QUARANTINED not in health.by_status  # counted by reason instead


async def test_the_relay_skips_and_quarantines_what_it_cannot_decode(store: SagaStore) -> None:
    """One undecodable saga among the pending outboxes does not stop the others."""
    lost, lost_outbox = started("lost")
    assert await store.create(lost, lost_outbox)
    _unregistered(store)
    fine, fine_outbox = started("fine", T0 + 1)
    assert await store.create(replace(fine, definition_version=7), fine_outbox)
    pending = await store.pending_outbox(float("inf"), 10)
    assert [r.state.saga_id for r in pending] == ["fine"]
    assert [q.saga_id for q in await store.quarantined(10)] == ["lost"]
    assert await store.pending_outbox(float("inf"), 10) == pending


async def test_a_save_from_a_state_read_before_the_quarantine_fails(store: SagaStore) -> None:
    """A quarantine keeps the version, so the version alone would let a state held from
    before it (an orchestrator's cache) overwrite it: the save must fail instead."""
    state, outbox = started("held")
    assert await store.create(state, outbox)
    record = await store.load("held")
    assert record is not None
    await store.quarantine("held", "unknown_definition", "set aside elsewhere", T0 + 5)
    with pytest.raises(VersionConflict):
        await store.save(replace(record.state, cursor=1), record.state.version, ())
    assert [q.saga_id for q in await store.quarantined(10)] == ["held"]
