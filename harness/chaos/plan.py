"""What a chaos run does: its options, the faults it may inject, and how each process is
configured to inject its own."""

from __future__ import annotations

from dataclasses import dataclass, replace

FAULTS = ("orchestrator-kill", "worker-kill", "lock-holder-kill", "worker-crash-points",
          "broker-connections",
          "broker-restart", "database-restart", "duplicates", "late-replies", "reorder",
          "poison", "business-failures", "compensation-failure")
BROKER_FAULTS = frozenset({"broker-connections", "broker-restart"})
# Long enough to ride out the queueing delays that kills and restarts cause: a timeout
# shorter than the backlog turns every delay into a retry storm.
STEP_TIMEOUT = 10.0
# A run where most sagas fail for technical reasons mostly tests the timeout path: at least
# this share of the orders not refused for a business reason must complete.
MIN_COMPLETED_SHARE = 0.5
# One transfer for every this many orders.
TRANSFER_SHARE = 3
# Seconds between two faults of each kind the run injects from outside, drawn uniformly.
GAPS: dict[str, tuple[float, float]] = {
    "orchestrator-kill": (6, 12),
    "worker-kill": (4, 9),
    "lock-holder-kill": (10, 20),
    "broker-connections": (12, 20),
    "broker-restart": (20, 35),
    "database-restart": (10, 20),
    "poison": (0.3, 1.0),
}


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    """What a chaos run does."""

    orders: int = 300
    duration: float = 60.0
    faults: frozenset[str] = frozenset(FAULTS)
    seed: int = 1
    drain_timeout: float = 300.0
    orchestrators: int = 1
    partitions: int = 0  # SAGA_PARTITIONS of the orchestrators (docs/scaling.md)

    @property
    def transfers(self) -> int:
        """How many transfers run beside the orders."""
        return self.orders // TRANSFER_SHARE

    def without(self, faults: frozenset[str]) -> ChaosOptions:
        """The same run without some faults."""
        return replace(self, faults=self.faults - faults)


def process_env(opts: ChaosOptions) -> tuple[dict[str, str], dict[str, str]]:
    """Environment of the orchestrator (first) and of the workers (second): the faults
    each process injects itself."""
    on = opts.faults.__contains__
    publishing = {"SAGA_FAULT_DUPLICATE": "0.05" if on("duplicates") else "0",
                  "SAGA_FAULT_REORDER_MS": "40" if on("reorder") else "0",
                  "SAGA_FAULT_SEED": str(opts.seed)}
    orchestrator = {**publishing, "SAGA_STEP_TIMEOUT": str(STEP_TIMEOUT),
                    "SAGA_TICK_INTERVAL": "0.1", "SAGA_BACKOFF": "0.1",
                    "SAGA_PARTITIONS": str(opts.partitions)}
    workers = {
        **publishing,
        "SAGA_FAULT_TRANSIENT": "0.02",
        "SAGA_FAULT_REJECT": "0.04" if on("business-failures") else "0",
        "SAGA_FAULT_SLOW": "0.02" if on("late-replies") else "0",
        "SAGA_FAULT_SLOW_MS": str(int(STEP_TIMEOUT * 1500)),
        "SAGA_FAULT_COMPENSATION_FAIL": "0.02" if on("compensation-failure") else "0",
        "SAGA_FAULT_CRASH": "0.002" if on("worker-crash-points") else "0",
    }
    return orchestrator, workers
