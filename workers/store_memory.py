"""In-memory adapter of the participant store, with optimistic transactions.

Writes are buffered in the transaction and validated at commit: every updated document
must still have the version it was read at, and every inserted id must still be free.
The commit itself runs without an await, so it is atomic under asyncio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from infra.errors import DuplicateKey, VersionConflict
from workers.store import Change, Doc, changed

Key = tuple[str, str]


class MemoryTx:
    """A buffered transaction over a MemoryDocumentStore."""

    def __init__(self, committed: dict[Key, Doc]) -> None:
        self._committed = committed
        self._inserts: dict[Key, Doc] = {}
        self._updates: dict[Key, tuple[int, Doc]] = {}
        self._deletes: dict[Key, int] = {}

    async def get[T: Doc](self, kind: type[T], id: str) -> T | None:
        """Own writes first, then committed state."""
        key = (kind.collection, id)
        if key in self._deletes:
            return None
        found = self._inserts.get(key)
        if found is None and key in self._updates:
            found = self._updates[key][1]
        if found is None:
            found = self._committed.get(key)
        return cast(T | None, found)

    async def insert(self, doc: Doc) -> None:
        """Buffer an insert; fail early on an id taken already."""
        key = (doc.collection, doc.id)
        if key in self._committed or key in self._inserts:
            raise DuplicateKey(f"{doc.collection}/{doc.id} exists")
        self._inserts[key] = doc

    async def update[T: Doc](self, doc: T) -> T:
        """Buffer an update, remembering the version the caller read."""
        key = (doc.collection, doc.id)
        new = doc.model_copy(update={"version": doc.version + 1})
        if key in self._inserts:
            if self._inserts[key].version != doc.version:
                raise VersionConflict(f"{doc.collection}/{doc.id} changed since version {doc.version}")
            self._inserts[key] = new
            return new
        base = self._updates[key][0] if key in self._updates else doc.version
        current = self._updates[key][1] if key in self._updates else self._committed.get(key)
        if current is None or current.version != doc.version:
            raise VersionConflict(f"{doc.collection}/{doc.id} changed since version {doc.version}")
        self._updates[key] = (base, new)
        return new

    async def modify[T: Doc](self, kind: type[T], id: str, change: Change) -> T | None:
        """Buffer the change as an update of the version seen now (checked at commit)."""
        current = await self.get(kind, id)
        after = None if current is None else changed(current, change)
        return None if after is None else await self.update(after)

    async def delete(self, doc: Doc) -> None:
        """Buffer a delete of the version the caller read."""
        key = (doc.collection, doc.id)
        current = await self.get(type(doc), doc.id)
        if current is None or current.version != doc.version:
            raise VersionConflict(f"{doc.collection}/{doc.id} changed since version {doc.version}")
        if self._inserts.pop(key, None) is not None:
            return
        base = self._updates.pop(key)[0] if key in self._updates else doc.version
        self._deletes[key] = base

    def commit(self) -> None:
        """Validate everything, then apply everything."""
        for key in self._inserts:
            if key in self._committed:
                raise DuplicateKey(f"{key[0]}/{key[1]} exists")
        for key, (base, _) in self._updates.items():
            current = self._committed.get(key)
            if current is None or current.version != base:
                raise VersionConflict(f"{key[0]}/{key[1]} changed since version {base}")
        for key, base in self._deletes.items():
            current = self._committed.get(key)
            if current is None or current.version != base:
                raise VersionConflict(f"{key[0]}/{key[1]} changed since version {base}")
        self._committed.update(self._inserts)
        self._committed.update({key: doc for key, (_, doc) in self._updates.items()})
        for key in self._deletes:
            del self._committed[key]


class MemoryDocumentStore:
    """Documents in a dict, for the embedded mode and tests."""

    def __init__(self) -> None:
        self._docs: dict[Key, Doc] = {}

    async def ensure_indexes(self, expiring: tuple[str, ...]) -> None:
        """Nothing expires in memory: an embedded run does not outlive its retention."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTx]:
        """Commit when the block ends normally; drop the buffer otherwise."""
        tx = MemoryTx(self._docs)
        yield tx
        tx.commit()

    async def get[T: Doc](self, kind: type[T], id: str) -> T | None:
        """Committed state."""
        return cast(T | None, self._docs.get((kind.collection, id)))

    async def all[T: Doc](self, kind: type[T], limit: int = 100_000) -> list[T]:
        """Every committed document of a kind."""
        docs = [d for (c, _), d in self._docs.items() if c == kind.collection and isinstance(d, kind)]
        return docs[:limit]

    async def put(self, doc: Doc) -> None:
        """Overwrite (seeding)."""
        self._docs[(doc.collection, doc.id)] = doc
