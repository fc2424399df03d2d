"""MongoDB adapter of the saga store."""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from engine.state import ACTIVE, SagaState, SagaStatus
from infra.adapters.mongo import translated
from infra.errors import DuplicateKey, VersionConflict
from orchestrator.registry import DefinitionRegistry
from orchestrator.serde import (
    DAY,
    LOCK_WAITING,
    Document,
    Undecodable,
    decodable,
    decode,
    expires_at,
    outbox_document,
    quarantine_fields,
    quarantined_from,
    state_fields,
    to_document,
)
from orchestrator.store import (
    GAUGED,
    OutboxMessage,
    Quarantined,
    SagaQuery,
    SagaRecord,
    StoreHealth,
)

COLLECTION = "sagas"
UNFINISHED = [s.value for s in ACTIVE]
EXPIRES_AT = "expires_at"
QUARANTINED = SagaStatus.QUARANTINED.value
# The outbox backlog is normally a handful of sagas between a write and its confirm; when
# the broker is down it grows, and counting the first this many is enough to see that.
OUTBOX_SCAN_LIMIT = 10_000


class MongoSagaStore:
    """Sagas in one collection; every save filters on the version it read."""

    def __init__(self, db: AsyncDatabase[Document], registry: DefinitionRegistry,
                 retention: float = 30 * DAY) -> None:
        self._sagas: AsyncCollection[Document] = db[COLLECTION]
        self.definitions = registry
        self._retention = retention

    async def ensure_indexes(self) -> None:
        """Timers and the outbox relay are indexed queries, not scans; finished sagas are
        deleted by MongoDB's TTL monitor once their ``expires_at`` has passed."""
        with translated():
            await self._sagas.create_index([("next_wakeup", ASCENDING)], sparse=True)
            await self._sagas.create_index([(LOCK_WAITING, ASCENDING)], sparse=True)
            await self._sagas.create_index([("outbox.created_at", ASCENDING)], sparse=True)
            await self._sagas.create_index([("status", ASCENDING), ("created_at", DESCENDING)])
            await self._sagas.create_index([(EXPIRES_AT, ASCENDING)], expireAfterSeconds=0)

    async def create(self, state: SagaState[Any], outbox: Sequence[OutboxMessage]) -> bool:
        """Insert; a taken id means a repeated order id, which must not start a second saga."""
        try:
            with translated():
                await self._sagas.insert_one(to_document(state, tuple(outbox)))
        except DuplicateKey:
            return False
        return True

    async def load(self, saga_id: str) -> SagaRecord | None:
        """One saga (Undecodable when its document cannot be decoded)."""
        with translated():
            doc = await self._sagas.find_one({"_id": saga_id})
        return None if doc is None else decode(doc, self.definitions)

    async def quarantine(self, saga_id: str, reason: str, detail: str, now: float) -> None:
        """Status quarantined, why, and no timer."""
        with translated():
            await self._sagas.update_one(
                {"_id": saga_id}, {"$set": quarantine_fields(reason, detail, now),
                                   "$unset": {"next_wakeup": ""}})

    async def quarantined(self, limit: int) -> list[Quarantined]:
        """Newest first."""
        with translated():
            docs = await self._sagas.find(
                {"status": QUARANTINED},
                {"definition": 1, "definition_version": 1, "quarantine": 1}).sort(
                "quarantine.at", DESCENDING).limit(limit).to_list()
        return [quarantined_from(d) for d in docs]

    async def save(self, state: SagaState[Any], expected_version: int,
                   outbox: Sequence[OutboxMessage]) -> SagaState[Any]:
        """Compare-and-set on ``version``; the outbox append is part of the same write."""
        new_version = expected_version + 1
        update: Document = {"$set": {**state_fields(state), "version": new_version}}
        unset: Document = {}
        wakeup = state.next_wakeup
        if wakeup is None:
            unset["next_wakeup"] = ""
        else:
            update["$set"]["next_wakeup"] = wakeup
        if state.lock_waits:
            update["$set"][LOCK_WAITING] = True
        else:
            unset[LOCK_WAITING] = ""
        expiry = expires_at(state, self._retention)
        if expiry is None:
            unset[EXPIRES_AT] = ""  # a resumed saga (an operator's retry) must not expire
        else:
            update["$set"][EXPIRES_AT] = expiry
        if unset:
            update["$unset"] = unset
        if outbox:
            update["$push"] = {"outbox": {"$each": [outbox_document(m) for m in outbox]}}
        with translated():
            # A quarantine keeps the version: a save from a state cached before it must fail.
            result = await self._sagas.update_one(
                {"_id": state.saga_id, "version": expected_version,
                 "status": {"$ne": QUARANTINED}}, update)
        if result.matched_count == 0:
            raise VersionConflict(f"saga {state.saga_id} is no longer at version {expected_version}")
        return _with_version(state, new_version)

    async def due(self, now: float, limit: int) -> list[str]:
        """Sagas whose earliest timer has passed."""
        with translated():
            cursor = self._sagas.find({"next_wakeup": {"$lte": now}}, {"_id": 1})
            docs = await cursor.sort("next_wakeup", ASCENDING).limit(limit).to_list()
        return [d["_id"] for d in docs]

    async def waiting(self, limit: int) -> list[SagaRecord]:
        """Served by the sparse index on the waiting flag."""
        with translated():
            docs = await self._sagas.find({LOCK_WAITING: True, "status": SagaStatus.RUNNING.value}
                                          ).limit(limit).to_list()
        return [r for r in decodable(docs, self.definitions) if r.state.lock_waits]

    async def pending_outbox(self, created_before: float, limit: int,
                             after: str | None = None) -> list[SagaRecord]:
        """Sagas with outbox entries older than ``created_before``, by id after ``after``;
        undecodable ones are quarantined."""
        query: dict[str, Any] = {"outbox.created_at": {"$lte": created_before},
                                 "status": {"$ne": QUARANTINED}}
        if after is not None:
            query["_id"] = {"$gt": after}
        with translated():
            docs = await self._sagas.find(query).sort("_id", ASCENDING).limit(limit).to_list()
        records = []
        for doc in docs:
            try:
                records.append(decode(doc, self.definitions))
            except Undecodable as e:
                await self.quarantine(e.saga_id, e.reason, e.detail, time.time())
        return records

    async def clear_outbox(self, published: Sequence[tuple[str, Sequence[str]]]) -> None:
        """One bulk write for many sagas; it never touches the version."""
        if not published:
            return
        ops = [UpdateOne({"_id": saga_id}, {"$pull": {"outbox": {"message_id": {"$in": list(ids)}}}})
               for saga_id, ids in published]
        with translated():
            await self._sagas.bulk_write(ops, ordered=False)

    async def find(self, statuses: Collection[SagaStatus] | None, limit: int) -> list[SagaRecord]:
        """Newest first; quarantined sagas are never returned (see ``quarantined``)."""
        wanted = [s.value for s in (SagaStatus if statuses is None else statuses)
                  if s is not SagaStatus.QUARANTINED]
        with translated():
            docs = await self._sagas.find({"status": {"$in": wanted}}).sort(
                "created_at", DESCENDING).limit(limit).to_list()
        return decodable(docs, self.definitions)

    async def search(self, query: SagaQuery) -> list[SagaRecord]:
        """Served by the (status, created_at) index; the id substring is a regex on what
        that range leaves."""
        wanted = [s.value for s in (query.statuses or SagaStatus)
                  if s is not SagaStatus.QUARANTINED]
        clauses: list[Document] = [{"status": {"$in": wanted}}]
        if query.definition is not None:
            clauses.append({"definition": query.definition})
        if query.since is not None:
            clauses.append({"created_at": {"$gte": query.since}})
        if query.text:
            clauses.append({"_id": {"$regex": re.escape(query.text), "$options": "i"}})
        if query.after is not None:
            at, last = query.after
            clauses.append({"$or": [{"created_at": {"$lt": at}},
                                    {"created_at": at, "_id": {"$lt": last}}]})
        with translated():
            docs = await self._sagas.find({"$and": clauses}).sort(
                [("created_at", DESCENDING), ("_id", DESCENDING)]).limit(query.limit).to_list()
        return decodable(docs, self.definitions)

    async def count_by_status(self) -> dict[SagaStatus, int]:
        """Group and count (every document: for tools, not for the gauges)."""
        pipeline: list[Document] = [{"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        with translated():
            cursor = await self._sagas.aggregate(pipeline)
            rows = await cursor.to_list()
        return {SagaStatus(r["_id"]): int(r["n"]) for r in rows}

    async def health(self, now: float) -> StoreHealth:
        """Indexed queries only (status+created_at, and the outbox index): the finished
        sagas kept for the retention period are never read."""
        with translated():
            by_status = {status: await self._sagas.count_documents({"status": status.value})
                         for status in GAUGED}
        unfinished: Document = {"status": {"$in": UNFINISHED}}
        with translated():
            oldest = await self._sagas.find(unfinished, {"created_at": 1}).sort(
                "created_at", ASCENDING).limit(1).to_list()
            overdue = await self._sagas.count_documents(
                {**unfinished, "deadline_at": {"$lt": now}})
            pending = await self._sagas.find(
                {"outbox.created_at": {"$lte": now}}, {"outbox": 1}).limit(
                OUTBOX_SCAN_LIMIT).to_list()
            reasons = await (await self._sagas.aggregate([
                {"$match": {"status": QUARANTINED}},
                {"$group": {"_id": "$quarantine.reason", "n": {"$sum": 1}}}])).to_list()
        stamps = [m["created_at"] for d in pending for m in d.get("outbox", ())]
        return StoreHealth(
            by_status=by_status,
            oldest_unfinished_at=oldest[0]["created_at"] if oldest else None,
            overdue=overdue, outbox_messages=len(stamps), oldest_outbox_at=min(stamps, default=None),
            quarantined={str(r["_id"]): int(r["n"]) for r in reasons})


def _with_version(state: SagaState[Any], version: int) -> SagaState[Any]:
    return replace(state, version=version)
