"""The orchestrator and the five workers as OS processes, each logged in as its own broker user.

Nothing is declared at start-up (SAGA_DECLARE_TOPOLOGY=false): the topology is the one the
definitions file created, as in the compose deployment. The test talks to the system as the
client user, through the public contract only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from catalog.rabbitmq import CLIENT_USER, ORCHESTRATOR_USER
from contracts.topology import service_user
from harness.processes import Cluster
from harness.system import RunningSystem
from tests.plan import PLAN
from tests.security.broker import SecureVhost


def system_env(broker: SecureVhost, mongo_env: Mapping[str, str], db_prefix: str,
               log_level: str = "INFO") -> dict[str, str]:
    """What every process shares; the broker URL (and so the user) is set per process."""
    return {"SAGA_AMQP_URL": broker.url(CLIENT_USER), "SAGA_NAMESPACE": "",
            "SAGA_DECLARE_TOPOLOGY": "false", "SAGA_MONGO_DB": db_prefix, "SAGA_STORE": "mongo",
            "SAGA_LOG_LEVEL": log_level, "SAGA_TICK_INTERVAL": "0.1", "SAGA_STEP_TIMEOUT": "5",
            "SAGA_RELAY_AFTER": "2",
            # The vhost's user names carry a suffix: map each service to its own.
            "SAGA_REPLY_USERS": ",".join(f"{s}={broker.users[service_user(s)]}"
                                         for s in PLAN.services), **mongo_env}


@dataclass
class SecureSystem(RunningSystem):
    """Every process under its own least-privilege user; the test is the client."""

    broker: SecureVhost | None = None

    def processes(self) -> Cluster:
        """The orchestrator and the five workers, each as its own broker user."""
        assert self.broker is not None
        cluster = Cluster(self.env, self.log_dir)
        broker = self.broker
        cluster.add_system(PLAN.services,
                           orchestrator_env={"SAGA_AMQP_URL": broker.url(ORCHESTRATOR_USER)},
                           worker_env=lambda s: {"SAGA_AMQP_URL": broker.url(service_user(s))})
        return cluster
