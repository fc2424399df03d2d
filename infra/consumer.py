"""The consume boundary: the one place that catches everything a handler can raise.

    handled                -> ack
    invalid input          -> copy to the dead-letter queue with the reason in its headers, ack
    transient trouble      -> keep the message and retry in place with capped backoff
    unexpected exception   -> retry a few times, then dead-letter with the error as reason

The message is only acknowledged after the dead-letter copy is confirmed, so nothing is
lost, and no input can crash the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from contracts.envelope import MAX_BODY_BYTES, CodecError, WireMessage, utcnow
from contracts.topology import DELIVERY_LIMIT, Topology
from infra.errors import InvalidMessage
from infra.transport import Delivery, Handler, Transport

log = logging.getLogger(__name__)

MessageHandler = Callable[[WireMessage], Coroutine[Any, Any, None]]
DeadLetterHook = Callable[[str, str], None]

REASON_HEADER = "x-dead-letter-reason"
# Set by RabbitMQ itself when it dead-letters (e.g. "delivery_limit", "rejected").
BROKER_REASON_HEADER = "x-first-death-reason"
ERROR_KIND_HEADER = "x-dead-letter-error"
QUEUE_HEADER = "x-original-queue"
TIME_HEADER = "x-dead-lettered-at"
DELIVERY_COUNT_HEADER = "x-delivery-count"  # set by quorum queues on every redelivery
ORIGINAL_SIZE_HEADER = "x-original-size"  # a truncated dead letter's body size, in bytes
# A dead letter's own id: many messages arrive without a message_id, and the tools
# (sagactl dlq) need to name each dead letter.
DEAD_LETTER_ID_HEADER = "x-dead-letter-id"
# A dead-letter copy of a body over the limit keeps only its start: enough to recognise it,
# without storing what the limit exists to keep out.
TRUNCATED_BODY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class RetryLimits:
    """How the boundary retries a message it keeps."""

    unexpected_attempts: int = 3
    backoff: float = 0.05
    backoff_max: float = 5.0
    # Pause before giving back a message that could not be settled, so that a missing
    # dead-letter exchange does not turn into a hot redelivery loop.
    requeue_delay: float = 1.0

    def delay(self, attempt: int) -> float:
        """Capped exponential backoff with jitter: half of it fixed, half random, so that the
        messages a database hiccup held up are not all retried at the same instant."""
        ceiling = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class Boundary:
    """Wraps message handlers of one process."""

    transport: Transport
    topology: Topology
    on_dead_letter: DeadLetterHook = lambda queue, kind: None
    limits: RetryLimits = RetryLimits()

    def wrap(self, handler: MessageHandler) -> Handler:
        """A transport handler that never raises."""

        async def guarded(delivery: Delivery) -> None:
            try:
                await self._run(handler, delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Only reachable when the dead-letter publish or the ack itself failed.
                # Give the message back, so that it is delivered again rather than holding
                # a prefetch slot forever; if even that fails, the channel is gone and the
                # broker redelivers it anyway.
                log.exception("could not settle message %s; requeueing it",
                              delivery.message.message_id)
                await asyncio.sleep(self.limits.requeue_delay)
                with contextlib.suppress(Exception):
                    await delivery.requeue()

        return guarded

    async def _run(self, handler: MessageHandler, delivery: Delivery) -> None:
        deliveries = delivery.message.headers.get(DELIVERY_COUNT_HEADER)
        if isinstance(deliveries, int) and deliveries >= DELIVERY_LIMIT // 2:
            # Each return of an unacknowledged message (a consumer's channel closing) counts;
            # at DELIVERY_LIMIT the broker dead-letters it, valid or not.
            log.warning("message %s delivered %d times (the broker gives up at %d)",
                        delivery.message.message_id, deliveries, DELIVERY_LIMIT,
                        extra={"queue": delivery.queue})
        attempt = 0
        while True:
            attempt += 1
            try:
                await handler(delivery.message)
            except (CodecError, InvalidMessage) as e:
                await self.dead_letter(delivery, e.reason, type(e).__name__)
                return
            except Exception as e:
                if not getattr(e, "retryable", False) and attempt >= self.limits.unexpected_attempts:
                    log.exception("handler failed %d times; dead-lettering", attempt)
                    await self.dead_letter(delivery, f"handler failed: {e!r}"[:1000],
                                           "HandlerFailed")
                    return
                delay = self.limits.delay(attempt)
                log.warning("handler attempt %d failed (%r); retrying in %.2fs", attempt, e, delay)
                await asyncio.sleep(delay)
                continue
            await delivery.ack()
            return

    async def dead_letter(self, delivery: Delivery, reason: str, kind: str) -> None:
        """Copy the message to its queue's dead-letter queue with the reason, then ack it."""
        message = delivery.message
        headers = {
            **message.headers,
            REASON_HEADER: reason[:1000],
            ERROR_KIND_HEADER: kind,
            QUEUE_HEADER: delivery.queue,
            TIME_HEADER: utcnow().isoformat(),
            DEAD_LETTER_ID_HEADER: uuid.uuid4().hex,
        }
        body = message.body
        if len(body) > MAX_BODY_BYTES:
            headers[ORIGINAL_SIZE_HEADER] = len(body)
            body = body[:TRUNCATED_BODY_BYTES]
        await self.transport.publish(self.topology.dead_letter_exchange, delivery.queue,
                                     replace(message, body=body, headers=headers))
        await delivery.ack()
        self.on_dead_letter(delivery.queue, kind)
        log.warning("dead-lettered message %s from %s: %s", message.message_id, delivery.queue,
                    reason)
