"""The orchestrator's settings: saga timing and its background loops."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from contracts.topology import MAX_PARTITIONS
from infra.settings import (
    CommonSettings,
    FaultSettings,
    Frozen,
    build,
    common_from_env,
    faults_from_env,
    pick,
)
from orchestrator.recent import DEFAULT_CAPACITY

# Its default metrics port; each participant declares its own
# (workers.sdk.Participant.metrics_port), so that they can all run on one host.
ORCHESTRATOR_METRICS_PORT = 9400


class OrchestratorSettings(Frozen):
    """Saga timing and the orchestrator's background loops."""

    common: CommonSettings
    step_timeout: float = Field(default=10.0, gt=0, le=3600)
    step_attempts: int = Field(default=3, ge=1, le=100)
    settle_attempts: int = Field(default=30, ge=1, le=10_000)
    backoff: float = Field(default=0.2, gt=0, le=60)
    deadline: float = Field(default=120.0, gt=0, le=86_400)
    tick_interval: float = Field(default=0.2, gt=0, le=60)
    relay_after: float = Field(default=10.0, gt=0, le=3600)
    # Which broker user may answer each service's commands (orchestrator.senders).
    reply_users: str = Field(default="service", max_length=2000)
    # How long a finished saga stays in the store (a TTL index deletes it then); sagas that
    # need attention stay until an operator retries or resolves them.
    retention_days: float = Field(default=30.0, ge=1 / 24, le=36_500)
    # How many sagas' last saved states this process keeps to spare a load per event
    # (orchestrator.recent); 0 loads the saga for every event.
    state_cache: int = Field(default=DEFAULT_CAPACITY, ge=0, le=1_000_000)
    # Partitions of the work on sagas shared by the orchestrator instances
    # (orchestrator.partitions); 0: every instance consumes the one replies queue.
    partitions: int = Field(default=0, ge=0, le=MAX_PARTITIONS)
    partition_lease: float = Field(default=10.0, ge=1, le=600)
    # This instance's name among them; empty: host, process id and a random suffix.
    instance: str = Field(default="", max_length=200, pattern=r"^[A-Za-z0-9_.:-]*$")
    faults: FaultSettings = FaultSettings()


ENV = {
    "SAGA_STEP_TIMEOUT": "step_timeout",
    "SAGA_STEP_ATTEMPTS": "step_attempts",
    "SAGA_SETTLE_ATTEMPTS": "settle_attempts",
    "SAGA_BACKOFF": "backoff",
    "SAGA_DEADLINE": "deadline",
    "SAGA_TICK_INTERVAL": "tick_interval",
    "SAGA_RELAY_AFTER": "relay_after",
    "SAGA_REPLY_USERS": "reply_users",
    "SAGA_RETENTION_DAYS": "retention_days",
    "SAGA_STATE_CACHE": "state_cache",
    "SAGA_PARTITIONS": "partitions",
    "SAGA_PARTITION_LEASE": "partition_lease",
    "SAGA_INSTANCE": "instance",
}


def orchestrator_from_env(env: Mapping[str, str]) -> OrchestratorSettings:
    """Settings of the orchestrator process."""
    common = common_from_env(env, "orchestrator", ORCHESTRATOR_METRICS_PORT)
    return build(
        OrchestratorSettings, ENV, {"common": common, "faults": faults_from_env(env), **pick(env, ENV)}
    )
