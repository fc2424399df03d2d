"""The orchestrator and the five workers as OS processes, each logged in as its own broker user.

Nothing is declared at start-up (SAGA_DECLARE_TOPOLOGY=false): the topology is the one the
definitions file created, as in the compose deployment. The test talks to the system as the
client user, through the public contract only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from catalog.rabbitmq import CLIENT_USER, ORCHESTRATOR_USER
from client import connect
from client.orders import Outcome, OutcomeWatcher, submit
from client.seed import add_funds, add_stock
from contracts.orders import OrderItem, OrderRequested
from contracts.topology import Topology, service_user
from harness.processes import Cluster, http_get
from infra.rabbit import RabbitTransport
from infra.settings import CommonSettings, OrchestratorSettings, common_from_env
from orchestrator.app import definitions
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
class SecureSystem:
    """Every process under its own least-privilege user; the test is the client."""

    broker: SecureVhost
    env: dict[str, str]
    log_dir: Path

    async def start(self) -> None:
        """Connect the client and the stores, start every process and wait until ready."""
        self.settings: CommonSettings = common_from_env({**os.environ, **self.env}, "sagactl")
        self.topology = Topology(self.settings.namespace)
        self.stores = await connect.stores(
            self.settings, definitions(OrchestratorSettings(common=self.settings)))
        self.client: RabbitTransport = await connect.transport(self.settings, "pytest-client")
        self.watcher = OutcomeWatcher(self.client, self.topology)
        await self.watcher.start()
        self.cluster = Cluster(self.env, self.log_dir)
        self.cluster.add("orchestrator", "orchestrator",
                         {"SAGA_AMQP_URL": self.broker.url(ORCHESTRATOR_USER)})
        for service in PLAN.services:
            self.cluster.add_worker(service,
                                    {"SAGA_AMQP_URL": self.broker.url(service_user(service))})
        await self.cluster.start()

    async def stop(self) -> None:
        """Stop the processes and drop this run's databases (after a start that failed
        half-way too, hence the checks)."""
        if hasattr(self, "cluster"):
            self.cluster.stop()
        if hasattr(self, "client"):
            await self.client.close()
        if hasattr(self, "stores"):
            for owner, client in self.stores.clients.items():
                await client.drop_database(self.settings.database(owner))
            await self.stores.close()

    async def seed(self, stock: Mapping[str, int], funds: Mapping[str, int]) -> None:
        """Add units per SKU and cents per customer."""
        for sku, units in stock.items():
            await add_stock(self.stores.services["inventory"], sku, units)
        for customer, cents in funds.items():
            await add_funds(self.stores.services["payment"], customer, cents)

    async def order(self, order_id: str, customer: str, sku: str, quantity: int, price: str) -> None:
        """Publish one order request as the client user."""
        item = OrderItem(sku=sku, quantity=quantity, unit_price=Decimal(price))
        await submit(self.client, self.topology,
                     OrderRequested(order_id=order_id, customer_id=customer, items=(item,)))

    async def outcomes(self, order_ids: set[str], timeout: float = 60.0) -> dict[str, Outcome]:
        """Wait for every order's outcome; fail with the logs if one is missing."""
        missing = await self.watcher.wait_for(order_ids, timeout)
        assert not missing, f"no outcome for {sorted(missing)}\n{self.cluster.logs()}"
        return {i: self.watcher.outcomes[i] for i in order_ids}

    async def metric(self, process: str, name: str) -> float:
        """The sum of a metric's samples scraped from one process."""
        text = await http_get(self.cluster.processes[process].port, "/metrics")
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples if sample.name == name)
