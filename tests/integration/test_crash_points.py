"""Injected crash points: the worker process dies at the chosen moment, and the command it
held is redelivered to the next incarnation, which answers it without crashing again."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from contracts.topology import REPLY_KEY, Topology
from harness.processes import ManagedProcess, free_port
from infra.adapters.rabbit import RabbitTransport
from tests.contract.test_boundary import eventually
from tests.integration.test_worker_runtime import Rig, reserve


def inventory_process(amqp_url: str, topology: Topology, log: Path) -> ManagedProcess:
    """The inventory worker as an OS process that crashes after every first reply."""
    port = free_port()
    env = {**os.environ, "SAGA_AMQP_URL": amqp_url, "SAGA_NAMESPACE": topology.namespace,
           "SAGA_STORE": "memory", "SAGA_DECLARE_TOPOLOGY": "false",
           "SAGA_METRICS_HOST": "127.0.0.1", "SAGA_METRICS_PORT": str(port),
           "SAGA_FAULT_CRASH": "1", "SAGA_FAULT_CRASH_POINTS": "after_publish"}
    return ManagedProcess("inventory", [sys.executable, "-m", "workers", "inventory"], env, log,
                          port)


async def test_a_redelivered_command_does_not_crash_the_worker_again(
        amqp_url: str, topology: Topology, rabbit: RabbitTransport, tmp_path: Path) -> None:
    """Before, every incarnation crashed again on the command the last one died holding:
    a crash loop until the broker dead-lettered the command (delivery limit)."""
    process = inventory_process(amqp_url, topology, tmp_path / "inventory.log")
    rig = Rig(rabbit, topology, await rabbit.temporary_queue(topology.replies_exchange,
                                                              (REPLY_KEY,)), {})
    try:
        process.start()
        await process.wait_ready(30)
        await rig.send("inventory.reserve.prepare", reserve("o-1", 1), "cmd-1")
        await rig.replies_to("cmd-1")  # answered, then the process dies before the ack

        async def exited() -> bool | None:
            return None if process.alive else True

        await eventually(exited, 20)
        process.start()
        await process.wait_ready(30)
        await rig.replies_to("cmd-1", count=2)  # the redelivery is answered again...
        await asyncio.sleep(1.0)
        assert process.alive, process.log_path.read_text()[-2000:]  # ...and survived
        assert await rabbit.depth(topology.command_queue("inventory")) == 0
    finally:
        process.stop()
