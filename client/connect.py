"""Open the real broker and database from settings, for the command-line tool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from catalog.plan import Platform
from catalog.plan import owners as owners_of
from contracts.errors import SagaSystemError
from infra.adapters import mongo
from infra.adapters.rabbit import RabbitTransport
from infra.settings import CommonSettings, redact
from orchestrator.registry import DefinitionRegistry
from orchestrator.store_mongo import MongoSagaStore
from workers.store import DocumentStore
from workers.store_mongo import MongoDocumentStore


class Unreachable(SagaSystemError, RuntimeError):
    """The broker or the database did not answer; the message is safe to print."""


async def transport(common: CommonSettings, name: str = "sagactl",
                    within: float = 5.0) -> RabbitTransport:
    """A connected RabbitMQ transport, or Unreachable."""
    url = common.amqp_url.get_secret_value()
    rabbit = RabbitTransport(url, connection_name=name, connect_timeout=within)
    try:
        await rabbit.connect()
    except Exception as e:
        raise Unreachable(f"cannot reach RabbitMQ at {redact(url)}: {type(e).__name__}") from e
    return rabbit


@dataclass
class Stores:
    """The orchestrator's saga store and every service's store."""

    clients: dict[str, AsyncMongoClient[dict[str, Any]]]  # by owner; owners may share one
    sagas: MongoSagaStore
    services: Mapping[str, DocumentStore]

    async def close(self) -> None:
        """Close every client once."""
        for client in {id(c): c for c in self.clients.values()}.values():
            await client.close()


async def stores(common: CommonSettings, registry: DefinitionRegistry,
                 within: float = 10.0) -> Stores:
    """Connected stores (one client per distinct server), or Unreachable."""
    if common.store != "mongo":
        raise Unreachable("SAGA_STORE=memory keeps state inside each process; "
                          "this command needs SAGA_STORE=mongo")
    by_url: dict[str, AsyncMongoClient[dict[str, Any]]] = {}
    services_ = Platform.load(common).plan().services
    try:
        for owner in owners_of(services_):
            url = common.mongo_url_for(owner)
            if url not in by_url:
                by_url[url] = mongo.client(url, app_name="sagactl")
                await _ping(by_url[url], url, within)
    except Unreachable:
        for client in by_url.values():
            await client.close()
        raise
    clients = {o: by_url[common.mongo_url_for(o)] for o in owners_of(services_)}
    services = {s: MongoDocumentStore(clients[s], common.database(s)) for s in services_}
    sagas = MongoSagaStore(clients["orchestrator"][common.database("orchestrator")], registry)
    return Stores(clients, sagas, services)


async def _ping(client: AsyncMongoClient[dict[str, Any]], url: str, within: float) -> None:
    try:
        await mongo.wait_until_ready(client, within=within)
    except Exception as e:
        raise Unreachable(f"cannot reach MongoDB at {redact(url)}: {type(e).__name__}") from e


async def require_databases(common: CommonSettings, within: float = 2.0) -> None:
    """Raise ``connect.Unreachable`` within ``within`` seconds if a configured MongoDB does
    not answer a ping: ``connect.stores`` waits longer, for a server that may be starting,
    and a run must not start its processes or stand silent before saying so."""
    services = Platform.load(common).plan().services
    for url in sorted({common.mongo_url_for(owner) for owner in owners_of(services)}):
        client = mongo.client(url, app_name="sagactl-probe", timeout_ms=int(within * 1000))
        try:
            await client.admin.command("ping")
        except PyMongoError as e:
            raise Unreachable(
                f"cannot reach MongoDB at {redact(url)}: {type(e).__name__}") from e
        finally:
            await client.close()
