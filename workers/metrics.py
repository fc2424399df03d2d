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

    def service(self, name: str, parks: bool = False) -> ServiceMetrics:
        """What one service's runtime reports, with its label sets created at zero, so that
        dashboards show 0 rather than "no data" for what has not happened yet."""
        return ServiceMetrics(self, name, parks)


class ServiceMetrics:
    """The events the worker runtime reports about one service; Prometheus stays behind
    these methods, and the service label is bound once."""

    def __init__(self, metrics: WorkerMetrics, service: str, parks: bool) -> None:
        self._metrics = metrics
        self._service = service
        self.faults = metrics.faults  # the fault plan counts what it injects itself
        self._duplicates = metrics.duplicates.labels(service)
        self._conflicts = metrics.conflicts.labels(service)
        self._exhausted = metrics.exhausted.labels(service)
        self._orphaned = metrics.orphaned.labels(service)
        self._locked = metrics.locked.labels(service)
        self._waits = metrics.waits.labels(service)
        self._waiting = metrics.waiting.labels(service)
        if parks:  # the wait time by end, for a service whose prepares may wait at all
            for end in WAIT_ENDS:
                metrics.wait_time.labels(service, end)
        self._fence = {kind: metrics.fence.labels(service, kind) for kind in FENCE_KINDS}

    def handled(self, command: str, outcome: str, seconds: float) -> None:
        """A command answered, from receipt to confirmed reply."""
        self._metrics.commands.labels(self._service, command, outcome).inc()
        self._metrics.latency.labels(self._service, command).observe(seconds)

    def duplicate(self) -> None:
        """A command seen before: its recorded reply is sent again."""
        self._duplicates.inc()

    def conflict(self) -> None:
        """An optimistic-lock conflict; the transaction is retried."""
        self._conflicts.inc()

    def gave_up(self) -> None:
        """A command conflicted on every attempt."""
        self._exhausted.inc()

    def orphaned(self) -> None:
        """A step's effect exists without its fence."""
        self._orphaned.inc()

    def fence(self, kind: str) -> None:
        """An empty rollback or a refused late action (one of FENCE_KINDS)."""
        self._fence[kind].inc()

    def refused_locked(self) -> None:
        """A prepare refused because another saga holds a key."""
        self._locked.inc()

    def parked(self) -> None:
        """A prepare parked to wait for a key."""
        self._waits.inc()

    def wait_ended(self, end: str, seconds: float) -> None:
        """A parked prepare's wait is over (one of WAIT_ENDS)."""
        self._metrics.wait_time.labels(self._service, end).observe(max(0.0, seconds))

    def waiting(self, parked: int) -> None:
        """Prepares parked now."""
        self._waiting.set(parked)
