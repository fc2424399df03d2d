"""One contract for every partition lease adapter: in memory, and MongoDB over the wire."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient

from orchestrator.leases import Lease, Leases, MemoryLeases
from orchestrator.leases_mongo import MongoLeases

NOW = 1_000.0


@pytest.fixture(params=["memory", "mongo"])
def leases(request: pytest.FixtureRequest) -> Leases:
    """Each adapter; MongoDB fixtures are only set up for the mongo case (in a synchronous
    fixture: an async fixture cannot set up another one)."""
    if request.param == "memory":
        return MemoryLeases()
    client: AsyncMongoClient[Any] = request.getfixturevalue("mongo_client")
    name: str = request.getfixturevalue("mongo_db_name")
    return MongoLeases(client[name])


async def test_members_are_those_whose_heartbeat_has_not_expired(leases: Leases) -> None:
    await leases.ensure_indexes()
    await leases.heartbeat("b", NOW + 10)
    await leases.heartbeat("a", NOW + 10)
    await leases.heartbeat("old", NOW - 1)
    assert await leases.members(NOW) == ["a", "b"]
    await leases.heartbeat("old", NOW + 5)  # back again
    await leases.leave("b")
    assert await leases.members(NOW) == ["a", "old"]


async def test_a_live_lease_is_taken_by_nobody_else_until_it_expires(leases: Leases) -> None:
    assert await leases.claim(3, "a", NOW, NOW + 10)
    assert not await leases.claim(3, "b", NOW + 5, NOW + 15)
    assert await leases.claim(3, "a", NOW + 5, NOW + 15)  # renewed by its holder
    assert not await leases.claim(3, "b", NOW + 14, NOW + 24)
    assert await leases.claim(3, "b", NOW + 15, NOW + 25)  # expired: anyone's
    assert await leases.leases() == [Lease(3, "b", NOW + 25)]


async def test_a_released_lease_is_free_at_once_but_only_its_holder_releases(
        leases: Leases) -> None:
    assert await leases.claim(0, "a", NOW, NOW + 10)
    assert await leases.claim(1, "a", NOW, NOW + 10)
    await leases.release(0, "b")  # not b's to give
    assert not await leases.claim(0, "b", NOW, NOW + 10)
    await leases.release(0, "a")
    assert await leases.claim(0, "b", NOW, NOW + 10)
    assert [(x.partition, x.owner) for x in await leases.leases()] == [(0, "b"), (1, "a")]
