"""The outbox: messages are written with the saga, published after the write, then cleared.

A crash between the write and the publish loses nothing: the relay publishes whatever
is still in an outbox after a grace period (and everything, once, at start-up).
Publishing twice is harmless, because message ids are deterministic and every
participant deduplicates by message id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from contracts.envelope import (
    WireMessage,
    envelope_headers,
)
from contracts.topology import Topology
from contracts.trace import trace_id_of
from contracts.trace import traceparent as trace_header
from engine.decide import Decision
from engine.definition import OutcomeEvent
from infra.errors import PublishFailed, SagaSystemError
from infra.transport import Transport
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.store import OutboxMessage, SagaStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def outbox_messages(decision: Decision[Any], topology: Topology, causation_id: str | None,
                    now: float, traceparent: str | None,
                    outcome_exchange: str | None) -> tuple[OutboxMessage, ...]:
    """Commands and the outcome event of a decision, ready to be stored. Each carries the
    saga's trace (or, for a saga stored without one, the trace of the triggering message).
    The outcome goes to the definition's public exchange (none: not announced)."""
    saga_id = decision.state.saga_id
    trace_id = decision.state.trace_id or trace_id_of(traceparent)

    def trace(message_id: str) -> str | None:
        return None if trace_id is None else trace_header(trace_id, message_id)

    messages = [
        # A command's correlation id is the saga id its participant sees (a retried
        # round's, contracts.commands.run_id), which the participant checks it against.
        OutboxMessage(c.message_id, topology.commands_exchange, c.service, c.type,
                      c.payload.model_dump_json(), c.payload.saga_id, causation_id, now,
                      trace(c.message_id))
        for c in decision.commands
    ]
    if decision.outcome is not None and outcome_exchange is not None:
        outcome = outcome_message(saga_id, outcome_exchange, decision.outcome, now,
                                  causation_id=causation_id)
        messages.append(replace(outcome, traceparent=trace(outcome.message_id)))
    return tuple(messages)


def outcome_message(saga_id: str, exchange: str, event: OutcomeEvent, now: float, *,
                    suffix: str = "outcome", causation_id: str | None = None) -> OutboxMessage:
    """An outcome event as an outbox entry; its id is derived from the saga's, so that a
    repeated announcement is recognisably the same message."""
    message_id = f"{saga_id}:{suffix}"
    return OutboxMessage(message_id, exchange, event.type, event.type,
                         event.payload.model_dump_json(), saga_id, causation_id, now,
                         must_route=False)


def to_wire_message(m: OutboxMessage, reply_to: str | None = None) -> WireMessage:
    """The wire form of an outbox entry, with its full envelope.

    Every field was validated on the way in (the ids are derived from validated input),
    so this cannot fail: a relay or a recovery never stops on one entry.
    """
    return WireMessage(body=m.body.encode(), message_id=m.message_id,
                       correlation_id=m.correlation_id, type=m.type,
                       timestamp=datetime.fromtimestamp(m.created_at, UTC),
                       headers=envelope_headers(m.causation_id, m.traceparent),
                       reply_to=reply_to)


def _no_reply_key(_: OutboxMessage) -> str | None:
    return None


class OutboxPublisher:
    """Publishes outbox entries and clears the confirmed ones in batches."""

    def __init__(self, transport: Transport, store: SagaStore, metrics: OrchestratorMetrics,
                 clock: Clock, *, relay_after: float = 10.0, sweep_interval: float = 0.05,
                 reply_to: Callable[[OutboxMessage], str | None] = _no_reply_key) -> None:
        self._transport = transport
        self._reply_to = reply_to  # where a command asks for its reply (its partition's key)
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._relay_after = relay_after
        self._sweep_interval = sweep_interval
        self._confirmed: list[tuple[str, list[str]]] = []
        self._wake = asyncio.Event()

    async def publish_now(self, message: OutboxMessage) -> None:
        """Publish a message that belongs to no stored saga (an answer to a refused
        request); raises PublishFailed, so the request is delivered again."""
        if not await self._transport.publish(message.exchange, message.routing_key,
                                             to_wire_message(message),
                                             must_route=message.must_route):
            self._metrics.unrouted.inc()
        self._metrics.published.inc()

    async def publish(self, saga_id: str, messages: Sequence[OutboxMessage]) -> bool:
        """Publish concurrently (confirms pipeline); True when every message was confirmed."""
        if not messages:
            return True
        results = await asyncio.gather(*(self._publish_one(m) for m in messages))
        done = [m.message_id for m, ok in zip(messages, results, strict=True) if ok]
        if done:
            self._confirmed.append((saga_id, done))
            self._wake.set()
        return all(results)

    async def _publish_one(self, m: OutboxMessage) -> bool:
        try:
            routed = await self._transport.publish(
                m.exchange, m.routing_key, to_wire_message(m, self._reply_to(m)),
                must_route=m.must_route)
        except PublishFailed as e:
            self._metrics.publish_failures.inc()
            log.warning("publish of %s failed; the relay will retry: %s", m.message_id, e)
            return False
        self._metrics.published.inc()
        if not routed:
            self._metrics.unrouted.inc()
        return True

    async def run_sweeper(self) -> None:
        """Clear confirmed entries from the store, many sagas per write."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._sweep_interval)
            await self.sweep()

    async def sweep(self) -> None:
        """Clear what has been confirmed so far; keep it for next time if the store fails."""
        batch, self._confirmed = self._confirmed, []
        if not batch:
            return
        try:
            await self._store.clear_outbox(batch)
        except SagaSystemError as e:
            log.warning("could not clear %d outbox entries yet: %s", len(batch), e)
            self._confirmed = batch + self._confirmed
            self._wake.set()

    async def relay_once(self, everything: bool = False, page: int = 500) -> int:
        """Publish outbox entries older than the grace period (all of them when asked).

        A round pages through every saga with such entries, so entries that cannot be
        published (their exchange is gone, the broker refuses them) never keep the others
        waiting, and publishes each page concurrently, so one slow publish does not either.
        """
        cutoff = float("inf") if everything else self._clock() - self._relay_after
        sent, after = 0, None
        while records := await self._store.pending_outbox(cutoff, page, after):
            # What this process published and has not cleared yet is not stuck: skip it,
            # or a slow database would make the relay publish everything again and again.
            confirmed = {mid for _, ids in self._confirmed for mid in ids}
            batches = [(r.state.saga_id, [m for m in r.outbox if m.created_at <= cutoff
                                          and m.message_id not in confirmed])
                       for r in records]
            results = await asyncio.gather(*(self.publish(saga_id, due)
                                             for saga_id, due in batches))
            sent += sum(len(due) for (_, due), ok in zip(batches, results, strict=True) if ok)
            after = records[-1].state.saga_id
        self._metrics.relayed.inc(sent)
        return sent

    async def run_relay(self, interval: float) -> None:
        """Relay forever; nothing one round meets may stop the loop."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.relay_once()
            except SagaSystemError as e:
                log.warning("outbox relay skipped a round: %s", e)
            except Exception:
                log.exception("outbox relay round failed")
