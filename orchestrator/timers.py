"""Firing due timers: each saga on its own task, so that one slow saga delays nobody else.

Timers are due by the heard clock (orchestrator.heard), not the wall clock: a tick asks the
store for the earliest timers due by then, skips the sagas whose timer is already
being fired, and starts a task for each of the others, up to ``concurrency`` at once. The
tick does not wait for them: a saga whose publish hangs holds one slot, not the loop. Each
task is bounded by ``budget`` seconds; a task cut short has lost nothing, because its state
is either saved (with its outbox, which the relay sends) or untouched (the timer is still
due and fires again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from engine.decide import TimerFired
from orchestrator.runner import SagaRunner
from orchestrator.store import SagaStore

log = logging.getLogger(__name__)


class Timers:
    """The timer dispatcher of one orchestrator process."""

    def __init__(self, store: SagaStore, runner: SagaRunner, heard: Callable[[], float], *,
                 concurrency: int, budget: float,
                 mine: Callable[[str], bool] | None = None) -> None:
        self._store = store
        # With partitioned work, only the sagas of this instance's partitions; the others'
        # are due for their own instances, so a look takes a wider window to find ours.
        self._mine = mine
        self._window = 1 if mine is None else 8
        self._runner = runner
        self._heard = heard
        self._concurrency = concurrency
        self._budget = budget
        self._firing: dict[str, asyncio.Task[None]] = {}

    async def tick(self) -> int:
        """Start firing the due timers that fit; returns how many were started."""
        free = self._concurrency - len(self._firing)
        if free <= 0:
            return 0
        # Those being fired are still due: ask for enough to find ``free`` others.
        due = await self._store.due(self._heard(), (free + len(self._firing)) * self._window)
        fresh = [saga_id for saga_id in due if saga_id not in self._firing
                 and (self._mine is None or self._mine(saga_id))][:free]
        for saga_id in fresh:
            task = asyncio.create_task(self._fire(saga_id))
            self._firing[saga_id] = task
            task.add_done_callback(partial(self._done, saga_id))
        return len(fresh)

    def _event(self, now: float) -> TimerFired:
        return TimerFired(now, self._heard())

    def _done(self, saga_id: str, _: asyncio.Task[None]) -> None:
        self._firing.pop(saga_id, None)

    async def idle(self) -> None:
        """Wait until every timer started so far has been fired."""
        while self._firing:
            await asyncio.gather(*self._firing.values(), return_exceptions=True)

    async def stop(self) -> None:
        """Cancel the timers being fired (they fire again after a restart)."""
        for task in self._firing.values():
            task.cancel()
        await asyncio.gather(*self._firing.values(), return_exceptions=True)

    async def _fire(self, saga_id: str) -> None:
        try:
            async with asyncio.timeout(self._budget):
                await self._runner.apply(saga_id, self._event)
        except TimeoutError:
            log.warning("timer of saga %s took over %.0fs; it fires again while due",
                        saga_id, self._budget, extra={"saga_id": saga_id})
        except Exception as e:  # one saga's failure is its own: log it, keep the others going
            log.warning("timer of saga %s failed: %r", saga_id, e, extra={"saga_id": saga_id})
