"""Retention: finished sagas, inbox and fence entries carry an ``expires_at`` date, and TTL
indexes delete them once it has passed.

MongoDB's TTL monitor runs once a minute on a real server (the stand-in purges as it
reads), so the tests check what the monitor acts on rather than wait for it: the dates
written, the indexes declared, and which documents a query for expired ones selects. The
dates lie ahead, so that neither deletes anything while a test looks.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from contracts.envelope import Envelope, encode, utcnow
from contracts.topology import Plan, Topology, service_user
from engine.state import SagaStatus
from infra.adapters.memory_bus import InMemoryBroker
from infra.settings import CommonSettings
from orchestrator.registry import DefinitionRegistry
from orchestrator.store_mongo import MongoSagaStore
from tests.contract.test_boundary import eventually
from tests.contract.test_saga_store import DEFINITION, started
from tests.integration.test_worker_runtime import reserve
from workers import inventory
from workers.app import Worker
from workers.fence import Fence, FenceState, Run
from workers.metrics import WorkerMetrics
from workers.runtime import EXPIRING
from workers.settings import WorkerSettings
from workers.store import DAY, Change
from workers.store_memory import MemoryDocumentStore
from workers.store_mongo import MongoDocumentStore

HOUR = 3600.0
NOW = float(int(time.time()))  # BSON dates keep milliseconds only


def date(t: float) -> datetime:
    """A time as the naive UTC datetime PyMongo reads back."""
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


async def ttl_indexes(client: AsyncMongoClient[Any], db: str, collection: str) -> list[Any]:
    """The keys of the collection's TTL indexes, with their expireAfterSeconds."""
    indexes = await (await client[db][collection].list_indexes()).to_list()
    return [(list(i["key"]), i["expireAfterSeconds"]) for i in indexes
            if "expireAfterSeconds" in i]


async def test_a_finished_saga_expires_after_the_retention_and_one_needing_attention_never(
        mongo_client: AsyncMongoClient[Any], mongo_db_name: str) -> None:
    store = MongoSagaStore(mongo_client[mongo_db_name], DefinitionRegistry([DEFINITION]),
                           retention=2 * HOUR)
    await store.ensure_indexes()
    assert await ttl_indexes(mongo_client, mongo_db_name, "sagas") == [(["expires_at"], 0)]
    raw = mongo_client[mongo_db_name]["sagas"]
    for saga_id, status, finished in (("done", SagaStatus.COMPLETED, NOW + 10),
                                      ("undone", SagaStatus.FAILED, NOW + 20),
                                      ("waits", SagaStatus.NEEDS_ATTENTION, NOW + 30),
                                      ("runs", SagaStatus.RUNNING, NOW + 40)):
        state, outbox = started(saga_id, NOW)
        assert await store.create(state, outbox)
        await store.save(replace(state, status=status, updated_at=finished), 0, ())
    docs = {d["_id"]: d.get("expires_at") for d in await raw.find({}).to_list()}
    assert docs == {"done": date(NOW + 10 + 2 * HOUR), "undone": date(NOW + 20 + 2 * HOUR),
                    "waits": None, "runs": None}
    # What the TTL monitor deletes 2 h 15 s from now: the completed saga only.
    due = await raw.find({"expires_at": {"$lte": date(NOW + 2 * HOUR + 15)}}).to_list()
    assert [d["_id"] for d in due] == ["done"]
    # An operator's retry takes a saga out of needs_attention: it must not expire while it runs.
    record = await store.load("done")
    assert record is not None
    await store.save(replace(record.state, status=SagaStatus.COMMITTED), record.state.version, ())
    assert "expires_at" not in (await raw.find_one({"_id": "done"}) or {})


async def test_fence_entries_carry_their_expiry_and_their_inbox_records(tag: str) -> None:
    """The runtime dates each fence it writes by its retention; the fence keeps the command
    that changed it."""
    topology, store, clock = Topology(f"ret-{tag}"), MemoryDocumentStore(), [NOW]
    broker = InMemoryBroker()
    settings = WorkerSettings(common=CommonSettings(store="memory", namespace=topology.namespace),
                              service="inventory", fence_retention_days=2)
    worker = Worker(settings=settings, spec=inventory.SERVICE,
                    transport=broker.connect(service_user("inventory")), store=store,
                    metrics=WorkerMetrics(CollectorRegistry()), clock=lambda: clock[0])
    await worker.start()
    orchestrator = broker.connect("saga-orchestrator")
    await orchestrator.declare(topology, Plan((), ("inventory",)))
    envelope = Envelope(message_id="cmd-1", correlation_id="o-1",
                        message_type="inventory.reserve.prepare", timestamp=utcnow())
    await orchestrator.publish(topology.commands_exchange, "inventory",
                               encode(envelope, reserve("o-1", 1)))
    try:
        [fence] = await eventually(lambda: _some(store.all(Fence)))
    finally:
        await worker.stop()
    assert [run.message_id for run in fence.runs] == ["cmd-1"]
    assert fence.expires_at == datetime.fromtimestamp(NOW + 2 * DAY, UTC)


async def _some(found: Any) -> Any:
    docs = await found
    return docs or None


async def test_the_mongo_document_store_keeps_dates_and_indexes_them(
        mongo_urls: dict[str, str], mongo_db_name: str) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_urls["inventory"])
    try:
        store = MongoDocumentStore(client, mongo_db_name)
        await store.ensure_indexes(EXPIRING)
        for collection in EXPIRING:
            assert await ttl_indexes(client, mongo_db_name, collection) == [(["expires_at"], 0)]
        expires = datetime.fromtimestamp(NOW + DAY, UTC)
        await store.put(Fence(id="o-1:s", state=FenceState.TRIED, expires_at=expires))
        raw = await client[mongo_db_name]["fences"].find_one({"_id": "o-1:s"})
        assert raw is not None
        assert raw["expires_at"] == expires.replace(tzinfo=None)  # a BSON date, not text
        read = await store.get(Fence, "o-1:s")
        assert read is not None
        assert read.expires_at is not None
        assert read.expires_at.replace(tzinfo=UTC) == expires
        # A conditional change keeps the date a date too.
        later = datetime.fromtimestamp(NOW + 2 * DAY, UTC)
        async with store.transaction() as tx:
            assert await tx.modify(Fence, "o-1:s", Change(
                when={"state": FenceState.TRIED},
                assign={"state": FenceState.CONFIRMED, "expires_at": later})) is not None
        raw = await client[mongo_db_name]["fences"].find_one({"_id": "o-1:s"})
        assert raw is not None
        assert (raw["state"], raw["expires_at"]) == ("confirmed", later.replace(tzinfo=None))
    finally:
        await client.drop_database(mongo_db_name)
        await client.close()


async def test_a_fence_written_before_it_held_inbox_records_moves_on(
        mongo_urls: dict[str, str], mongo_db_name: str) -> None:
    """A fence document stored without ``runs`` (written before fences kept the inbox
    records) reads as having none, and a confirm's conditional move starts the list."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_urls["inventory"])
    try:
        store = MongoDocumentStore(client, mongo_db_name)
        await client[mongo_db_name]["fences"].insert_one(
            {"_id": "o-1:s", "state": "tried", "reason_code": None, "detail": "",
             "updated_at": NOW, "expires_at": None, "version": 0})
        old = await store.get(Fence, "o-1:s")
        assert old is not None
        assert old.runs == ()
        run = Run(message_id="cmd-2", reply="{}", at=NOW)
        async with store.transaction() as tx:
            moved = await tx.modify(Fence, "o-1:s", Change(
                when={"state": FenceState.TRIED}, assign={"state": FenceState.CONFIRMED},
                append={"runs": run}))
        assert moved is not None
        assert (moved.state, moved.runs, moved.version) == (FenceState.CONFIRMED, (run,), 1)
        assert await store.get(Fence, "o-1:s") == moved
    finally:
        await client.drop_database(mongo_db_name)
        await client.close()
