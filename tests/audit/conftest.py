"""The world every audit test starts from, and stores to load it into."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import pytest
from pydantic import SecretStr

from client import connect
from infra.settings import CommonSettings
from orchestrator.app import definitions
from orchestrator.store import SagaStore
from orchestrator.store_memory import MemorySagaStore
from tests.audit.world import SETTINGS, Dump, fill, run_world
from tests.plan import PLAN
from workers.store import DocumentStore
from workers.store_memory import MemoryDocumentStore

Stores = tuple[SagaStore, Mapping[str, DocumentStore]]
Load = Callable[[Dump], Awaitable[Stores]]
OWNERS = ("orchestrator", *PLAN.services)


@pytest.fixture(scope="session")
def world() -> Dump:
    """Finished orders of every kind, made once per session by really running them."""
    return asyncio.run(run_world())


async def _in_memory(dump: Dump) -> Stores:
    sagas = MemorySagaStore(definitions(SETTINGS))
    services = {name: MemoryDocumentStore() for name in PLAN.services}
    await fill(dump, sagas, services)
    return sagas, services


@pytest.fixture
def load_memory() -> Load:
    """Loads a dump into fresh in-memory stores."""
    return _in_memory


def mongo_settings(urls: Mapping[str, str], prefix: str) -> CommonSettings:
    """Settings for the test MongoDB (one server per owner on the stand-in)."""
    return CommonSettings(mongo_url=SecretStr(urls["orchestrator"]), mongo_db_prefix=prefix,
                          mongo_urls={owner: SecretStr(urls[owner]) for owner in OWNERS})


@pytest.fixture
async def load_mongo(mongo_urls: dict[str, str], tag: str) -> AsyncIterator[Load]:
    """Loads a dump into this test's own MongoDB databases (dropped afterwards)."""
    common = mongo_settings(mongo_urls, f"audit_{tag}")
    opened: list[connect.Stores] = []

    async def load(dump: Dump) -> Stores:
        stores = await connect.stores(common, definitions(SETTINGS))
        opened.append(stores)
        await fill(dump, stores.sagas, stores.services)
        return stores.sagas, stores.services

    yield load
    for stores in opened:
        for owner, client in stores.clients.items():
            await client.drop_database(common.database(owner))
        await stores.close()


@pytest.fixture(params=["memory", "mongo"])
def load(request: pytest.FixtureRequest, load_memory: Load, load_mongo: Load) -> Load:
    """The same test against the in-memory stores and the real MongoDB stores."""
    return load_memory if request.param == "memory" else load_mongo
