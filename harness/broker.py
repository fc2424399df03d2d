"""The local RabbitMQ node, driven by its own tools, for the chaos run's broker faults.

Every ``rabbitmqctl`` call has a deadline: on 2026-12-02 a ``stop_app`` on RabbitMQ 3.10
never returned, the chaos run waited on it for good and the node stayed wedged for every
test after it. A call that overruns is killed, and the node is brought back the way an
operator would: ``start_app``, and if that does not answer either, a hard restart (the
node's processes killed, ``rabbitmq-server -detached``, ``await_startup``). Quorum queues
keep what they acknowledged across both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from contracts.errors import SagaSystemError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalBroker:
    """The commands that control the local node (replaceable, for tests)."""

    ctl: str = "rabbitmqctl"
    server: tuple[str, ...] = ("rabbitmq-server", "-detached")
    kill: tuple[str, ...] = ("pkill", "-9", "-f", "beam.smp")
    deadline: float = 60.0  # seconds for one rabbitmqctl call
    startup_deadline: float = 180.0

    async def ctl_call(self, *args: str, deadline: float | None = None) -> bool:
        """Run ``rabbitmqctl ARGS``; True when it succeeded within its deadline."""
        return await _run((self.ctl, *args), deadline or self.deadline)

    async def answers(self) -> bool:
        """True when the node runs and answers ``status``."""
        return await self.ctl_call("status", deadline=30.0)

    async def recover(self) -> str:
        """Bring the node's application back up; how it was done ("start_app" or "hard
        restart"). Raises BrokerDown when even a hard restart does not answer."""
        if await self.ctl_call("start_app"):
            return "start_app"
        log.warning("rabbitmqctl start_app did not succeed; restarting the node hard")
        await _run(self.kill, 10.0)
        await asyncio.sleep(2.0)
        await _run(self.server, 30.0)
        # await_startup fails at once while the new node is not yet reachable at all, so it
        # is asked again until the node answers or the startup deadline passes.
        deadline = time.monotonic() + self.startup_deadline
        while (left := deadline - time.monotonic()) > 0:
            if await self.ctl_call("await_startup", deadline=max(1.0, min(left, 60.0))):
                return "hard restart"
            await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        raise BrokerDown("the local RabbitMQ did not come back after a hard restart")


class BrokerDown(SagaSystemError, RuntimeError):
    """The local node could not be brought back."""


async def _run(argv: tuple[str, ...], deadline: float) -> bool:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    except FileNotFoundError:
        return False
    try:
        return await asyncio.wait_for(process.wait(), deadline) == 0
    except TimeoutError:
        log.warning("%s did not finish within %.0f s; killed", " ".join(argv), deadline)
        process.kill()
        await process.wait()
        return False
