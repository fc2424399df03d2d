"""Collect the public outcome events of any definition, through its public contract only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from infra.transport import Delivery, Transport


@dataclass(frozen=True, slots=True)
class Event:
    """One outcome: its routing key (type) and its body."""

    type: str
    body: dict[str, Any]

    @property
    def label(self) -> str:
        """``completed`` (or ``committed``), or the failure's reason code."""
        return str(self.body.get("reason_code") or self.type.partition(".")[2])


class Collector[T]:
    """Values kept once per key as they arrive, and a way to wait for them.

    A value may be announced twice (the outbox re-publishes after a crash): the repeat is
    counted, not kept twice.
    """

    def __init__(self) -> None:
        self.kept: dict[str, T] = {}
        self.duplicates = 0
        self._changed = asyncio.Event()

    def keep(self, key: str, value: T) -> None:
        """Record the value for ``key`` and wake the waiters."""
        self.duplicates += key in self.kept
        self.kept[key] = value
        self._changed.set()

    async def wait_for(self, keys: set[str], timeout: float) -> set[str]:
        """Wait until every key has a value or the time is up; returns the missing ones."""
        deadline = time.monotonic() + timeout
        while True:
            missing = keys - self.kept.keys()
            remaining = deadline - time.monotonic()
            if not missing or remaining <= 0:
                return missing
            await self._changes(remaining)

    async def wait_for_count(self, count: int, timeout: float) -> int:
        """Wait until ``count`` distinct keys have a value or the time is up."""
        deadline = time.monotonic() + timeout
        while len(self.kept) < count and (remaining := deadline - time.monotonic()) > 0:
            await self._changes(remaining)
        return len(self.kept)

    async def _changes(self, remaining: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))


class EventWatcher(Collector[Event]):
    """Outcome events of one exchange, kept once per business key (``key_field``).

    Start it before publishing, so that no outcome can be missed.
    """

    def __init__(self, transport: Transport, exchange: str, keys: tuple[str, ...],
                 key_field: str) -> None:
        super().__init__()
        self._transport = transport
        self._exchange = exchange
        self._keys = keys
        self._key_field = key_field

    @property
    def events(self) -> dict[str, Event]:
        """The outcome of each business key seen so far."""
        return self.kept

    async def start(self) -> None:
        """Bind a private queue and start consuming."""
        queue = await self._transport.temporary_queue(self._exchange, self._keys)
        await self._transport.consume(queue, self._on_message, prefetch=256)

    async def _on_message(self, delivery: Delivery) -> None:
        message = delivery.message
        await delivery.ack()
        try:
            body = json.loads(message.body)
        except ValueError:
            return
        key = body.get(self._key_field) if isinstance(body, dict) else None
        if isinstance(key, str) and message.type in self._keys:
            self.keep(key, Event(message.type, body))
