"""``sagactl dlq`` on RabbitMQ: list, show, replay and purge dead letters, losing nothing.

The inventory worker runs in-process on the real broker. One dead letter is its own (a body
that is not JSON, dead-lettered with a reason and an id); the other is a valid command put
in the dead-letter queue the way the broker does at its delivery limit (no id, no reason of
ours): a replay sends it to the worker, which answers it.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from client.deadletters import DeadLetterError, run
from contracts.envelope import Envelope, WireMessage, encode, utcnow
from contracts.topology import REPLY_KEY, Topology, dead_letter_queue
from infra.adapters.rabbit import RabbitTransport
from infra.consumer import DEAD_LETTER_ID_HEADER
from infra.settings import CommonSettings
from tests.contract.test_boundary import eventually
from tests.integration.test_worker_runtime import Rig, reserve
from workers import inventory
from workers.app import Worker
from workers.metrics import WorkerMetrics
from workers.settings import WorkerSettings
from workers.store_memory import MemoryDocumentStore

DLQ = "inventory.commands.dlq"


@pytest.fixture
async def worker(amqp_url: str, topology: Topology,
                 rabbit: RabbitTransport) -> AsyncIterator[Worker]:
    """The inventory worker, consuming this test's namespace."""
    common = CommonSettings(amqp_url=SecretStr(amqp_url), namespace=topology.namespace,
                            store="memory")
    transport = RabbitTransport(amqp_url, connection_name="pytest-inventory", connect_timeout=10)
    await transport.connect()
    running = Worker(settings=WorkerSettings(common=common, service="inventory"),
                     spec=inventory.SERVICE, transport=transport, store=MemoryDocumentStore(),
                     metrics=WorkerMetrics(CollectorRegistry()))
    await running.start()
    yield running
    await running.stop()


async def dlq(common: CommonSettings, *args: str | None) -> tuple[int, str]:
    """Run one ``sagactl dlq`` action; its exit code and output."""
    action, ident, queue, as_json = (*args, None, None, None)[:4]
    out = io.StringIO()
    assert action is not None
    code = await run(common, action, ident, queue, as_json == "json", "olga", out)
    return code, out.getvalue()


async def test_list_show_replay_and_purge(amqp_url: str, topology: Topology,
                                          rabbit: RabbitTransport, worker: Worker) -> None:
    common = CommonSettings(amqp_url=SecretStr(amqp_url), namespace=topology.namespace)
    queue = topology.command_queue("inventory")
    await rabbit.publish(topology.commands_exchange, "inventory", WireMessage(
        b"not json", message_id="poison-1", type="inventory.reserve.prepare"))
    envelope = Envelope(message_id="cmd-1", correlation_id="o-1",
                        message_type="inventory.reserve.prepare", timestamp=utcnow())
    await rabbit.publish(topology.dead_letter_exchange, queue,
                         encode(envelope, reserve("o-1", 1)))  # as the broker would
    dead = dead_letter_queue(queue)

    async def two() -> int | None:
        return await rabbit.depth(dead) == 2 or None

    await eventually(two, 20)
    code, text = await dlq(common, "list", None, DLQ, "json")
    assert code == 0
    rows = {r["message_id"]: r for r in json.loads(text)}
    assert set(rows) == {"poison-1", "cmd-1"}
    assert rows["poison-1"]["reason"].startswith("invalid envelope")
    assert all(r["id"] for r in rows.values())
    again = {r["message_id"]: r["id"] for r in json.loads((await dlq(common, "list", None, DLQ,
                                                                     "json"))[1])}
    assert again == {m: r["id"] for m, r in rows.items()}  # ids are stable across reads
    poison, valid = rows["poison-1"]["id"], rows["cmd-1"]["id"]

    shown = json.loads((await dlq(common, "show", valid))[1])
    assert shown["replayable"] == "yes"
    assert shown["from"] == queue
    assert "still invalid" in json.loads((await dlq(common, "show", poison))[1])["replayable"]

    replies = Rig(rabbit, topology, await rabbit.temporary_queue(topology.replies_exchange,
                                                                  (REPLY_KEY,)), {})
    code, text = await dlq(common, "replay", None, DLQ)
    assert code == 1  # one refused
    assert f"{valid}: replayed by olga" in text
    assert f"{poison}: not replayed: still invalid" in text
    [(_, reply)] = await replies.replies_to("cmd-1")  # the worker handled the replay
    assert reply.saga_id == "o-1"
    left = json.loads((await dlq(common, "list", None, DLQ, "json"))[1])
    assert [r["id"] for r in left] == [poison]  # refused: still there, same id

    with pytest.raises(DeadLetterError, match="no dead letter with id nope"):
        await dlq(common, "purge", "nope")
    code, text = await dlq(common, "purge", poison)
    assert (code, text.splitlines()[0]) == (0, f"{poison}: purged by olga")
    assert await rabbit.depth(dead) == 0


async def test_a_dead_letter_gets_its_id_when_it_is_dead_lettered(
        topology: Topology, rabbit: RabbitTransport, worker: Worker) -> None:
    await rabbit.publish(topology.commands_exchange, "inventory", WireMessage(
        b"{}", message_id="poison-2", type="inventory.reserve.prepare"))
    dead = await eventually(lambda: rabbit.get(dead_letter_queue(topology.command_queue(
        "inventory"))), 20)
    assert isinstance(dead.headers[DEAD_LETTER_ID_HEADER], str)
    assert len(str(dead.headers[DEAD_LETTER_ID_HEADER])) == 32


async def test_queues_that_were_never_declared_hold_no_dead_letters(amqp_url: str) -> None:
    common = CommonSettings(amqp_url=SecretStr(amqp_url), namespace=f"t-{uuid.uuid4().hex[:8]}")
    assert await dlq(common, "list") == (0, "0 dead letter(s)\n")
