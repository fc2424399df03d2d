"""What the worker runtime reports lands on the service's own Prometheus series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from workers.metrics import FENCE_KINDS, WAIT_ENDS, WorkerMetrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_service_starts_at_zero_on_every_dashboard_series() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry).service("account", parks=True)
    assert sample(registry, "saga_worker_version_conflicts_total", service="account") == 0
    assert sample(registry, "saga_worker_lock_waiting", service="account") == 0
    for kind in FENCE_KINDS:
        assert sample(registry, "saga_worker_fence_events_total", service="account",
                      kind=kind) == 0
    for end in WAIT_ENDS:
        assert sample(registry, "saga_worker_lock_wait_seconds_count", service="account",
                      end=end) == 0


def test_a_service_that_never_parks_has_no_wait_series() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry).service("notification")
    assert sample(registry, "saga_worker_lock_wait_seconds_count", service="notification",
                  end="ran") is None


def test_reported_events_count_on_their_service_only() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    payment, other = metrics.service("payment"), metrics.service("shipping")
    payment.handled("payment.hold", "succeeded", 0.02)
    payment.conflict()
    payment.conflict()
    payment.fence(FENCE_KINDS[0])
    payment.wait_ended("ran", -1.0)  # a clock step back observes 0, not a negative wait
    payment.waiting(3)
    other.duplicate()
    assert sample(registry, "saga_worker_commands_total", service="payment",
                  command="payment.hold", outcome="succeeded") == 1
    assert sample(registry, "saga_worker_command_duration_seconds_sum", service="payment",
                  command="payment.hold") == 0.02
    assert sample(registry, "saga_worker_version_conflicts_total", service="payment") == 2
    assert sample(registry, "saga_worker_version_conflicts_total", service="shipping") == 0
    assert sample(registry, "saga_worker_fence_events_total", service="payment",
                  kind=FENCE_KINDS[0]) == 1
    assert sample(registry, "saga_worker_lock_wait_seconds_sum", service="payment",
                  end="ran") == 0
    assert sample(registry, "saga_worker_lock_waiting", service="payment") == 3
    assert sample(registry, "saga_worker_duplicate_commands_total", service="shipping") == 1
    assert sample(registry, "saga_worker_duplicate_commands_total", service="payment") == 0
