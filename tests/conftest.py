"""Where the tests find RabbitMQ and MongoDB.

RabbitMQ: ``SAGA_TEST_AMQP_URL``; else a broker on 127.0.0.1:5672 (guest/guest); else a
container when a Docker engine is available. With none of them the tests fail and say
what to provide.

MongoDB: ``SAGA_TEST_MONGO_URL`` (a replica set, for transactions); else a container when a
Docker engine is available; else mongoeco stand-in servers, each in its own process, so
the real PyMongo driver talks to them over TCP. The stand-in detects write conflicts
server-wide, so every database owner gets its own server, as in ``sagactl demo``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts.topology import Topology
from harness.processes import ManagedProcess, start_standins
from infra.adapters.rabbit import RabbitTransport
from tests import containers
from tests.plan import PLAN

OWNERS = ("orchestrator", *PLAN.services)
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    """True when a Docker engine answers /_ping on its socket (the client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers try it
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(host.removeprefix("unix://"))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in s.recv(64)
    except OSError:
        return False


def _amqp_answers(url: str) -> str | None:
    """None when the broker completes a handshake and a channel round trip, else why not."""
    import aio_pika

    async def probe() -> None:
        connection = await aio_pika.connect(url, timeout=15)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True, timeout=15)
            await queue.delete(timeout=15)

    try:
        asyncio.run(asyncio.wait_for(probe(), 30))
    except Exception as e:  # any failure means the broker cannot serve tests
        return f"{type(e).__name__}: {e}"
    return None


def _checked(url: str) -> str:
    # A listener that accepts TCP while the node is wedged would cost every broker test
    # its whole timeout; stop the session at once with the reason instead.
    if why := _amqp_answers(url):
        pytest.exit(f"RabbitMQ at {url.split('@')[-1]} does not answer AMQP ({why}); "
                    "restart it (scripts/ensure-services does) and run again", returncode=3)
    return url


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A real RabbitMQ broker."""
    if url := os.environ.get("SAGA_TEST_AMQP_URL"):
        yield _checked(url)
    elif _reachable("127.0.0.1", 5672):
        yield _checked(DEFAULT_AMQP)
    elif _docker_available():
        with containers.running(containers.RABBITMQ) as (host, port):
            yield containers.amqp_url(host, port)
    else:
        pytest.fail("No RabbitMQ for the tests: set SAGA_TEST_AMQP_URL, start one on "
                    "127.0.0.1:5672 (rabbitmq-server -detached), or provide a Docker engine.")


@pytest.fixture(scope="session")
def mongo_urls() -> Iterator[dict[str, str]]:
    """A MongoDB URL per database owner (all the same URL for a real server)."""
    if url := os.environ.get("SAGA_TEST_MONGO_URL"):
        yield dict.fromkeys(OWNERS, url)
    elif _docker_available():
        with containers.running(containers.MONGODB) as (host, port):
            yield dict.fromkeys(OWNERS, containers.mongo_url(host, port))
    else:
        log_dir = Path(tempfile.mkdtemp(prefix="saga-test-standin-"))
        processes: list[ManagedProcess]
        try:
            processes, env = asyncio.run(start_standins(OWNERS, log_dir))
        except Exception as e:
            pytest.fail(f"No MongoDB for the tests: set SAGA_TEST_MONGO_URL, provide a Docker "
                        f"engine, or install mongoeco (Python 3.13+) for the stand-in ({e})")
        try:
            yield {o: env[f"SAGA_MONGO_URL_{o.upper()}"] for o in OWNERS}
        finally:
            for p in processes:
                p.stop()


@pytest.fixture(scope="session")
def uses_standin(mongo_urls: dict[str, str]) -> bool:
    """True when MongoDB is the mongoeco stand-in (one server per owner)."""
    return len(set(mongo_urls.values())) > 1


@pytest.fixture
def mongo_env(mongo_urls: dict[str, str], uses_standin: bool) -> dict[str, str]:
    """Environment variables pointing the processes at the test MongoDB."""
    env = {f"SAGA_MONGO_URL_{o.upper()}": url for o, url in mongo_urls.items()}
    env["SAGA_MONGO_URL"] = mongo_urls["orchestrator"]
    if uses_standin:
        env["SAGA_TX_CONCURRENCY"] = "1"
    return env


@pytest.fixture
def tag() -> str:
    """A short random tag that keeps one test's names apart from every other test's."""
    return secrets.token_hex(4)


@pytest.fixture
def topology(tag: str) -> Topology:
    """A namespace of queues and exchanges of this test alone."""
    return Topology(f"t-{tag}")


@pytest.fixture
async def rabbit(amqp_url: str, topology: Topology) -> AsyncIterator[RabbitTransport]:
    """A connected transport with this test's topology declared (and deleted afterwards)."""
    transport = RabbitTransport(amqp_url, connection_name="pytest", connect_timeout=10)
    await transport.connect()
    await transport.declare(topology, PLAN)
    yield transport
    await transport.undeclare(topology, PLAN)
    await transport.close()


@pytest.fixture
async def mongo_client(mongo_urls: dict[str, str]) -> AsyncIterator[AsyncMongoClient[Any]]:
    """A PyMongo async client on the test MongoDB (the orchestrator's server)."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_urls["orchestrator"],
                                                     serverSelectionTimeoutMS=5000)
    yield client
    await client.close()


@pytest.fixture
async def mongo_db_name(mongo_client: AsyncMongoClient[Any], tag: str) -> AsyncIterator[str]:
    """A database of this test alone, dropped afterwards."""
    name = f"test_{tag}"
    yield name
    await mongo_client.drop_database(name)
