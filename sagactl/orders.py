"""Publish order requests and collect their outcomes, through the public contract only."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace

from contracts.envelope import (
    CodecError,
    Envelope,
    WireMessage,
    encode,
    new_message_id,
    read_payload,
    utcnow,
)
from contracts.orders import OrderCompleted, OrderFailed, OrderRequested
from contracts.registry import ORDER_COMPLETED, ORDER_FAILED, ORDER_REQUESTED
from contracts.topology import COMPLETED_KEY, FAILED_KEY, REQUESTED_KEY, Topology
from infra.transport import Delivery, Transport


def request_message(order: OrderRequested, message_id: str | None = None,
                    traceparent: str | None = None) -> WireMessage:
    """An ``order.requested`` message with a full envelope (and the caller's trace context,
    if it has one: the saga then joins that trace)."""
    order_id = order.order_id or ""
    envelope = Envelope(message_id=message_id or new_message_id(),
                        correlation_id=order_id or "unassigned", message_type=ORDER_REQUESTED,
                        timestamp=utcnow(), traceparent=traceparent)
    return encode(envelope, order)


async def submit(transport: Transport, topology: Topology, order: OrderRequested,
                 traceparent: str | None = None) -> None:
    """Publish one order request (confirmed by the broker)."""
    await transport.publish(topology.orders_exchange, REQUESTED_KEY,
                            request_message(order, traceparent=traceparent))


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one order ended, as announced on the orders exchange."""

    order_id: str
    completed: OrderCompleted | None
    failed: OrderFailed | None
    traceparent: str | None = None  # of the outcome event: it carries the saga's trace id

    @property
    def label(self) -> str:
        """'completed', or the failure reason code."""
        if self.failed is None:
            return "completed"
        return self.failed.reason_code.value


class OutcomeWatcher:
    """Collects order.completed / order.failed events from a private queue.

    Start it before publishing, so that no outcome can be missed. Outcomes may arrive
    twice (the outbox re-publishes after a crash); each order is kept once.
    """

    def __init__(self, transport: Transport, topology: Topology) -> None:
        self._transport = transport
        self._topology = topology
        self.outcomes: dict[str, Outcome] = {}
        self.duplicates = 0
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Bind the private queue and start consuming."""
        queue = await self._transport.temporary_queue(self._topology.orders_exchange,
                                                      (COMPLETED_KEY, FAILED_KEY))
        await self._transport.consume(queue, self._on_message, prefetch=256)

    async def _on_message(self, delivery: Delivery) -> None:
        message = delivery.message
        try:
            if message.type == ORDER_COMPLETED:
                done = read_payload(message, OrderCompleted)
                outcome = Outcome(done.order_id, done, None)
            elif message.type == ORDER_FAILED:
                failed = read_payload(message, OrderFailed)
                outcome = Outcome(failed.order_id, None, failed)
            else:
                outcome = None
        except CodecError:
            outcome = None
        await delivery.ack()
        if outcome is None:
            return
        trace = message.headers.get("traceparent")
        outcome = replace(outcome, traceparent=trace if isinstance(trace, str) else None)
        if outcome.order_id in self.outcomes:
            self.duplicates += 1
        self.outcomes[outcome.order_id] = outcome
        self._changed.set()

    async def wait_for_count(self, count: int, timeout: float) -> int:
        """Wait until ``count`` distinct outcomes arrived or the time is up."""
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < count and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 1.0)
        return len(self.outcomes)

    async def wait_for(self, order_ids: set[str], timeout: float) -> set[str]:
        """Wait until every id has an outcome or the time is up; returns the missing ids."""
        deadline = time.monotonic() + timeout
        while True:
            missing = order_ids - self.outcomes.keys()
            remaining = deadline - time.monotonic()
            if not missing or remaining <= 0:
                return missing
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
