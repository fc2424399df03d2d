"""A deployment of the real processes for one end-to-end test, on its own namespace."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from audit.invariants import Report, audit
from catalog.plan import Platform
from engine.state import SagaStatus
from harness.processes import Cluster
from harness.system import RunningSystem
from orchestrator.registry import load
from orchestrator.start import saga_id
from orchestrator.store import SagaRecord
from orchestrator.store_mongo import MongoSagaStore
from workers.catalog import participant


@dataclass
class Deployment(RunningSystem):
    """The orchestrator and every worker as OS processes, plus a client view of them."""

    worker_env: Mapping[str, str] = field(default_factory=dict)
    orchestrator_env: Mapping[str, str] = field(default_factory=dict)
    orchestrators: int = 1

    client_name = "pytest-e2e"

    async def before_processes(self) -> None:
        """Declare this namespace's topology, as the processes would."""
        self.platform = Platform.load(self.settings)
        # The orchestrators declare their partitions' queues too: delete them afterwards.
        self.plan = replace(self.platform.plan(),
                            partitions=int(self.orchestrator_env.get("SAGA_PARTITIONS", "0")))
        await self.transport.declare(self.topology, self.plan)

    def processes(self) -> Cluster:
        """One orchestrator (or several) and every participant of the platform."""
        cluster = Cluster(self.env, self.log_dir, self.worker_env)
        cluster.add_system(self.workers(), orchestrators=self.orchestrators,
                           orchestrator_env=self.orchestrator_env)
        return cluster

    def workers(self) -> dict[str, str]:
        """Every Python participant to run, by name: shipped ones by name, a team's by its
        path (a participant known only by a manifest file is started by its own test)."""
        refs = {participant(ref).name: ref for ref in self.settings.saga_participants}
        return {service: refs.get(service, service) for service in self.platform.participants}

    async def after_processes(self) -> None:
        """Delete the namespace."""
        await self.transport.undeclare(self.topology, self.plan)

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
