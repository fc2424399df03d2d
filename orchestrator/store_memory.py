"""In-memory adapter of the saga store: documents in a dict, with the same semantics."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from engine.state import ACTIVE, SagaState, SagaStatus
from infra.errors import VersionConflict
from orchestrator.registry import DefinitionRegistry
from orchestrator.serde import (
    LOCK_WAITING,
    Document,
    Undecodable,
    decodable,
    decode,
    outbox_document,
    quarantine_fields,
    quarantined_from,
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


class MemorySagaStore:
    """Stores the same documents the MongoDB adapter would, so serde bugs show here too.

    A stored document is never changed in place, only replaced (``clear_outbox`` rebinds its
    outbox list), and ``from_document`` builds fresh objects: loads need no copy.
    """

    def __init__(self, registry: DefinitionRegistry) -> None:
        self._docs: dict[str, Document] = {}
        self.definitions = registry

    async def ensure_indexes(self) -> None:
        """Nothing to index."""

    async def create(self, state: SagaState[Any], outbox: Sequence[OutboxMessage]) -> bool:
        """Insert unless the id exists."""
        if state.saga_id in self._docs:
            return False
        self._docs[state.saga_id] = to_document(state, tuple(outbox))
        return True

    async def load(self, saga_id: str) -> SagaRecord | None:
        """A copy of the stored saga (Undecodable when it cannot be decoded)."""
        doc = self._docs.get(saga_id)
        return None if doc is None else decode(doc, self.definitions)

    async def quarantine(self, saga_id: str, reason: str, detail: str, now: float) -> None:
        """Status quarantined, why, and no timer."""
        doc = self._docs.get(saga_id)
        if doc is not None:
            self._docs[saga_id] = {k: v for k, v in doc.items() if k != "next_wakeup"} | (
                quarantine_fields(reason, detail, now))

    async def quarantined(self, limit: int) -> list[Quarantined]:
        """Newest first."""
        found = [quarantined_from(d) for d in self._docs.values()
                 if d["status"] == SagaStatus.QUARANTINED.value]
        return sorted(found, key=lambda q: q.at, reverse=True)[:limit]

    async def save(self, state: SagaState[Any], expected_version: int,
                   outbox: Sequence[OutboxMessage]) -> SagaState[Any]:
        """Compare-and-set on the version."""
        current = self._docs.get(state.saga_id)
        if (current is None or current["version"] != expected_version
                or current["status"] == SagaStatus.QUARANTINED.value):
            raise VersionConflict(f"saga {state.saga_id} is no longer at version {expected_version}")
        saved = replace(state, version=expected_version + 1)
        doc = to_document(saved)
        doc["outbox"] = current["outbox"] + [outbox_document(m) for m in outbox]
        self._docs[state.saga_id] = doc
        return saved

    async def due(self, now: float, limit: int) -> list[str]:
        """Earliest timers first."""
        due = [(d["next_wakeup"], k) for k, d in self._docs.items()
               if d.get("next_wakeup") is not None and d["next_wakeup"] <= now]
        return [k for _, k in sorted(due)[:limit]]

    async def waiting(self, limit: int) -> list[SagaRecord]:
        """The flagged running sagas."""
        docs = [d for d in self._docs.values()
                if d.get(LOCK_WAITING) and d["status"] == SagaStatus.RUNNING.value]
        return [r for r in decodable(docs[:limit], self.definitions) if r.state.lock_waits]

    async def pending_outbox(self, created_before: float, limit: int,
                             after: str | None = None) -> list[SagaRecord]:
        """Sagas with old outbox entries, by id after ``after``; undecodable ones are
        quarantined."""
        found = [d for k, d in sorted(self._docs.items())
                 if (after is None or k > after)
                 and d["status"] != SagaStatus.QUARANTINED.value
                 and any(m["created_at"] <= created_before for m in d["outbox"])]
        records = []
        for doc in found[:limit]:
            try:
                records.append(decode(doc, self.definitions))
            except Undecodable as e:
                await self.quarantine(e.saga_id, e.reason, e.detail, time.time())
        return records

    async def clear_outbox(self, published: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Drop published entries."""
        for saga_id, ids in published:
            doc = self._docs.get(saga_id)
            if doc is not None:
                doc["outbox"] = [m for m in doc["outbox"] if m["message_id"] not in ids]

    async def find(self, statuses: Collection[SagaStatus] | None, limit: int) -> list[SagaRecord]:
        """Newest first."""
        wanted = {s.value for s in (SagaStatus if statuses is None else statuses)
                  if s is not SagaStatus.QUARANTINED}
        docs = sorted((d for d in self._docs.values() if d["status"] in wanted),
                      key=lambda d: d["created_at"], reverse=True)
        return decodable(docs, self.definitions)[:limit]

    async def search(self, query: SagaQuery) -> list[SagaRecord]:
        """Filter and sort in memory."""
        wanted = {s.value for s in (query.statuses or SagaStatus)
                  if s is not SagaStatus.QUARANTINED}

        def matches(d: Document) -> bool:
            return (d["status"] in wanted
                    and query.definition in (None, d["definition"])
                    and (query.since is None or d["created_at"] >= query.since)
                    and (not query.text or query.text.lower() in str(d["_id"]).lower())
                    and (query.after is None or (d["created_at"], d["_id"]) < query.after))

        docs = sorted((d for d in self._docs.values() if matches(d)),
                      key=lambda d: (d["created_at"], d["_id"]), reverse=True)
        return decodable(docs[:query.limit], self.definitions)

    async def count_by_status(self) -> dict[SagaStatus, int]:
        """Count."""
        counts: dict[SagaStatus, int] = {}
        for d in self._docs.values():
            status = SagaStatus(d["status"])
            counts[status] = counts.get(status, 0) + 1
        return counts

    async def health(self, now: float) -> StoreHealth:
        """One pass over the documents."""
        active = {s.value for s in ACTIVE}
        unfinished = [d for d in self._docs.values() if d["status"] in active]
        outbox = [m["created_at"] for d in self._docs.values() for m in d["outbox"]]
        reasons = Counter(d["quarantine"]["reason"] for d in self._docs.values()
                          if d["status"] == SagaStatus.QUARANTINED.value)
        counts = await self.count_by_status()
        return StoreHealth(
            by_status={status: counts.get(status, 0) for status in GAUGED},
            oldest_unfinished_at=min((d["created_at"] for d in unfinished), default=None),
            overdue=sum(1 for d in unfinished if d["deadline_at"] < now),
            outbox_messages=len(outbox),
            oldest_outbox_at=min(outbox, default=None), quarantined=dict(reasons))
