"""The heard clock: how far this orchestrator has read its replies. Timers run on it.

A step timeout means "no reply came in time". While the orchestrator is behind on its
reply queue (after its own restart, a broker outage, a burst), the replies it has not read
yet are waiting in that queue: a timeout judged by the wall clock would fire for steps
whose answers are already there, and each retry it sends adds one more command and one more
reply to the backlog that caused it.

So the timers fire at the heard time: the latest moment at which the reply queue was seen
empty and every reply delivered before then had been handled. It never runs ahead of the
wall clock, and it lags it by at most ``max_lag`` seconds: an orchestrator that never
catches up still times its sagas out, later.

With several instances on one reply queue, a reply being handled by another instance is
not seen here; such a reply is in flight for milliseconds, not for a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable

from infra.errors import SagaSystemError
from infra.transport import Delivery, Handler

log = logging.getLogger(__name__)

Depth = Callable[[], Awaitable[int]]


class HeardClock:
    """The heard time of one orchestrator process; refreshed by its timer loop."""

    def __init__(self, depth: Depth, clock: Callable[[], float], *, max_lag: float,
                 look_timeout: float = 5.0) -> None:
        self._depth = depth
        self._clock = clock
        self._max_lag = max_lag
        # The timer loop waits for each look: a broker that never answers must not stop it.
        self._look_timeout = look_timeout
        self._heard = -math.inf
        self._received = 0  # replies handed to the handler so far, numbered from 1
        self._handling: set[int] = set()
        # (when the queue was seen empty, replies received by then) not yet confirmed.
        self._seen_empty: deque[tuple[float, int]] = deque()

    def __call__(self) -> float:
        """The heard time: what timers compare their due times against."""
        now = self._clock()
        return max(min(now, self._heard), now - self._max_lag)

    def lag(self) -> float:
        """How far the heard time is behind the wall clock, in seconds."""
        return self._clock() - self()

    def track(self, handler: Handler) -> Handler:
        """Wrap the reply handler, so that a reply being handled holds the clock back."""

        async def tracked(delivery: Delivery) -> None:
            self._received += 1
            number = self._received
            self._handling.add(number)
            try:
                await handler(delivery)
            finally:
                self._handling.discard(number)

        return tracked

    async def refresh(self) -> None:
        """Look at the reply queue once, and move the heard time on as far as it may."""
        seen = self._clock()
        try:
            async with asyncio.timeout(self._look_timeout):
                depth = await self._depth()
        except (SagaSystemError, TimeoutError) as e:
            log.debug("reply queue depth not read: %r", e)  # unheard: the clock waits
            depth = None
        if depth == 0:
            # Counted after the answer: whatever was delivered before it must be handled.
            self._seen_empty.append((seen, self._received))
        oldest = min(self._handling, default=math.inf)
        while self._seen_empty and self._seen_empty[0][1] < oldest:
            self._heard = max(self._heard, self._seen_empty.popleft()[0])
