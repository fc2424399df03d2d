"""The faults a worker injects on purpose, for demos and chaos runs (``FaultSettings``).

The runtime calls these hooks at the moments where a fault is interesting and knows nothing
of how they decide; with no faults configured every hook does nothing. Each injected fault
is counted and logged: a chaos run counts faults across restarts from the logs.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from contracts.commands import Operation, Outcome
from infra.faults import Dice, added_latency, crash_now, latency_ms
from infra.settings import CrashPoint, FaultSettings

log = logging.getLogger(__name__)


class InjectedFaults:
    """One service's fault plan, drawn from one seeded die so that a run can be repeated."""

    def __init__(self, service: str, settings: FaultSettings, counter: Counter) -> None:
        self._service = service
        self._settings = settings
        self._counter = counter
        self._dice = Dice(settings.seed)

    async def delay(self) -> None:
        """The configured latency before a command, now and then a slow one (a late reply,
        past its step's timeout)."""
        delay = latency_ms(self._settings, self._dice)
        if delay > self._settings.latency_ms:
            self._injected("late_reply")
        await added_latency(delay)

    def instead(self, op: Operation) -> tuple[Outcome, str] | None:
        """A failure to answer instead of running the command, or None."""
        if self._dice.roll(self._settings.transient_rate):
            self._injected("transient")
            return Outcome.RETRYABLE_ERROR, "injected transient failure"
        if op is Operation.COMPENSATE and self._dice.roll(self._settings.compensation_failure_rate):
            self._injected("compensation_failure")
            return Outcome.PERMANENT_ERROR, "injected permanent compensation failure"
        return None

    def rejects(self, op: Operation, rejectable: bool, step_key: str) -> bool:
        """Whether the business refuses this step. Decided by the step's key, so that a
        command run again after waiting for a lock gets the verdict it got before."""
        if (op is Operation.FORWARD and rejectable
                and self._dice.roll_for(step_key, self._settings.reject_rate)):
            self._injected("rejection")
            return True
        return False

    def crash(self, point: CrashPoint, first_delivery: bool) -> None:
        """SIGKILL this process at ``point``, sometimes: right after the commit (the change
        is made but nobody knows yet) or right after the reply (it is out but the command
        is not acknowledged). Only on first deliveries: a command
        redelivered after a crash tests the recovery, and rolling again on it would multiply
        the crash rate by the backlog each crash leaves, into a crash loop (a chaos run
        showed 9 restarts in 55 s)."""
        if (first_delivery and point in self._settings.crash_points
                and self._dice.roll(self._settings.crash_rate)):
            self._injected(f"crash_{point}")
            crash_now()

    def _injected(self, kind: str) -> None:
        self._counter.labels(self._service, kind).inc()
        log.warning("injected fault %s", kind, extra={"fault": kind})
