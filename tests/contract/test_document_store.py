"""One contract for every DocumentStore adapter: the in-memory one and MongoDB."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from infra.errors import DuplicateKey, VersionConflict
from workers.store import Change, Doc, DocumentStore
from workers.store_memory import MemoryDocumentStore
from workers.store_mongo import MongoDocumentStore


class Counter(Doc):
    """A counter that concurrent transactions increment."""

    collection = "contract_counters"
    value: int = 0


class Note(Doc):
    """A document with nested and fractional fields, to check they round-trip."""

    collection = "contract_notes"
    text: str
    tags: tuple[str, ...] = ()
    score: float = 0.0


class Applied(Doc):
    """Marks one increment as done, so a retried increment is applied once (an inbox)."""

    collection = "contract_applied"


class Failure(Exception):
    """Raised by a test inside a transaction to abort it."""


Opener = Callable[[], AbstractAsyncContextManager[DocumentStore]]


@pytest.fixture(params=["memory", "mongo"])
def open_store(request: pytest.FixtureRequest) -> Opener:
    """Opens a handle on one shared store of each adapter; MongoDB is only set up for mongo.

    Every MongoDB handle has a client of its own. The mongoeco stand-in leaves a session
    whose commit failed inside its stale transaction, and the driver reuses that session,
    so a transaction retried after a conflict must not share the failed one's client.
    """
    if request.param == "memory":
        memory = MemoryDocumentStore()

        @asynccontextmanager
        async def shared() -> AsyncIterator[DocumentStore]:
            yield memory

        return shared
    url: str = request.getfixturevalue("mongo_urls")["orchestrator"]
    database: str = request.getfixturevalue("mongo_db_name")

    @asynccontextmanager
    async def connected() -> AsyncIterator[DocumentStore]:
        client: AsyncMongoClient[Any] = AsyncMongoClient(url, serverSelectionTimeoutMS=5000)
        try:
            yield MongoDocumentStore(client, database)
        finally:
            await client.close()

    return connected


@pytest.fixture
async def store(open_store: Opener) -> AsyncIterator[DocumentStore]:
    """The adapter under test."""
    async with open_store() as opened:
        yield opened


NOTE = Note(id="n-1", text="hello", tags=("a", "b"), score=0.1)


# --- reads and writes ------------------------------------------------------------------------


async def test_insert_is_visible_in_its_transaction_and_after_commit(store: DocumentStore) -> None:
    """An insert reads back inside its own transaction and, once committed, from the store."""
    async with store.transaction() as tx:
        await tx.insert(NOTE)
        assert await tx.get(Note, "n-1") == NOTE
    assert await store.get(Note, "n-1") == NOTE
    async with store.transaction() as tx:
        assert await tx.get(Note, "n-1") == NOTE


async def test_get_of_missing_id_or_other_kind_is_none(store: DocumentStore) -> None:
    """Ids are per collection: a document is not found under another kind."""
    await store.put(NOTE)
    assert await store.get(Note, "n-2") is None
    assert await store.get(Counter, "n-1") is None
    async with store.transaction() as tx:
        assert await tx.get(Counter, "n-1") is None


async def test_exception_in_transaction_rolls_back_every_write(store: DocumentStore) -> None:
    """An exception inside the block leaves no insert and no update behind."""
    await store.put(Counter(id="c"))
    with pytest.raises(Failure):
        async with store.transaction() as tx:
            await tx.insert(NOTE)
            counter = await tx.get(Counter, "c")
            assert counter is not None
            await tx.update(counter.model_copy(update={"value": 5}))
            raise Failure
    assert await store.get(Note, "n-1") is None
    assert await store.get(Counter, "c") == Counter(id="c")


async def test_insert_of_existing_id_raises_duplicate_key(store: DocumentStore) -> None:
    """Inserting a taken id fails (at once or at commit) and the transaction writes nothing."""
    await store.put(NOTE)
    with pytest.raises(DuplicateKey):
        async with store.transaction() as tx:
            await tx.insert(Counter(id="other"))
            await tx.insert(Note(id="n-1", text="again"))
    assert await store.get(Note, "n-1") == NOTE
    assert await store.get(Counter, "other") is None


async def test_insert_twice_in_one_transaction_raises_duplicate_key(store: DocumentStore) -> None:
    """One transaction cannot insert the same id twice."""
    with pytest.raises(DuplicateKey):
        async with store.transaction() as tx:
            await tx.insert(NOTE)
            await tx.insert(NOTE)
    assert await store.get(Note, "n-1") is None


async def test_update_with_current_version_returns_next_version(store: DocumentStore) -> None:
    """Each update bumps the version by one, is read back in the transaction and committed."""
    await store.put(Counter(id="c"))
    async with store.transaction() as tx:
        counter = await tx.get(Counter, "c")
        assert counter is not None
        first = await tx.update(counter.model_copy(update={"value": 1}))
        assert first == Counter(id="c", value=1, version=1)
        assert await tx.get(Counter, "c") == first
        second = await tx.update(first.model_copy(update={"value": 2}))
        assert second.version == 2
    assert await store.get(Counter, "c") == Counter(id="c", value=2, version=2)


async def test_update_of_document_inserted_in_same_transaction(store: DocumentStore) -> None:
    """A document inserted and then updated in one transaction commits in its updated form."""
    async with store.transaction() as tx:
        await tx.insert(Counter(id="c"))
        updated = await tx.update(Counter(id="c", value=7))
        assert updated.version == 1
    assert await store.get(Counter, "c") == Counter(id="c", value=7, version=1)


async def test_update_of_just_inserted_document_checks_its_version(store: DocumentStore) -> None:
    """A compare-and-set with the wrong version fails even on a document this transaction inserted."""
    with pytest.raises(VersionConflict):
        async with store.transaction() as tx:
            await tx.insert(Counter(id="c"))
            await tx.update(Counter(id="c", value=1, version=5))
    assert await store.get(Counter, "c") is None


async def test_update_with_stale_version_raises_and_commits_nothing(store: DocumentStore) -> None:
    """A compare-and-set on an old version fails, and the transaction's other writes vanish."""
    await store.put(Counter(id="c"))
    stale = await store.get(Counter, "c")
    assert stale is not None
    async with store.transaction() as tx:
        await tx.update(stale.model_copy(update={"value": 1}))
    with pytest.raises(VersionConflict):
        async with store.transaction() as tx:
            await tx.insert(NOTE)
            await tx.update(stale.model_copy(update={"value": 100}))
    assert await store.get(Counter, "c") == Counter(id="c", value=1, version=1)
    assert await store.get(Note, "n-1") is None


async def test_update_of_missing_document_raises_version_conflict(store: DocumentStore) -> None:
    """Updating creates nothing: a missing document is a conflict."""
    with pytest.raises(VersionConflict):
        async with store.transaction() as tx:
            await tx.update(Counter(id="ghost", value=1))
    assert await store.get(Counter, "ghost") is None


async def test_delete_of_current_version_removes_the_document(store: DocumentStore) -> None:
    """A delete is gone from the transaction's own reads at once, and from the store at commit."""
    await store.put(Counter(id="c"))
    async with store.transaction() as tx:
        counter = await tx.get(Counter, "c")
        assert counter is not None
        await tx.delete(counter)
        assert await tx.get(Counter, "c") is None
        assert await store.get(Counter, "c") == counter
    assert await store.get(Counter, "c") is None


async def test_delete_of_stale_version_raises_and_commits_nothing(store: DocumentStore) -> None:
    """A compare-and-delete on an old version fails, and the transaction's other writes vanish."""
    await store.put(Counter(id="c"))
    stale = await store.get(Counter, "c")
    assert stale is not None
    async with store.transaction() as tx:
        await tx.update(stale.model_copy(update={"value": 1}))
    with pytest.raises(VersionConflict):
        async with store.transaction() as tx:
            await tx.insert(NOTE)
            await tx.delete(stale)
    assert await store.get(Counter, "c") == Counter(id="c", value=1, version=1)
    assert await store.get(Note, "n-1") is None


async def test_delete_of_a_document_updated_in_the_same_transaction(store: DocumentStore) -> None:
    """Updated, then deleted in one transaction: nothing of it is left."""
    await store.put(Counter(id="c"))
    async with store.transaction() as tx:
        counter = await tx.get(Counter, "c")
        assert counter is not None
        await tx.delete(await tx.update(counter.model_copy(update={"value": 3})))
    assert await store.get(Counter, "c") is None


async def test_delete_of_missing_document_raises_version_conflict(store: DocumentStore) -> None:
    """Deleting what is not there is a conflict: someone else got there first."""
    with pytest.raises(VersionConflict):
        async with store.transaction() as tx:
            await tx.delete(Counter(id="ghost"))


# --- isolation and concurrency ---------------------------------------------------------------


async def test_reads_outside_a_transaction_see_only_committed_state(store: DocumentStore) -> None:
    """While a transaction is open its insert and update are invisible to committed reads."""
    await store.put(Counter(id="c"))
    async with store.transaction() as tx:
        await tx.insert(NOTE)
        counter = await tx.get(Counter, "c")
        assert counter is not None
        await tx.update(counter.model_copy(update={"value": 1}))
        assert await store.get(Note, "n-1") is None
        assert await store.get(Counter, "c") == Counter(id="c")
        assert await store.all(Note) == []
    assert await store.get(Note, "n-1") == NOTE
    assert await store.get(Counter, "c") == Counter(id="c", value=1, version=1)


async def increment(open_store: Opener, worker: int, rng: random.Random) -> int:
    """Read-modify-write the counter once, retrying conflicts; returns the attempts it took.

    The ``Applied`` marker written in the same transaction turns a retry of an increment
    that did commit into a no-op, as the worker inbox does.
    """
    marker = f"w-{worker}"
    for attempt in range(1, 100):
        try:
            async with open_store() as store, store.transaction() as tx:
                if await tx.get(Applied, marker) is not None:
                    return attempt
                counter = await tx.get(Counter, "c")
                assert counter is not None
                await asyncio.sleep(0)  # let the others read the same version
                await tx.update(counter.model_copy(update={"value": counter.value + 1}))
                await tx.insert(Applied(id=marker))
                await asyncio.sleep(0)  # and write it before anyone commits
            return attempt
        except (VersionConflict, DuplicateKey):
            await asyncio.sleep(rng.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6))))
    raise AssertionError(f"increment {worker} never committed")


async def test_concurrent_increments_lose_no_update(open_store: Opener) -> None:
    """N concurrent read-modify-write transactions, retried on conflict, leave exactly N."""
    n = 8
    rng = random.Random(1)
    async with open_store() as store:
        await store.put(Counter(id="c"))
        attempts = await asyncio.gather(*(increment(open_store, i, rng) for i in range(n)))
        assert await store.get(Counter, "c") == Counter(id="c", value=n, version=n)
        assert sorted(a.id for a in await store.all(Applied)) == [f"w-{i}" for i in range(n)]
    assert max(attempts) > 1, "the increments never overlapped"


async def test_concurrent_inserts_of_one_id_commit_once(open_store: Opener) -> None:
    """Two open transactions inserting the same id: one commits, the other fails and writes nothing."""
    first = Note(id="n-1", text="first")
    second = Note(id="n-1", text="second")
    with pytest.raises((DuplicateKey, VersionConflict)):
        async with open_store() as one, open_store() as two, one.transaction() as tx1:
            await tx1.insert(first)
            await tx1.insert(Counter(id="from-tx1"))
            async with two.transaction() as tx2:
                await tx2.insert(second)
                await tx2.insert(Counter(id="from-tx2"))
    async with open_store() as store:
        stored = await store.get(Note, "n-1")
        assert stored in (first, second)
        winner, loser = ("from-tx1", "from-tx2") if stored == first else ("from-tx2", "from-tx1")
        assert await store.get(Counter, winner) is not None
        assert await store.get(Counter, loser) is None


# --- conditional changes ---------------------------------------------------------------------


async def test_modify_applies_a_matching_change_and_returns_the_document(
        store: DocumentStore) -> None:
    """assign, add and append in one write; the version goes up by one; the result is what
    a later read sees."""
    await store.put(NOTE)
    await store.put(Counter(id="c", value=3))
    async with store.transaction() as tx:
        note = await tx.modify(Note, "n-1", Change(when={"text": "hello"},
                                                     assign={"score": 0.5}, append={"tags": "c"}))
        counter = await tx.modify(Counter, "c", Change(add={"value": -2}))
        assert note == Note(id="n-1", text="hello", tags=("a", "b", "c"), score=0.5, version=1)
        assert counter == Counter(id="c", value=1, version=1)
        assert await tx.get(Note, "n-1") == note
    assert await store.get(Note, "n-1") == note
    assert await store.get(Counter, "c") == counter


async def test_modify_writes_nothing_when_the_condition_fails_or_the_document_is_missing(
        store: DocumentStore) -> None:
    """A condition that does not hold, or no document: None, and the store is unchanged."""
    await store.put(NOTE)
    async with store.transaction() as tx:
        assert await tx.modify(Note, "n-1", Change(when={"text": "bye"},
                                                     assign={"text": "changed"})) is None
        assert await tx.modify(Note, "n-2", Change(assign={"text": "new"})) is None
    assert await store.get(Note, "n-1") == NOTE
    assert await store.get(Note, "n-2") is None


class Stock(Doc):
    """Units on hand and the part of them reserved."""

    collection = "contract_stock"
    on_hand: int
    reserved: int = 0


async def test_modify_within_a_bound_applies_up_to_it_and_no_further(
        store: DocumentStore) -> None:
    """``within``: the change applies only if the field stays at most its ceiling, both as
    changed; a change that would pass it writes nothing."""
    await store.put(Stock(id="s", on_hand=5, reserved=3))
    async with store.transaction() as tx:
        assert await tx.modify(Stock, "s", Change(within={"reserved": "on_hand"},
                                                  add={"reserved": 3})) is None
        two = await tx.modify(Stock, "s", Change(within={"reserved": "on_hand"},
                                                 add={"reserved": 2}))
        assert two == Stock(id="s", on_hand=5, reserved=5, version=1)
        # Both sides move: taking 5 off the stock and the reservation stays within.
        taken = await tx.modify(Stock, "s", Change(within={"reserved": "on_hand"},
                                                   add={"reserved": -5, "on_hand": -5}))
        assert taken == Stock(id="s", on_hand=0, reserved=0, version=2)
        assert await tx.modify(Stock, "s", Change(within={"reserved": "on_hand"},
                                                  add={"reserved": 1})) is None
    assert await store.get(Stock, "s") == Stock(id="s", on_hand=0, reserved=0, version=2)


def test_a_bound_field_cannot_be_assigned() -> None:
    with pytest.raises(ValueError, match="within"):
        Change(within={"reserved": "on_hand"}, assign={"on_hand": 3})


async def test_modify_of_a_document_changed_in_the_same_transaction(store: DocumentStore) -> None:
    """The condition sees the transaction's own writes, and changes add up."""
    async with store.transaction() as tx:
        await tx.insert(Counter(id="c"))
        one = await tx.modify(Counter, "c", Change(when={"value": 0}, add={"value": 1}))
        two = await tx.modify(Counter, "c", Change(when={"value": 1}, add={"value": 1}))
        assert await tx.modify(Counter, "c", Change(when={"value": 1}, add={"value": 1})) is None
    assert (one, two) == (Counter(id="c", value=1, version=1), Counter(id="c", value=2, version=2))
    assert await store.get(Counter, "c") == two


async def test_modify_is_rolled_back_with_its_transaction(store: DocumentStore) -> None:
    """An exception after a change leaves the document as it was."""
    await store.put(Counter(id="c"))
    with pytest.raises(Failure):
        async with store.transaction() as tx:
            assert await tx.modify(Counter, "c", Change(add={"value": 5})) is not None
            raise Failure
    assert await store.get(Counter, "c") == Counter(id="c")


async def bump(open_store: Opener, rng: random.Random) -> None:
    """Add one to the counter with ``modify``, retrying conflicts."""
    for attempt in range(100):
        try:
            async with open_store() as store, store.transaction() as tx:
                await asyncio.sleep(0)  # let the others begin too
                assert await tx.modify(Counter, "c", Change(add={"value": 1})) is not None
                await asyncio.sleep(0)  # and change it before anyone commits
            return
        except VersionConflict:
            await asyncio.sleep(rng.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6))))
    raise AssertionError("a bump never committed")


async def test_concurrent_modifies_lose_no_change(open_store: Opener) -> None:
    """N concurrent transactions that each add one leave exactly N."""
    n = 8
    rng = random.Random(2)
    async with open_store() as store:
        await store.put(Counter(id="c"))
        await asyncio.gather(*(bump(open_store, rng) for _ in range(n)))
        assert await store.get(Counter, "c") == Counter(id="c", value=n, version=n)


# --- seeding helpers -------------------------------------------------------------------------


async def test_put_inserts_or_overwrites_as_given(store: DocumentStore) -> None:
    """put() stores the document exactly, version included, replacing any earlier one."""
    await store.put(Counter(id="c", value=3, version=7))
    assert await store.get(Counter, "c") == Counter(id="c", value=3, version=7)
    await store.put(Counter(id="c", value=1))
    assert await store.get(Counter, "c") == Counter(id="c", value=1)
    async with store.transaction() as tx:
        counter = await tx.get(Counter, "c")
        assert counter is not None
        assert (await tx.update(counter)).version == 1


async def test_all_lists_one_kind_within_limit(store: DocumentStore) -> None:
    """all(kind) returns every document of that kind only, and at most ``limit``."""
    notes = [Note(id=f"n-{i}", text=str(i)) for i in range(5)]
    for note in notes:
        await store.put(note)
    await store.put(Counter(id="n-0"))
    assert sorted(await store.all(Note), key=lambda d: d.id) == notes
    assert await store.all(Counter) == [Counter(id="n-0")]
    assert len(await store.all(Note, limit=2)) == 2
    assert await store.all(Applied) == []
