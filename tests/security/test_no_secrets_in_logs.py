"""No credential ever appears in a log, an error message, a settings repr or sagactl's output.

Every broker user and the database user get distinctive random passwords; after a full run
(completed and failed orders, poison messages dead-lettered, sagactl's commands, and finally
every connection dropped by the broker) every log file is searched for them. MongoDB runs as stand-ins
with authentication on, so the database passwords are really used, not ignored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aiormq.exceptions import AMQPError
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from catalog.rabbitmq import CLIENT_USER, ORCHESTRATOR_USER
from client import connect
from contracts.topology import service_user
from harness.processes import ROOT, ManagedProcess, free_port
from harness.standin import PASSWORD_ENV
from infra.adapters.rabbit import RabbitTransport
from infra.logs import JsonFormatter
from infra.settings import SettingsError, redact
from orchestrator.settings import orchestrator_from_env
from tests.plan import PLAN
from tests.security.broker import SecureVhost, rabbitmqctl
from tests.security.system import SecureSystem, system_env
from workers.settings import worker_from_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

OWNERS = ("orchestrator", *PLAN.services)
MONGO_USER = "saga-app"


@dataclass(frozen=True)
class MongoAuth:
    """Stand-ins (one per owner) that require a login, and the URLs that carry it."""

    env: dict[str, str]
    password: str
    ports: list[int]


@pytest.fixture
async def mongo_auth(tmp_path: Path) -> AsyncIterator[MongoAuth]:
    """One authenticating stand-in per database owner, stopped afterwards."""
    password = f"Mg{secrets.token_hex(12)}"
    ports = [free_port() for _ in OWNERS]
    processes = [
        ManagedProcess(f"standin-{owner}",
                       [sys.executable, "-m", "harness.standin", "--port", str(port),
                        "--user", MONGO_USER],
                       {**os.environ, PASSWORD_ENV: password},
                       tmp_path / "standins" / f"{owner}.log", port, ready_path=None)
        for owner, port in zip(OWNERS, ports, strict=True)]
    # The stand-in negotiates no mechanism, so the client names SCRAM-SHA-256 (MongoDB's
    # default for new users) rather than falling back to SCRAM-SHA-1.
    env = {f"SAGA_MONGO_URL_{owner.upper()}":
           f"mongodb://{MONGO_USER}:{password}@127.0.0.1:{port}/"
           f"?directConnection=true&authMechanism=SCRAM-SHA-256"
           for owner, port in zip(OWNERS, ports, strict=True)}
    env["SAGA_MONGO_URL"] = env["SAGA_MONGO_URL_ORCHESTRATOR"]
    env["SAGA_TX_CONCURRENCY"] = "1"
    try:
        for process in processes:
            process.start()
        await asyncio.gather(*(p.wait_ready(30.0) for p in processes))
        yield MongoAuth(env, password, ports)
    finally:
        for process in processes:
            process.stop()


def leaks(texts: Iterable[tuple[str, str]], passwords: Iterable[str]) -> list[str]:
    """Which (source, password) pairs show up: empty when nothing leaked."""
    wanted = list(passwords)
    return [f"{source} contains {password[:4]}…" for source, text in texts
            for password in wanted if password in text]


async def sagactl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run sagactl in a subprocess without blocking the event loop."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "sagactl", *args], cwd=ROOT, text=True,
        capture_output=True, timeout=120, env={**os.environ, **env})


async def poison(broker: SecureVhost, user: str, exchange: str, key: str) -> None:
    """Publish a body no consumer can parse, as one of the definition's users."""
    connection = await aio_pika.connect(broker.url(user))
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(b"{not json", message_id="poison-1"), routing_key=key)
    finally:
        await connection.close()


async def wait_for_metric(system: SecureSystem, process: str, name: str,
                          timeout: float = 30.0) -> None:
    """Wait until a process's counter is above zero."""
    deadline = time.monotonic() + timeout
    while await system.metric(process, name) < 1:
        assert time.monotonic() < deadline, f"{process}: {name} stayed 0\n{system.cluster.logs()}"
        await asyncio.sleep(0.2)


async def test_stand_in_requires_the_password(mongo_auth: MongoAuth) -> None:
    """The database refuses a client without credentials, so the URLs' passwords are real."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{mongo_auth.ports[0]}/?directConnection=true",
        serverSelectionTimeoutMS=3000)
    try:
        with pytest.raises(OperationFailure, match="Authentication required"):
            await client.admin.command("ping")
    finally:
        await client.close()


async def test_full_run_logs_no_credentials(broker: SecureVhost, mongo_auth: MongoAuth, tag: str,
                                            tmp_path: Path) -> None:
    """Orders that complete and fail, two poison messages, sagactl's commands and every
    connection dropped: no password in any log or output."""
    env = system_env(broker, mongo_auth.env, f"sec_{tag}", log_level="DEBUG")
    system = SecureSystem(env, tmp_path / "logs", broker)
    outputs: list[tuple[str, str]] = []
    try:
        await system.start()
        await system.seed({"apple": 10}, {"alice": 10_000, "bob": 100})
        await system.order("s-1", "alice", ("apple", 2, "3.50"))
        await system.order("s-2", "bob", ("apple", 1, "50.00"))
        await system.order("s-3", "alice", ("pear", 1, "1.00"))
        await poison(broker, CLIENT_USER, "orders", "order.requested")
        await poison(broker, ORCHESTRATOR_USER, "saga.commands", "inventory")
        labels = {i: o.label for i, o in (await system.outcomes({"s-1", "s-2", "s-3"})).items()}
        assert labels == {"s-1": "completed", "s-2": "PAYMENT_DECLINED", "s-3": "UNKNOWN_SKU"}
        for process in ("orchestrator", "inventory"):
            await wait_for_metric(system, process, "saga_messages_dead_lettered_total")

        cli_env = {"SAGA_AMQP_URL": broker.url(CLIENT_USER), **env}
        for args in (("submit", "--customer", "alice", "--item", "apple:1:3.50", "--wait"),
                     ("status", "s-2"), ("status", "s-1", "--json"), ("list",),
                     ("seed", "--sku", "apple=1")):
            result = await sagactl(cli_env, *args)
            assert result.returncode == 0, result.stderr
            outputs.append((f"sagactl {args[0]}", result.stdout + result.stderr))

        # The broker drops every connection: each process logs it and reconnects (after
        # aio-pika's 5 s delay), the path where a library is most likely to print its URL.
        rabbitmqctl("close_all_connections", "-p", broker.vhost, "security test")
        await asyncio.sleep(7.0)
    finally:
        await system.stop()

    logs = sorted((tmp_path / "logs").glob("*.log"))
    assert {p.stem for p in logs} == set(OWNERS)
    texts = [(p.name, p.read_text(errors="replace")) for p in logs]
    joined = "".join(t for _, t in texts)
    assert "dead-lettered message poison-1" in joined, "not the logs of this run"
    assert "CONNECTION_FORCED" in joined, "the dropped connections were not logged"
    # The URLs were printed, masked: exactly where a password would otherwise be.
    assert f"{broker.users[ORCHESTRATOR_USER]}:******@" in joined
    passwords = [*broker.passwords.values(), mongo_auth.password]
    assert not leaks([*texts, *outputs], passwords)


def secret_env() -> tuple[dict[str, str], list[str]]:
    """Every URL variable, each with its own distinctive password."""
    amqp, mongo = f"Aq{secrets.token_hex(10)}", f"Mg{secrets.token_hex(10)}"
    env = {"SAGA_AMQP_URL": f"amqp://saga-order:{amqp}@broker:5672/saga",
           "SAGA_MONGO_URL": f"mongodb://saga-app:{mongo}@db1,db2/?replicaSet=rs0"}
    owners = {f"SAGA_MONGO_URL_{o.upper()}": f"mongodb://{o}:{mongo}{o}@db/" for o in OWNERS}
    return {**env, **owners}, [amqp, mongo]


def test_settings_reprs_hide_credentials() -> None:
    """repr, str and the JSON dump of every settings object mask the passwords."""
    env, passwords = secret_env()
    settings = (orchestrator_from_env(env), worker_from_env(env, "order"))
    shown = [(f"{type(s).__name__} {how}", text) for s in settings
             for how, text in (("repr", repr(s)), ("str", str(s)),
                               ("json", s.model_dump_json()), ("dump", str(s.model_dump())))]
    assert not leaks(shown, passwords)
    assert "**********" in shown[0][1]


def test_settings_errors_hide_credentials() -> None:
    """A bad variable next to the URLs is reported without any of them."""
    env, passwords = secret_env()
    with pytest.raises(SettingsError) as caught:
        orchestrator_from_env({**env, "SAGA_PREFETCH": "many"})
    assert "SAGA_PREFETCH" in str(caught.value)
    assert not leaks([("error", str(caught.value))], passwords)


@pytest.mark.parametrize("url", [
    "amqp://saga-order:{pw}@broker:5672/saga",
    "mongodb://saga-app:{pw}@db1:27017,db2:27017/?replicaSet=rs0&authSource=admin",
    "mongodb://saga-app:{pw}%40x@db/",
])
def test_redact_masks_the_password(url: str) -> None:
    """redact() keeps user and host and masks the password, also with several hosts or an
    escaped character."""
    password = f"Pw{secrets.token_hex(8)}"
    shown = redact(url.format(pw=password))
    assert password not in shown
    assert ":***@" in shown


@pytest.mark.parametrize("url", [
    "mongodb://db:27017/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:{pw}",
    "mongodb://u@db/?tls=true&tlsCertificateKeyFilePassword={pw}&replicaSet=rs0",
    "mongodb+srv://u:{pw}@cluster.example.com/app?retryWrites=true&w=majority",
    "amqps://saga:{pw}@broker:5671/saga?cafile=/etc/ca.pem&password={pw}",
    "amqp://broker/?heartbeat=30&client_properties_secret={pw}",
])
def test_redact_masks_secrets_in_query_strings(url: str) -> None:
    """Drivers accept secrets as query options too (PyMongo's authMechanismProperties and
    tlsCertificateKeyFilePassword, a password option of an AMQP client): only options known
    to be harmless keep their values."""
    password = f"Pw{secrets.token_hex(8)}"
    shown = redact(url.format(pw=password))
    assert password not in shown
    assert "=***" in shown or ":***@" in shown
    for harmless in ("replicaSet=rs0", "retryWrites=true", "w=majority", "heartbeat=30"):
        if harmless in url:
            assert harmless in shown


def formatted(error: BaseException) -> str:
    """The exception as a process would log it (JSON line) and as Python would print it."""
    record = logging.LogRecord("infra.adapters.rabbit", logging.ERROR, __file__, 0, "start failed", None,
                               (type(error), error, error.__traceback__))
    return JsonFormatter("worker").format(record) + "".join(traceback.format_exception(error))


async def test_unreachable_broker_errors_hide_the_password(broker: SecureVhost) -> None:
    """Neither a closed port nor a refused login puts the password in the exception, its
    traceback, or sagactl's one-line error."""
    password = f"Pw{secrets.token_hex(12)}"
    closed = f"amqp://saga-order:{password}@127.0.0.1:{free_port()}/saga"
    wrong = broker.url(service_user("order")).replace(broker.passwords[service_user("order")],
                                                       password)
    texts = []
    for url in (closed, wrong):
        with pytest.raises((AMQPError, ConnectionError, OSError)) as caught:
            await RabbitTransport(url, connection_name="pytest", connect_timeout=0.5).connect()
        texts.append((f"transport {caught.type.__name__}", formatted(caught.value)))
        with pytest.raises(connect.Unreachable) as unreachable:
            await connect.transport(worker_from_env({"SAGA_AMQP_URL": url}, "order").common,
                                    within=0.5)
        texts.append(("sagactl connect", str(unreachable.value)))
        assert ":***@" in str(unreachable.value)
    assert not leaks(texts, [password])


async def test_sagactl_errors_hide_credentials() -> None:
    """sagactl reports an unreachable broker and an unreachable database without passwords."""
    password = f"Pw{secrets.token_hex(12)}"
    env = {"SAGA_AMQP_URL": f"amqp://saga-client:{password}@127.0.0.1:{free_port()}/saga",
           "SAGA_MONGO_URL": f"mongodb://saga-app:{password}@127.0.0.1:{free_port()}/"
                             f"?directConnection=true"}
    submit, status = await asyncio.gather(
        sagactl(env, "submit", "--customer", "alice", "--item", "apple:1:1.00"),
        sagactl(env, "status", "s-1"))
    assert (submit.returncode, status.returncode) == (3, 3), submit.stderr + status.stderr
    assert "RabbitMQ at amqp://saga-client:***@" in submit.stderr
    assert "MongoDB at mongodb://saga-app:***@" in status.stderr
    assert not leaks([("submit", submit.stdout + submit.stderr),
                      ("status", status.stdout + status.stderr)], [password])
