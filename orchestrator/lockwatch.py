"""Deadlock resolution: the wait-for graph read from the store, and its victims aborted.

Each waiting step records in its saga's document the lock it waits for and the sagas
holding it (a participant's ``waiting`` reply), so the graph is in the orchestrator's
database, whichever orchestrator instance and participant process saw each wait. Every
orchestrator process looks at it when one of its replies begins a wait, and every few
seconds as a backstop (a wait reported to another instance, an abort lost to a crash).
The victim rule (orchestrator.deadlock) depends only on the graph, so instances that look
at once choose the same victims. An abort is an ordinary event: the victim checks that it
still waits, then fails with ``DEADLOCK`` and compensates, which lets go of its locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from engine.decide import DeadlockFound, Event
from infra.errors import SagaSystemError
from orchestrator.deadlock import Wait, deadlocked, graph, victims
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.runner import SagaRunner
from orchestrator.store import SagaStore

log = logging.getLogger(__name__)

MAX_WAITING = 10_000  # waiting sagas read per look; more than that is an incident anyway


class DeadlockWatch:
    """Finds cycles of lock waits and aborts one saga of each."""

    def __init__(self, store: SagaStore, runner: SagaRunner, metrics: OrchestratorMetrics,
                 definitions: tuple[str, ...] = ()) -> None:
        self._store = store
        self._runner = runner
        self._metrics = metrics
        self._definitions = definitions
        self._poked = asyncio.Event()

    def poke(self) -> None:
        """A wait began: look soon, without holding up the reply that said so."""
        self._poked.set()

    async def run(self, interval: float) -> None:
        """Look whenever poked, and every ``interval`` seconds."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), interval)
            self._poked.clear()
            try:
                await self.look()
            except SagaSystemError as e:
                log.warning("deadlock look failed: %s", e)

    async def look(self) -> list[str]:
        """One look at the graph; the sagas chosen to give way."""
        records = await self._store.waiting(MAX_WAITING)
        waits = [Wait(r.state.saga_id, frozenset(holders), lock, r.state.created_at)
                 for r in records for _, lock, holders in r.state.lock_waits]
        waiting = Counter(r.state.definition for r in records)
        for name in {*self._definitions, *waiting}:
            self._metrics.lock_waiting.labels(name).set(waiting.get(name, 0))
        chosen = victims(waits)
        if not chosen:
            return []
        groups = deadlocked(graph(waits))
        for victim in chosen:
            others = tuple(sorted(next((g for g in groups if victim in g), frozenset())
                                  - {victim}))
            log.warning("deadlock: %s gives way to %s", victim, ", ".join(others),
                        extra={"saga_id": victim})
            await self._abort(victim, others)
        return chosen

    async def _abort(self, victim: str, others: tuple[str, ...]) -> None:
        def event(now: float) -> Event:
            return DeadlockFound(others, now)

        try:
            await self._runner.apply(victim, event)
        except SagaSystemError as e:
            # Gone, set aside or contended: the next look sees whether the cycle is still there.
            log.warning("deadlock victim %s not aborted: %s", victim, e, extra={"saga_id": victim})
