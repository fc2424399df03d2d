"""Publish order requests and collect their outcomes, through the public contract only."""

from __future__ import annotations

from dataclasses import dataclass, replace

from client.events import Collector
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
from contracts.topology import Topology
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
    await transport.publish(topology.orders_exchange, ORDER_REQUESTED,
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
        return self.failed.reason_code


class OutcomeWatcher(Collector[Outcome]):
    """Collects order.completed / order.failed events from a private queue, once per order.

    Start it before publishing, so that no outcome can be missed.
    """

    def __init__(self, transport: Transport, topology: Topology) -> None:
        super().__init__()
        self._transport = transport
        self._topology = topology

    @property
    def outcomes(self) -> dict[str, Outcome]:
        """The outcome of each order seen so far."""
        return self.kept

    async def start(self) -> None:
        """Bind the private queue and start consuming."""
        queue = await self._transport.temporary_queue(self._topology.orders_exchange,
                                                      (ORDER_COMPLETED, ORDER_FAILED))
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
        self.keep(outcome.order_id,
                  replace(outcome, traceparent=trace if isinstance(trace, str) else None))
