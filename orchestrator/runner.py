"""The I/O shell around the engine: load, decide, save with the outbox, publish.

Work on one saga is serialised inside this process by a keyed lock; across processes
the version check of every save decides, and the loser reloads and decides again. The
state this process saved last stands in for the load (``orchestrator.recent``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from contracts.envelope import Model
from contracts.topology import Topology
from contracts.trace import new_trace_id, trace_id_of
from engine.decide import Decision, Event, NoteKind, decide
from engine.decide import start as start_saga
from engine.state import OpStatus, SagaState
from infra.errors import (
    InvalidMessage,
    SagaQuarantined,
    SagaSystemError,
    UnknownSaga,
    VersionConflict,
)
from orchestrator.keyed_lock import KeyedLock
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.outbox import OutboxPublisher, outbox_messages
from orchestrator.recent import RecentStates
from orchestrator.registry import AnyDefinition, DefinitionRegistry, UnknownDefinition
from orchestrator.serde import Undecodable
from orchestrator.store import SagaStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]
EventAt = Callable[[float], Event]
# Sees the stored saga and its definition before an event is applied; raises to refuse it.
Check = Callable[[SagaState[Any], AnyDefinition], None]

MAX_CONFLICT_RETRIES = 20


class _Unsure(SagaSystemError):
    """A cached state would drop or refuse the event: only the stored state may decide that."""


class Started(StrEnum):
    """What became of a start request."""

    NEW = "new"
    REPEATED = "repeated"  # the same request again: nothing to do
    CONFLICT = "conflict"  # another request reusing the id: refused


class SagaRunner:
    """Runs sagas of every registered definition against one store and one transport."""

    def __init__(self, *, registry: DefinitionRegistry, store: SagaStore, outbox: OutboxPublisher,
                 topology: Topology, metrics: OrchestratorMetrics, clock: Clock,
                 recent: RecentStates | None = None) -> None:
        self._registry = registry
        self._store = store
        self._outbox = outbox
        self._topology = topology
        self._metrics = metrics
        self._clock = clock
        self._locks = KeyedLock()
        self._recent = RecentStates() if recent is None else recent

    async def start(self, name: str, saga_id: str, data: Model, causation_id: str | None,
                    traceparent: str | None = None) -> Started:
        """Start a saga under the latest definition, unless the id already has one: then the
        request is a repeat (same data) or a conflict (another request reusing the id)."""
        definition = self._registry.latest(name)
        async with self._locks.hold(saga_id):
            now = self._clock()
            # The request's trace, or a new one: randomness stays out of the engine.
            trace_id = trace_id_of(traceparent) or new_trace_id()
            decision = start_saga(definition.for_data(data), saga_id, data, now, trace_id)
            messages = outbox_messages(decision, self._topology, causation_id, now, traceparent,
                                       self._outcome_exchange(definition))
            if not await self._store.create(decision.state, messages):
                self._metrics.duplicate_requests.inc()
                return await self._existing(saga_id, data, causation_id)
            self._recent.remember(decision.state)
            self._metrics.observe(definition.name, decision)
            _log_decision(decision, "new", causation_id)
            await self._outbox.publish(saga_id, messages)
        return Started.NEW

    async def _existing(self, saga_id: str, data: Model, causation_id: str | None) -> Started:
        try:
            record = await self._store.load(saga_id)
        except Undecodable:
            record = None
        if record is None or record.state.data == data:
            log.info("saga %s already exists; request %s ignored", saga_id, causation_id)
            return Started.REPEATED
        log.warning("saga %s already exists with other data; request %s refused", saga_id,
                    causation_id, extra={"saga_id": saga_id})
        return Started.CONFLICT

    async def apply(self, saga_id: str, event_at: EventAt, causation_id: str | None = None,
                    traceparent: str | None = None, check: Check | None = None) -> Decision[Any]:
        """Apply one event (built for the current time) and persist and publish the result.
        ``check`` sees the stored saga first and may refuse the event by raising."""
        async with self._locks.hold(saga_id):
            for _ in range(MAX_CONFLICT_RETRIES):
                decision = await self._try_apply(saga_id, event_at, causation_id, traceparent,
                                                 check)
                if decision is not None:
                    return decision
            raise VersionConflict(f"saga {saga_id}: too many concurrent writers")

    async def _try_apply(self, saga_id: str, event_at: EventAt, causation_id: str | None,
                         traceparent: str | None, check: Check | None) -> Decision[Any] | None:
        cached = self._recent.get(saga_id)
        if cached is not None:
            try:
                return await self._decide(cached, event_at, causation_id, traceparent, check,
                                          cached=True)
            except _Unsure:
                # Ignoring or refusing the event saves nothing, so no version check would
                # catch a stale entry: decide again on the stored state.
                self._recent.forget(saga_id)
                self._metrics.state_cache.labels("rechecked").inc()
        state = await self._load(saga_id)
        return await self._decide(state, event_at, causation_id, traceparent, check,
                                  cached=False)

    async def _load(self, saga_id: str) -> SagaState[Any]:
        try:
            record = await self._store.load(saga_id)
        except Undecodable as e:
            # Set aside for good rather than failing this event (and every later one) again.
            await self._store.quarantine(saga_id, e.reason, e.detail, self._clock())
            log.error("saga quarantined: %s", e, extra={"saga_id": saga_id, "reason": e.reason})
            raise SagaQuarantined(str(e)) from e
        if record is None:
            raise UnknownSaga(f"no saga with id {saga_id}")
        return record.state

    async def _decide(self, state: SagaState[Any], event_at: EventAt, causation_id: str | None,
                      traceparent: str | None, check: Check | None,
                      cached: bool) -> Decision[Any] | None:
        """Decide on ``state`` and save; None after a version conflict. From a cached state,
        a decision that would save nothing raises _Unsure instead."""
        try:
            definition, decision, now = self._judge(state, event_at, check)
        except Exception as e:
            if cached:
                raise _Unsure from e
            raise
        if not decision.changed:
            if cached:
                raise _Unsure
            self._metrics.observe(definition.name, decision)
            return decision
        messages = outbox_messages(decision, self._topology, causation_id, now, traceparent,
                                   self._outcome_exchange(definition))
        try:
            saved = await self._store.save(decision.state, state.version, messages)
        except VersionConflict:
            self._metrics.conflicts.inc()
            self._recent.forget(state.saga_id)
            if cached:
                self._metrics.state_cache.labels("stale").inc()
            return None
        except BaseException:
            self._recent.forget(state.saga_id)  # written or not: only the store knows now
            raise
        self._recent.remember(saved)
        if cached:
            self._metrics.state_cache.labels("hit").inc()
        decision = Decision(saved, decision.commands, decision.outcome, decision.notes, True)
        self._metrics.observe(definition.name, decision)
        _log_decision(decision, state.status.value, causation_id)
        await self._outbox.publish(state.saga_id, messages)
        return decision

    def _judge(self, state: SagaState[Any], event_at: EventAt,
               check: Check | None) -> tuple[AnyDefinition, Decision[Any], float]:
        """The definition, the engine's decision and the time it was made for."""
        try:
            definition = self._registry.get(state.definition, state.definition_version)
        except UnknownDefinition as e:
            raise InvalidMessage(str(e)) from e
        if check is not None:
            check(state, definition)
        now = self._clock()
        return definition, decide(definition.for_data(state.data), state, event_at(now)), now

    def _outcome_exchange(self, definition: AnyDefinition) -> str | None:
        start = definition.start
        return None if start is None else self._topology.exchange(start.exchange)


def _log_decision(decision: Decision[Any], before: str | None = None,
                  causation_id: str | None = None) -> None:
    """One line per observation, status change and command: with ``sagactl status`` this is
    enough to explain a saga's history (the message id is the one that caused it)."""
    state = decision.state
    context = {"saga_id": state.saga_id, "trace_id": state.trace_id, "message_id": causation_id}
    for note in decision.notes:
        # A success is in sagactl status and in the worker's own line; logging it here too
        # cost a third of the orchestrator's log lines (python -m bench).
        level = (logging.DEBUG if note.kind is NoteKind.SETTLED
                 and note.detail == OpStatus.SUCCEEDED.value else logging.INFO)
        log.log(level, "saga %s", note.kind.value, extra={
            **context, "step": note.step, "operation": note.op and note.op.value,
            "detail": note.detail or None, "status": state.status.value})
    if before is not None and before != state.status.value:
        log.info("saga status %s -> %s", before, state.status.value, extra={
            **context, "status": state.status.value,
            "transition": f"{before}->{state.status.value}"})
    for c in decision.commands:
        log.info("command %s sent", c.type, extra={
            **context, "message_id": c.message_id, "step": c.step, "operation": c.op.value})
