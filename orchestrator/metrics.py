"""Prometheus metrics of the orchestrator. Labels are bounded: never a saga or order id."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from contracts.admin import Action
from contracts.commands import Operation
from engine.decide import Decision, Note, NoteKind
from engine.definition import DynamicDefinition, SagaDefinition
from engine.state import SagaStatus

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


# What became of an operator action (saga_operator_actions_total{result}).
ACTION_RESULTS = ("accepted", "repeated", "refused", "not_found")

class OrchestratorMetrics:
    """Every orchestrator metric, registered on the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter("saga_started_total", "Sagas started.", ["definition"],
                               registry=registry)
        self.finished = Counter("saga_finished_total", "Sagas finished, by final status and reason.",
                                ["definition", "status", "reason"], registry=registry)
        self.duration = Histogram("saga_duration_seconds", "Time from start to a final status.",
                                  ["definition", "status"], buckets=DURATION_BUCKETS,
                                  registry=registry)
        self.step_duration = Histogram(
            "saga_step_duration_seconds",
            "Time from an operation's first command to its final reply, retries included.",
            ["definition", "service", "step", "operation", "outcome"], buckets=STEP_BUCKETS,
            registry=registry)
        # The gauges below are counted in the store, not in this process: they are right
        # after a restart and the same on every orchestrator replica (aggregate with max).
        self.inflight = Gauge("saga_inflight", "Unfinished sagas by status, counted in the store.",
                              ["status"], registry=registry)
        self.needs_attention = Gauge("saga_needs_attention", "Sagas in the needs_attention state, "
                                     "counted in the store.", registry=registry)
        self.oldest_unfinished = Gauge("saga_oldest_unfinished_age_seconds",
                                       "Age of the oldest unfinished saga (0 when none).",
                                       registry=registry)
        self.overdue = Gauge("saga_overdue", "Unfinished sagas past their deadline.",
                             registry=registry)
        self.outbox_backlog = Gauge("saga_outbox_backlog_messages",
                                    "Messages written to the outbox and not yet confirmed.",
                                    registry=registry)
        self.outbox_oldest = Gauge("saga_outbox_oldest_age_seconds",
                                   "Age of the oldest unconfirmed outbox message (0 when none).",
                                   registry=registry)
        self.quarantined = Gauge("saga_quarantined",
                                 "Sagas set aside because they cannot be decoded, by reason, "
                                 "counted in the store.", ["reason"], registry=registry)
        self.timer_lag = Gauge("saga_timer_lag_seconds",
                               "How far this orchestrator's timers run behind the wall clock "
                               "because replies wait unread in its reply queue "
                               "(orchestrator.heard).", registry=registry)
        self.store_scrape = Gauge("saga_store_gauges_updated_timestamp_seconds",
                                  "When the store-counted gauges were last refreshed.",
                                  registry=registry)
        self.dead_letter_depth = Gauge("saga_dead_letter_queue_messages",
                                       "Messages waiting in each dead-letter queue, from the broker.",
                                       ["queue"], registry=registry)
        self.retries = Counter("saga_step_retries_total", "Commands sent again after a failure.",
                               ["definition", "step", "operation"], registry=registry)
        self.timeouts = Counter("saga_step_timeouts_total", "Commands whose reply did not come in time.",
                                ["definition", "step", "operation"], registry=registry)
        self.compensations = Counter("saga_compensations_total", "Compensations started.",
                                     ["definition", "step"], registry=registry)
        self.attention = Counter("saga_attention_events_total",
                                 "Confirmations or compensations that failed permanently.",
                                 ["definition", "step", "operation"], registry=registry)
        self.stale_replies = Counter("saga_stale_replies_total",
                                     "Replies ignored: late, duplicate, or from an earlier attempt.",
                                     ["definition"], registry=registry)
        self.duplicate_requests = Counter("saga_duplicate_requests_total",
                                          "Order requests for an order id that already has a saga.",
                                          registry=registry)
        self.conflicts = Counter("saga_version_conflicts_total",
                                 "Optimistic-lock conflicts on saga saves (another writer was first).",
                                 registry=registry)
        self.partitions_owned = Gauge("saga_partitions_owned",
                                      "Partitions of the saga work this instance holds now "
                                      "(0 when the work is not partitioned).",
                                      registry=registry)
        self.forwarded = Counter("saga_forwarded_total",
                                 "Cancels and operator actions sent on to the instance that "
                                 "holds their saga's partition.", ["kind"], registry=registry)
        # hit: an event decided and saved on the state this process saved last; stale: that
        # save lost the version check; rechecked: it would have dropped or refused the event.
        self.state_cache = Counter("saga_state_cache_total",
                                   "Events decided on the state this process saved last, by result.",
                                   ["result"], registry=registry)
        self.dead_lettered = Counter("saga_messages_dead_lettered_total",
                                     "Messages moved to a dead-letter queue.", ["queue", "error"],
                                     registry=registry)
        self.published = Counter("saga_outbox_published_total", "Outbox messages confirmed by the broker.",
                                 registry=registry)
        self.publish_failures = Counter("saga_outbox_publish_failures_total",
                                        "Outbox publishes that failed and were left for the relay.",
                                        registry=registry)
        self.unrouted = Counter("saga_outcomes_unrouted_total",
                                "Outcome events no queue was bound for (nobody subscribed); "
                                "commands are never allowed to go unrouted.",
                                registry=registry)
        self.replies_refused = Counter(
            "saga_replies_refused_total",
            "Replies refused because their publisher is not the user of the command's service, "
            "or they name another step or operation than the command (SAGA_REPLY_USERS).",
            ["service"], registry=registry)
        self.cancels = Counter(
            "saga_cancels_total",
            "Cancel requests: honoured (the saga compensates), repeated (already cancelled) or "
            "refused (answered <topic>.cancel_refused).", ["definition", "result"],
            registry=registry)
        self.replies_unchecked = Gauge(
            "saga_reply_senders_unchecked",
            "1 while any broker user may answer any command (SAGA_REPLY_USERS=any).",
            registry=registry)
        self.operator_actions = Counter(
            "saga_operator_actions_total",
            "Operator actions (cancel, retry, resolve): accepted, repeated (the same action "
            "delivered again), refused (the saga's state forbids it) or not_found.",
            ["definition", "action", "result"], registry=registry)
        self.deadlocks = Counter("saga_deadlocks_total",
                                 "Sagas aborted as the victim of a deadlock (a cycle of lock "
                                 "waits).", ["definition"], registry=registry)
        self.lock_waits = Counter("saga_lock_waits_total",
                                  "Steps that began to wait for a lock another saga holds.",
                                  ["definition", "step"], registry=registry)
        self.lock_waiting = Gauge("saga_lock_waiting",
                                  "Sagas waiting for a lock now, counted in the store.",
                                  ["definition"], registry=registry)
        self.relayed = Counter("saga_outbox_relayed_total",
                               "Outbox messages published by the relay (after a failure or a crash).",
                               registry=registry)

    def prepare(self, definitions: Iterable[SagaDefinition[Any] | DynamicDefinition[Any]]) -> None:
        """Create every known label set at zero, so that dashboards show 0, not "no data",
        for things that have not happened yet (labels come from the definitions: bounded)."""
        for d in definitions:
            self.started.labels(d.name)
            self.deadlocks.labels(d.name)
            self.lock_waiting.labels(d.name)
            self._prepare_actions(d)
            self.stale_replies.labels(d.name)
            for step in d.steps.values():
                self.replies_refused.labels(step.service)
                for op in (o for o in Operation if step.has(o)):
                    self.retries.labels(d.name, step.name, op.value)
                    self.timeouts.labels(d.name, step.name, op.value)
                    if op is not Operation.FORWARD:
                        self.attention.labels(d.name, step.name, op.value)
                if step.compensated:
                    self.compensations.labels(d.name, step.name)
            for status in (SagaStatus.COMPLETED, SagaStatus.FAILED, SagaStatus.NEEDS_ATTENTION,
                           SagaStatus.RESOLVED):
                self.duration.labels(d.name, status.value)

    def _prepare_actions(self, d: SagaDefinition[Any] | DynamicDefinition[Any]) -> None:
        if d.start is not None:
            for result in ("honoured", "repeated", "refused"):
                self.cancels.labels(d.name, result)
        for action in Action:
            for result in ACTION_RESULTS:
                self.operator_actions.labels(d.name, action.value, result)

    def observe(self, definition: str, decision: Decision[Any]) -> None:
        """Count what a saved decision did."""
        for note in decision.notes:
            match note.kind:
                case NoteKind.SETTLED:
                    self._settled(definition, decision, note)
                case NoteKind.FINISHED:
                    self._finished(definition, decision)
                case _:
                    self._count(definition, note)

    def _count(self, definition: str, note: Note) -> None:
        step, op = note.step or "", (note.op.value if note.op else "")
        match note.kind:
            case NoteKind.STARTED:
                self.started.labels(definition).inc()
            case NoteKind.RETRY:
                self.retries.labels(definition, step, op).inc()
            case NoteKind.TIMED_OUT:
                self.timeouts.labels(definition, step, op).inc()
            case NoteKind.COMPENSATION:
                self.compensations.labels(definition, step).inc()
            case NoteKind.ATTENTION:
                self.attention.labels(definition, step, op).inc()
            case NoteKind.STALE_REPLY:
                self.stale_replies.labels(definition).inc()
            case NoteKind.LOCK_WAIT:
                self.lock_waits.labels(definition, step).inc()
            case NoteKind.DEADLOCK:
                self.deadlocks.labels(definition).inc()

    def _settled(self, definition: str, decision: Decision[Any], note: Note) -> None:
        if note.step is None or note.op is None:
            return
        op = decision.state.op(note.step, note.op)
        if op.started_at is None or op.finished_at is None:
            return
        self.step_duration.labels(definition, note.service or "", note.step, note.op.value,
                                  note.detail).observe(max(0.0, op.finished_at - op.started_at))

    def _finished(self, definition: str, decision: Decision[Any]) -> None:
        state = decision.state
        reason = ""
        if state.status is SagaStatus.NEEDS_ATTENTION:
            reason = "COMPENSATION_FAILED" if state.failure else "CONFIRMATION_FAILED"
        elif state.failure is not None:
            reason = state.failure.reason_code
        self.finished.labels(definition, state.status.value, reason).inc()
        self.duration.labels(definition, state.status.value).observe(
            max(0.0, state.updated_at - state.created_at))
