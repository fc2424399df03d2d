"""``sagactl audit`` as an operator runs it: against MongoDB and RabbitMQ, in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from contracts.commands import Operation
from contracts.topology import Topology
from engine.state import SagaStatus
from harness.processes import ROOT
from infra.adapters.rabbit import RabbitTransport
from orchestrator.app import definitions
from tests.audit.conftest import Load
from tests.audit.world import SETTINGS, Dump, command_message, dead_lettered
from workers.inventory import StockItem
from workers.shipping import Shipment

pytestmark = pytest.mark.timeout(120)

SCREEN = 50  # lines


@pytest.fixture
def env(mongo_urls: dict[str, str], amqp_url: str, tag: str,
        rabbit: RabbitTransport, topology: Topology) -> dict[str, str]:
    """The environment of an operator's shell pointing at this test's deployment (whose
    queues the ``rabbit`` fixture declared)."""
    return {**{f"SAGA_MONGO_URL_{owner.upper()}": url for owner, url in mongo_urls.items()},
            "SAGA_MONGO_URL": mongo_urls["orchestrator"], "SAGA_MONGO_DB": f"audit_{tag}",
            "SAGA_AMQP_URL": amqp_url, "SAGA_NAMESPACE": topology.namespace}


async def sagactl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``sagactl`` in a subprocess without blocking the event loop."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "sagactl", *args], cwd=ROOT, text=True,
        capture_output=True, timeout=90, env={**os.environ, **env})


async def test_a_clean_deployment_exits_0(world: Dump, load_mongo: Load,
                                          env: dict[str, str]) -> None:
    """Every invariant holds, the dead-letter queues included: exit code 0 and a short report."""
    await load_mongo(world)
    result = await sagactl(env, "audit")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "OK: every invariant holds"
    assert "0 dead letters checked" in lines[0]
    assert "FAILED" not in result.stdout
    assert len(lines) <= SCREEN


async def test_a_corrupted_deployment_exits_1_with_one_screen(
        world: Dump, load_mongo: Load, env: dict[str, str], rabbit: RabbitTransport,
        topology: Topology) -> None:
    """A lost shipment, stock from nowhere and a dead-lettered valid command are each named
    with their order or SKU on one screen; ``--json`` lists the same for programs."""
    item = world.doc("inventory", StockItem, "SKU-A")
    await load_mongo(world.without("shipping", Shipment, "ok-1").put(
        "inventory", item.model_copy(update={"on_hand": item.on_hand + 3})))
    service, command = command_message(definitions(SETTINGS), world.saga("ok-2"),
                                       "approve_order", Operation.FORWARD, 4)
    queue = topology.command_queue(service)
    await rabbit.publish(topology.dead_letter_exchange, queue,
                         dead_lettered(command, queue, "handler failed: boom"))

    text = await sagactl(env, "audit")
    assert text.returncode == 1, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) <= SCREEN, text.stdout
    # The lost shipment breaks its fence and both its prepare's and its confirm's inbox records.
    assert lines[-1].startswith("FAILED: 6 violation(s) of 5 invariant(s)")
    assert any(line.startswith("  ok-1 ") and "no scheduled shipment" in line for line in lines)
    assert any(line.startswith("  SKU-A (sku) ") for line in lines)
    assert any(line.startswith("  order:ok-2 ") and "valid message dead-lettered" in line
               for line in lines)

    machine = await sagactl(env, "audit", "--json")
    assert machine.returncode == 1
    body = json.loads(machine.stdout)
    failed = {i["name"]: [v["subject"] for v in i["violations"]] for i in body["invariants"]
              if i["status"] == "failed"}
    assert failed == {"approved order shipped and notified once": ["ok-1"],
                      "stock conserved": ["SKU-A"], "fences match effects": ["ok-1"],
                      "inbox matches effects": ["ok-1", "ok-1"], "dead letters are invalid": ["order:ok-2"]}
    assert body["exit_code"] == 1
    assert body["dead_letters_checked"] == 1


async def test_only_sagas_needing_attention_exit_4(world: Dump, load_mongo: Load,
                                                   env: dict[str, str]) -> None:
    """Sagas needing attention are printed with their reason and get an exit code of their
    own, distinct from a violated invariant."""
    attention = replace(world.saga("ok-3"), status=SagaStatus.NEEDS_ATTENTION,
                        attention="approve_order forward failed permanently: SERVICE_ERROR x")
    await load_mongo(world.with_saga(attention))
    result = await sagactl(env, "audit")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "Needs attention: 1 saga(s)" in result.stdout
    assert any(line.startswith("  order:ok-3 ") and "approve_order forward failed" in line
               for line in result.stdout.splitlines())
    assert result.stdout.splitlines()[-1].startswith("ATTENTION")


async def test_without_a_broker_the_queues_are_skipped_with_a_note(
        world: Dump, load_mongo: Load, env: dict[str, str]) -> None:
    """An unreachable broker does not stop the audit of the stores; the report says what was
    not checked, and never shows the password."""
    await load_mongo(world)
    result = await sagactl({**env, "SAGA_AMQP_URL": "amqp://guest:hunter2@127.0.0.1:1/"},
                           "audit", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads(result.stdout)
    assert body["dead_letters_checked"] is None
    assert "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/" in body["notes"][0]
    assert "hunter2" not in result.stdout + result.stderr
    skipped = await sagactl(env, "audit", "--no-queues")
    assert skipped.returncode == 0
    assert "dead-letter queues not checked (--no-queues)" in skipped.stdout
