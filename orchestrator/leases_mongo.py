"""MongoDB adapter of the partition leases: two small collections beside the sagas."""

from __future__ import annotations

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from infra.adapters.mongo import translated
from infra.errors import DuplicateKey
from orchestrator.leases import Lease
from orchestrator.serde import Document

MEMBERS = "orchestrator_members"
PARTITIONS = "orchestrator_partitions"


class MongoLeases:
    """One document per member (``until``) and per partition (``owner``, ``until``)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._members: AsyncCollection[Document] = db[MEMBERS]
        self._partitions: AsyncCollection[Document] = db[PARTITIONS]

    async def ensure_indexes(self) -> None:
        """Members are read by expiry."""
        with translated():
            await self._members.create_index([("until", ASCENDING)])

    async def heartbeat(self, member: str, until: float) -> None:
        """Upsert the member's expiry."""
        with translated():
            await self._members.update_one({"_id": member}, {"$set": {"until": until}},
                                           upsert=True)

    async def members(self, now: float) -> list[str]:
        """Sorted ids of those not expired."""
        with translated():
            docs = await self._members.find({"until": {"$gt": now}}, {"_id": 1}).to_list()
        return sorted(str(d["_id"]) for d in docs)

    async def leave(self, member: str) -> None:
        """Delete the member's record."""
        with translated():
            await self._members.delete_one({"_id": member})

    async def leases(self) -> list[Lease]:
        """By partition."""
        with translated():
            docs = await self._partitions.find({}).sort("_id", ASCENDING).to_list()
        return [Lease(int(d["_id"]), str(d["owner"]), float(d["until"])) for d in docs]

    async def claim(self, partition: int, member: str, now: float, until: float) -> bool:
        """One conditional upsert: it matches a lease that is ours or has expired; if the
        partition has a live lease of someone else, the upsert's insert hits the taken id."""
        try:
            with translated():
                await self._partitions.update_one(
                    {"_id": partition, "$or": [{"owner": member}, {"until": {"$lte": now}}]},
                    {"$set": {"owner": member, "until": until}}, upsert=True)
        except DuplicateKey:
            return False
        return True

    async def release(self, partition: int, member: str) -> None:
        """Expire it now, if ``member`` holds it."""
        with translated():
            await self._partitions.update_one({"_id": partition, "owner": member},
                                              {"$set": {"until": 0.0}})
