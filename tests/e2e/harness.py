"""A deployment of the real processes for one end-to-end test, on its own namespace."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from audit.invariants import Report, audit
from catalog.plan import Platform
from client import connect
from client.orders import Outcome, OutcomeWatcher, submit
from client.seed import add_funds, add_stock
from contracts.orders import OrderItem, OrderRequested
from contracts.topology import Topology
from harness.processes import Cluster, http_get
from infra.rabbit import RabbitTransport
from infra.settings import CommonSettings, OrchestratorSettings, common_from_env
from orchestrator.app import definitions
from orchestrator.registry import load
from orchestrator.start import saga_id
from orchestrator.state import SagaStatus
from orchestrator.store import SagaRecord
from orchestrator.store_mongo import MongoSagaStore
from workers.catalog import participant


@dataclass
class Deployment:
    """The orchestrator and five workers as OS processes, plus a client view of them."""

    env: dict[str, str]
    log_dir: Path
    worker_env: Mapping[str, str] = field(default_factory=dict)
    orchestrator_env: Mapping[str, str] = field(default_factory=dict)
    orchestrators: int = 1

    async def start(self) -> None:
        """Start every process; connect the test's client to broker and stores."""
        self.settings: CommonSettings = common_from_env({**os.environ, **self.env}, "sagactl")
        self.topology = Topology(self.settings.namespace)
        self.platform = Platform.load(self.settings)
        self.plan = self.platform.plan()
        self.transport: RabbitTransport = await connect.transport(self.settings, "pytest-e2e")
        await self.transport.declare(self.topology, self.plan)
        self.stores = await connect.stores(
            self.settings, definitions(OrchestratorSettings(common=self.settings)))
        self.watcher = OutcomeWatcher(self.transport, self.topology)
        await self.watcher.start()
        self.cluster = Cluster(self.env, self.log_dir, self.worker_env)
        self.cluster.add("orchestrator", "orchestrator", self.orchestrator_env)
        for n in range(2, self.orchestrators + 1):
            self.cluster.add(f"orchestrator-{n}", "orchestrator", self.orchestrator_env)
        for service, ref in self.workers().items():
            self.cluster.add_worker(ref, self.worker_env, name=service)
        await self.cluster.start()

    def workers(self) -> dict[str, str]:
        """Every Python participant to run, by name: shipped ones by name, a team's by its
        path (a participant known only by a manifest file is started by its own test)."""
        refs = {participant(ref).name: ref for ref in self.settings.saga_participants}
        return {service: refs.get(service, service) for service in self.platform.participants}

    async def stop(self) -> None:
        """Stop the processes, delete the namespace, drop the databases."""
        self.cluster.stop()
        await self.transport.undeclare(self.topology, self.plan)
        await self.transport.close()
        for owner, client in self.stores.clients.items():
            await client.drop_database(self.settings.database(owner))
        await self.stores.close()

    async def reconfigure(self, name: str, env: Mapping[str, str]) -> None:
        """Restart one process with extra environment variables."""
        process = self.cluster.processes[name]
        process.stop()
        process.env.update(env)
        await self.cluster.restart(name)
        if "SAGA_DEFINITIONS" in env:
            # Read the sagas with the definitions the orchestrator now runs (a new version).
            self.stores.sagas = MongoSagaStore(
                self.stores.clients["orchestrator"][self.settings.database("orchestrator")],
                load((env["SAGA_DEFINITIONS"],)))

    async def seed(self, stock: Mapping[str, int], funds: Mapping[str, int]) -> None:
        """Add units per SKU and cents per customer."""
        for sku, units in stock.items():
            await add_stock(self.stores.services["inventory"], sku, units)
        for customer, cents in funds.items():
            await add_funds(self.stores.services["payment"], customer, cents)

    async def order(self, order_id: str, customer: str, *lines: tuple[str, int, str]) -> str:
        """Publish one order request through the public contract."""
        items = tuple(OrderItem(sku=s, quantity=q, unit_price=Decimal(p)) for s, q, p in lines)
        await submit(self.transport, self.topology,
                     OrderRequested(order_id=order_id, customer_id=customer, items=items))
        return order_id

    async def outcomes(self, order_ids: set[str], timeout: float = 60.0) -> dict[str, Outcome]:
        """Wait for the outcome of every order; fail with the logs if one is missing."""
        missing = await self.watcher.wait_for(order_ids, timeout)
        assert not missing, f"no outcome for {sorted(missing)}\n{self.cluster.logs()}"
        return {i: self.watcher.outcomes[i] for i in order_ids}

    async def saga(self, key: str, definition: str = "order") -> SagaRecord:
        """The stored saga of a business key (an order id by default)."""
        record = await self.stores.sagas.load(saga_id(definition, key))
        assert record is not None, f"no saga {definition}:{key}\n{self.cluster.logs()}"
        return record

    async def settled(self, timeout: float = 30.0) -> Report:
        """Wait until no saga is unfinished, every outbox is drained and the invariants hold
        (late messages may still be in flight right after the last outcome); return the
        final audit."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            unfinished = await self.stores.sagas.find(
                [SagaStatus.RUNNING, SagaStatus.COMMITTED, SagaStatus.COMPENSATING], 10)
            outbox = await self.stores.sagas.pending_outbox(float("inf"), 1)
            report = await audit(self.stores.sagas, self.stores.services)
            done = not unfinished and not outbox and report.ok
            if done or asyncio.get_running_loop().time() > deadline:
                return report
            await asyncio.sleep(0.5)

    async def metric(self, process: str, name: str, **labels: str) -> float:
        """The sum of a metric's samples (matching ``labels``) scraped from a process."""
        text = await http_get(self.cluster.processes[process].port, "/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                                for k, v in labels.items()):
                    total += sample.value
        return total
