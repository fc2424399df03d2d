"""Prometheus metrics of a participant worker. Labels are bounded: never an order id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FENCE_KINDS = ("empty_rollback", "suspension_refused")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# How a lock wait ended: the prepare ran, it was refused, it timed out, or it was cancelled.
WAIT_ENDS = ("ran", "rejected", "timed_out", "cancelled")


class WorkerMetrics:
    """Every worker metric, registered on the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.commands = Counter("saga_worker_commands_total", "Commands handled, by reply outcome.",
                                ["service", "command", "outcome"], registry=registry)
        self.latency = Histogram("saga_worker_command_duration_seconds",
                                 "Time to handle a command, from receipt to confirmed reply.",
                                 ["service", "command"], buckets=LATENCY_BUCKETS, registry=registry)
        self.duplicates = Counter("saga_worker_duplicate_commands_total",
                                  "Commands seen before (same message id): recorded reply re-sent.",
                                  ["service"], registry=registry)
        self.conflicts = Counter("saga_worker_version_conflicts_total",
                                 "Optimistic-lock conflicts (transaction retried).", ["service"],
                                 registry=registry)
        self.exhausted = Counter("saga_worker_conflict_retries_exhausted_total",
                                 "Commands answered retryable after conflicting on every "
                                 "attempt (the log names the key).", ["service"],
                                 registry=registry)
        self.orphaned = Counter("saga_worker_orphaned_effects_total",
                                "Steps failed because their effect existed without its fence.",
                                ["service"], registry=registry)
        self.fence = Counter("saga_worker_fence_events_total",
                             "Empty rollbacks and refused late actions (suspensions).",
                             ["service", "kind"], registry=registry)
        self.faults = Counter("saga_worker_injected_faults_total", "Faults injected by configuration.",
                              ["service", "kind"], registry=registry)
        self.locked = Counter("saga_worker_lock_refusals_total",
                              "Prepares refused because a key was locked by another saga.",
                              ["service"], registry=registry)
        self.waits = Counter("saga_worker_lock_waits_total",
                             "Prepares parked because a key was locked (policy wait).",
                             ["service"], registry=registry)
        self.waiting = Gauge("saga_worker_lock_waiting",
                             "Prepares parked now, waiting for a lock.", ["service"],
                             registry=registry)
        self.wait_time = Histogram("saga_worker_lock_wait_seconds",
                                   "How long a parked prepare waited, by how its wait ended.",
                                   ["service", "end"], buckets=WAIT_BUCKETS, registry=registry)
        self.dead_lettered = Counter("saga_messages_dead_lettered_total",
                                     "Messages moved to a dead-letter queue.", ["queue", "error"],
                                     registry=registry)

    def prepare(self, service: str, parks: bool = False) -> None:
        """Create this service's label sets at zero, so that dashboards show 0 rather than
        "no data" for what has not happened yet."""
        self.duplicates.labels(service)
        self.conflicts.labels(service)
        self.exhausted.labels(service)
        self.orphaned.labels(service)
        self.locked.labels(service)
        self.waits.labels(service)
        self.waiting.labels(service)
        if parks:  # the wait time by end, for a service whose prepares may wait at all
            for end in WAIT_ENDS:
                self.wait_time.labels(service, end)
        for kind in FENCE_KINDS:
            self.fence.labels(service, kind)
