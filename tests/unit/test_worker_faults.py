"""A worker's fault plan: what each hook injects, and that it counts what it injects."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from contracts.commands import Operation, Outcome
from infra.settings import FaultSettings
from workers.faults import InjectedFaults
from workers.metrics import WorkerMetrics


def plan(**settings: object) -> tuple[InjectedFaults, CollectorRegistry]:
    registry = CollectorRegistry()
    faults = InjectedFaults("svc", FaultSettings.model_validate(settings),
                            WorkerMetrics(registry).faults)
    return faults, registry


def injected(registry: CollectorRegistry, kind: str) -> float:
    value = registry.get_sample_value("saga_worker_injected_faults_total",
                                      {"service": "svc", "kind": kind})
    return value or 0.0


async def test_no_settings_inject_nothing() -> None:
    faults, registry = plan()
    await faults.delay()
    assert faults.instead(Operation.COMPENSATE) is None
    assert not faults.rejects(Operation.FORWARD, True, "s1:step")
    faults.crash("after_commit", True)  # would SIGKILL this test process if it fired
    assert [s for m in registry.collect() for s in m.samples
            if s.name == "saga_worker_injected_faults_total"] == []


def test_a_transient_failure_answers_instead_of_running() -> None:
    faults, registry = plan(transient_rate=1.0)
    assert faults.instead(Operation.FORWARD) == (Outcome.RETRYABLE_ERROR,
                                                 "injected transient failure")
    assert injected(registry, "transient") == 1


def test_a_compensation_failure_hits_compensations_only() -> None:
    faults, registry = plan(compensation_failure_rate=1.0)
    assert faults.instead(Operation.FORWARD) is None
    assert faults.instead(Operation.COMPENSATE) == (Outcome.PERMANENT_ERROR,
                                                    "injected permanent compensation failure")
    assert injected(registry, "compensation_failure") == 1


def test_a_rejection_is_the_same_for_the_same_step_and_only_where_rejectable() -> None:
    faults, registry = plan(reject_rate=0.5, seed=3)
    verdicts = {key: faults.rejects(Operation.FORWARD, True, key) for key in map(str, range(40))}
    assert set(verdicts.values()) == {True, False}
    assert all(faults.rejects(Operation.FORWARD, True, k) == v for k, v in verdicts.items())
    always, _ = plan(reject_rate=1.0)
    assert not always.rejects(Operation.FORWARD, False, "s1:step")
    assert not always.rejects(Operation.CONFIRM, True, "s1:step")
    assert injected(registry, "rejection") == 2 * sum(verdicts.values())


async def test_a_slow_command_counts_as_a_late_reply() -> None:
    faults, registry = plan(slow_rate=1.0, slow_ms=1)
    await faults.delay()
    assert injected(registry, "late_reply") == 1


def test_a_crash_fires_on_first_deliveries_only() -> None:
    faults, registry = plan(crash_rate=1.0)
    faults.crash("after_publish", first_delivery=False)  # alive: a redelivery never crashes
    assert injected(registry, "crash_after_publish") == 0
