"""Fault injection for demos and tests, configured by FaultSettings."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import signal
from typing import NoReturn

from contracts.envelope import WireMessage
from contracts.topology import Plan, Topology
from infra.settings import FaultSettings
from infra.transport import Handler, Transport

log = logging.getLogger(__name__)


class Dice:
    """A seeded random source, so that a faulty run can be repeated."""

    def __init__(self, seed: int | None) -> None:
        self._random = random.Random(seed)
        self._seed = seed

    def roll(self, probability: float) -> bool:
        """True with the given probability."""
        return probability > 0 and self._random.random() < probability

    def roll_for(self, key: str, probability: float) -> bool:
        """True with the given probability, the same for the same key every time (a
        command run again after waiting for a lock gets the verdict it got before)."""
        digest = hashlib.blake2b(f"{self._seed}:{key}".encode(), digest_size=8).digest()
        return probability > 0 and int.from_bytes(digest) / 2**64 < probability

    def uniform(self, low: float, high: float) -> float:
        """A number between low and high."""
        return self._random.uniform(low, high)


def faulty(transport: Transport, faults: FaultSettings) -> Transport:
    """The transport itself, or wrapped when publishing faults are configured."""
    if faults.duplicate_rate or faults.reorder_ms:
        return FaultyTransport(transport, faults, Dice(faults.seed))
    return transport


def crash_now() -> NoReturn:
    """SIGKILL this process: no cleanup, no flushing, exactly like a crash."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit(137)  # not reached


class FaultyTransport:
    """Delays publishes at random (so that messages overtake each other) and publishes some
    twice, as a broker redelivery or a retrying producer would. Still returns only once the
    broker confirmed."""

    def __init__(self, inner: Transport, faults: FaultSettings, dice: Dice) -> None:
        self._inner = inner
        self._faults = faults
        self._dice = dice
        self.duplicated = 0

    @property
    def user(self) -> str | None:
        """The inner connection's user."""
        return self._inner.user

    async def publish(self, exchange: str, routing_key: str, message: WireMessage, *,
                      must_route: bool = True) -> bool:
        """Publish, perhaps late, and sometimes publish again."""
        if self._faults.reorder_ms:
            await asyncio.sleep(self._dice.uniform(0, self._faults.reorder_ms) / 1000)
        routed = await self._inner.publish(exchange, routing_key, message, must_route=must_route)
        if self._dice.roll(self._faults.duplicate_rate):
            self.duplicated += 1
            log.warning("injected fault duplicate", extra={"fault": "duplicate"})
            await self._inner.publish(exchange, routing_key, message, must_route=must_route)
        return routed

    async def declare(self, topology: Topology, plan: Plan) -> None:
        """Delegate."""
        await self._inner.declare(topology, plan)

    async def undeclare(self, topology: Topology, plan: Plan) -> None:
        """Delegate."""
        await self._inner.undeclare(topology, plan)

    async def consume(self, queue: str, handler: Handler, prefetch: int) -> None:
        """Delegate."""
        await self._inner.consume(queue, handler, prefetch)

    async def cancel(self, queue: str) -> None:
        """Delegate."""
        await self._inner.cancel(queue)

    async def temporary_queue(self, exchange: str, routing_keys: tuple[str, ...]) -> str:
        """Delegate."""
        return await self._inner.temporary_queue(exchange, routing_keys)

    async def get(self, queue: str) -> WireMessage | None:
        """Delegate."""
        return await self._inner.get(queue)

    async def depth(self, queue: str) -> int:
        """Delegate."""
        return await self._inner.depth(queue)

    async def close(self) -> None:
        """Delegate."""
        await self._inner.close()


def latency_ms(faults: FaultSettings, dice: Dice) -> int:
    """The latency to add to one command: the usual, or now and then a slow one."""
    return faults.latency_ms + (faults.slow_ms if dice.roll(faults.slow_rate) else 0)


async def added_latency(milliseconds: int) -> None:
    """Sleep ``milliseconds``, to model a slow dependency (and provoke step timeouts)."""
    if milliseconds > 0:
        await asyncio.sleep(milliseconds / 1000)
