"""A worker's settings: one participant service."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from infra.settings import (
    CommonSettings,
    FaultSettings,
    Frozen,
    build,
    common_from_env,
    faults_from_env,
    pick,
)


class WorkerSettings(Frozen):
    """One participant service."""

    common: CommonSettings
    service: str
    faults: FaultSettings = FaultSettings()
    conflict_retries: int = Field(default=20, ge=1, le=1000)
    # Concurrent transactions per worker. MongoDB handles many; the mongoeco stand-in
    # detects conflicts server-wide, so the test harness runs it with 1.
    tx_concurrency: int = Field(default=16, ge=1, le=1000)
    # How long a command waits for an unreachable database before it is answered "try
    # again later" (the orchestrator's retry policy takes over).
    store_patience: float = Field(default=20.0, ge=0, le=3600)
    # How long fence entries (each with the step's inbox records) are kept (a TTL index). It
    # must outlast the longest a command can wait in its queue plus the longest a saga can
    # run: an expired entry lets a late duplicate run again (docs/operating.md).
    fence_retention_days: float = Field(default=30.0, ge=1 / 24, le=36_500)


ENV = {
    "SAGA_CONFLICT_RETRIES": "conflict_retries",
    "SAGA_TX_CONCURRENCY": "tx_concurrency",
    "SAGA_STORE_PATIENCE": "store_patience",
    "SAGA_FENCE_RETENTION_DAYS": "fence_retention_days",
}


def worker_from_env(env: Mapping[str, str], service: str, metrics_port: int | None = None) -> WorkerSettings:
    """Settings of one worker process."""
    common = common_from_env(env, service, metrics_port)
    faults = faults_from_env(env)
    return build(
        WorkerSettings, ENV, {"common": common, "service": service, "faults": faults, **pick(env, ENV)}
    )
