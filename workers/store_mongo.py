"""MongoDB adapter of the participant store: multi-document transactions on a replica set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from infra.adapters.mongo import translated
from infra.errors import VersionConflict
from workers.store import Change, Doc

Document = dict[str, Any]


def to_mongo(doc: Doc) -> Document:
    """``id`` becomes ``_id``; the rest is the model's JSON form, except that dates stay
    dates (a TTL index reads only BSON dates)."""
    data = doc.model_dump(mode="json")
    data["_id"] = data.pop("id")
    data.update({name: value for name, value in doc if isinstance(value, datetime)})
    return data


def _bson(value: object) -> object:
    """A model value as ``to_mongo`` stores it."""
    return value if isinstance(value, datetime) else to_jsonable_python(value)


def _update(change: Change) -> Document:
    """The update document of a ``Change``; the version always goes up by one."""
    update: Document = {"$inc": {**change.add, "version": 1}}
    if change.assign:
        update["$set"] = {name: _bson(v) for name, v in change.assign.items()}
    if change.append:
        update["$push"] = {name: _bson(v) for name, v in change.append.items()}
    return update


def from_mongo[T: Doc](kind: type[T], data: Document) -> T:
    """The inverse of ``to_mongo``."""
    data = dict(data)
    data["id"] = data.pop("_id")
    return kind.model_validate(data)


class MongoTx:
    """Operations bound to one session in a transaction."""

    def __init__(self, db: AsyncDatabase[Document], session: AsyncClientSession) -> None:
        self._db = db
        self._session = session

    async def get[T: Doc](self, kind: type[T], id: str) -> T | None:
        """Read inside the transaction's snapshot."""
        with translated():
            data = await self._db[kind.collection].find_one({"_id": id}, session=self._session)
        return None if data is None else from_mongo(kind, data)

    async def insert(self, doc: Doc) -> None:
        """Insert; the unique _id index turns a taken id into DuplicateKey."""
        with translated():
            await self._db[doc.collection].insert_one(to_mongo(doc), session=self._session)

    async def update[T: Doc](self, doc: T) -> T:
        """Replace only if the stored version is the one we read."""
        new = doc.model_copy(update={"version": doc.version + 1})
        with translated():
            result = await self._db[doc.collection].replace_one(
                {"_id": doc.id, "version": doc.version}, to_mongo(new), session=self._session)
        if result.matched_count == 0:
            raise VersionConflict(f"{doc.collection}/{doc.id} changed since version {doc.version}")
        return new

    async def modify[T: Doc](self, kind: type[T], id: str, change: Change) -> T | None:
        """One ``findAndModify``, matched on the id and ``change.when``."""
        query: Document = {"_id": id, **{name: _bson(v) for name, v in change.when.items()}}
        if change.within:
            query["$expr"] = {"$and": [
                {"$lte": [{"$add": [f"${name}", change.add.get(name, 0)]},
                          {"$add": [f"${ceiling}", change.add.get(ceiling, 0)]}]}
                for name, ceiling in change.within.items()]}
        with translated():
            data = await self._db[kind.collection].find_one_and_update(
                query, _update(change), return_document=ReturnDocument.AFTER,
                session=self._session)
        return None if data is None else from_mongo(kind, data)

    async def delete(self, doc: Doc) -> None:
        """Delete only if the stored version is the one we read."""
        with translated():
            result = await self._db[doc.collection].delete_one(
                {"_id": doc.id, "version": doc.version}, session=self._session)
        if result.deleted_count == 0:
            raise VersionConflict(f"{doc.collection}/{doc.id} changed since version {doc.version}")


class MongoDocumentStore:
    """One database per service."""

    def __init__(self, client: AsyncMongoClient[Document], database: str) -> None:
        self._client = client
        self._db: AsyncDatabase[Document] = client[database]

    async def ensure_indexes(self, expiring: tuple[str, ...]) -> None:
        """A TTL index on ``expires_at`` per collection: MongoDB's TTL monitor deletes each
        document once that date has passed (documents without it are kept)."""
        with translated():
            for collection in expiring:
                await self._db[collection].create_index([("expires_at", ASCENDING)],
                                                        expireAfterSeconds=0)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MongoTx]:
        """Start a session and a transaction; commit on success, abort on any exception."""
        with translated():
            async with self._client.start_session() as session, await session.start_transaction():
                yield MongoTx(self._db, session)

    async def get[T: Doc](self, kind: type[T], id: str) -> T | None:
        """Committed state."""
        with translated():
            data = await self._db[kind.collection].find_one({"_id": id})
        return None if data is None else from_mongo(kind, data)

    async def all[T: Doc](self, kind: type[T], limit: int = 100_000) -> list[T]:
        """Every document of a kind."""
        with translated():
            docs = await self._db[kind.collection].find({}).limit(limit).to_list()
        return [from_mongo(kind, d) for d in docs]

    async def put(self, doc: Doc) -> None:
        """Upsert (seeding)."""
        with translated():
            await self._db[doc.collection].replace_one({"_id": doc.id}, to_mongo(doc), upsert=True)
