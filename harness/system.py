"""A running system seen from outside: its processes plus a client's hands on it.

The end-to-end and security tests drive one of these: they start the processes (each
subclass says which, and as which broker users), publish orders through the public
contract, wait for outcomes, read the stores and scrape metrics. Every part of it is the
product's own: the client library, the stores and the process cluster.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from client import connect
from client.orders import Outcome, OutcomeWatcher, submit
from client.seed import add_funds, add_stock
from contracts.orders import OrderItem, OrderRequested
from contracts.topology import Topology
from harness.processes import Cluster
from infra.adapters.rabbit import RabbitTransport
from infra.settings import CommonSettings, common_from_env
from orchestrator.app import definitions
from orchestrator.settings import OrchestratorSettings

# One order line: SKU, quantity, unit price as a decimal string.
Line = tuple[str, int, str]


@dataclass
class RunningSystem:
    """The processes of one test's system, on its own namespace and databases."""

    env: dict[str, str]
    log_dir: Path

    client_name = "pytest-client"

    async def start(self) -> None:
        """Connect the client and the stores, then start every process and wait until
        each is ready."""
        self.settings: CommonSettings = common_from_env({**os.environ, **self.env}, "sagactl")
        self.topology = Topology(self.settings.namespace)
        self.transport: RabbitTransport = await connect.transport(self.settings,
                                                                  self.client_name)
        await self.before_processes()
        self.stores = await connect.stores(
            self.settings, definitions(OrchestratorSettings(common=self.settings)))
        self.watcher = OutcomeWatcher(self.transport, self.topology)
        await self.watcher.start()
        self.cluster = self.processes()
        await self.cluster.start()

    async def before_processes(self) -> None:
        """What to set up on the broker before any process starts (nothing by default)."""

    def processes(self) -> Cluster:
        """The processes to run."""
        raise NotImplementedError

    async def after_processes(self) -> None:
        """What to take down on the broker once the processes are stopped."""

    async def stop(self) -> None:
        """Stop the processes, then drop this run's databases (after a start that failed
        half-way too, hence the checks)."""
        if hasattr(self, "cluster"):
            self.cluster.stop()
        if hasattr(self, "transport"):
            await self.after_processes()
            await self.transport.close()
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

    async def order(self, order_id: str, customer: str, *lines: Line) -> str:
        """Publish one order request through the public contract."""
        items = tuple(OrderItem(sku=s, quantity=q, unit_price=Decimal(p)) for s, q, p in lines)
        await submit(self.transport, self.topology,
                     OrderRequested(order_id=order_id, customer_id=customer, items=items))
        return order_id

    async def outcomes(self, order_ids: set[str], timeout: float = 60.0) -> dict[str, Outcome]:
        """Wait for the outcome of every order; fail with the logs if one is missing."""
        missing = await self.watcher.wait_for(order_ids, timeout)
        if missing:
            raise AssertionError(f"no outcome for {sorted(missing)}\n{self.cluster.logs()}")
        return {i: self.watcher.outcomes[i] for i in order_ids}

    async def metric(self, process: str, name: str, **labels: str) -> float:
        """The sum of a metric's samples (matching ``labels``) scraped from a process."""
        return await self.cluster.metric(process, name, **labels)
