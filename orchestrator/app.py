"""Explicit wiring of the orchestrator process from its settings."""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from contracts.topology import Plan, Topology
from engine.definition import Tuning
from infra.adapters import mongo
from infra.adapters.rabbit import RabbitTransport
from infra.faults import faulty
from infra.http import OpsServer
from infra.process import ProcessShell
from infra.settings import SettingsError
from infra.transport import Transport
from orchestrator.leases import Leases, MemoryLeases
from orchestrator.leases_mongo import MongoLeases
from orchestrator.manifests import mismatches, participant_manifests
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.outbox import Clock, OutboxPublisher
from orchestrator.partitions import PartitionKeeper, reply_key_of
from orchestrator.recent import RecentStates
from orchestrator.registry import DefinitionRegistry, RegistrationError, Setup, load
from orchestrator.runner import SagaRunner
from orchestrator.senders import ReplySenders
from orchestrator.serde import DAY
from orchestrator.service import Loops, Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.store import SagaStore
from orchestrator.store_memory import MemorySagaStore
from orchestrator.store_mongo import MongoSagaStore


def definitions(settings: OrchestratorSettings) -> DefinitionRegistry:
    """Every saga definition version this orchestrator runs: the entry points' and the
    modules named in SAGA_DEFINITIONS. Each step must call an operation of the kind its
    participant's manifest declares."""
    tuning = Tuning(
        step_timeout=settings.step_timeout, max_attempts=settings.step_attempts,
        backoff=settings.backoff, settle_attempts=settings.settle_attempts,
        deadline=settings.deadline)
    manifests = participant_manifests(settings.common)
    registry = load(settings.common.saga_definitions, Setup(tuning, manifests))
    problems = mismatches(registry.steps(), manifests)
    if problems:
        raise RegistrationError("definitions do not fit the participants' manifests: "
                                + "; ".join(problems))
    return registry


def build(settings: OrchestratorSettings, transport: Transport, store: SagaStore,
          registry: DefinitionRegistry, metrics: OrchestratorMetrics,
          clock: Clock = time.time, leases: Leases | None = None) -> Orchestrator:
    """Assemble an orchestrator from its parts (shared by the process and embedded mode).
    ``leases`` are shared with the other instances when the work is partitioned."""
    common = settings.common
    topology = Topology(common.namespace)
    metrics.prepare(registry.all())
    transport = faulty(transport, settings.faults)
    outbox = OutboxPublisher(transport, store, metrics, clock, relay_after=settings.relay_after,
                             reply_to=reply_key_of(topology, settings.partitions))
    runner = SagaRunner(registry=registry, store=store, outbox=outbox, topology=topology,
                        metrics=metrics, clock=clock, recent=RecentStates(settings.state_cache))
    # Ad-hoc transactions may call any participant with a manifest: declare its queue too.
    plan = registry.plan().merged(Plan((), tuple(participant_manifests(common)),
                                       settings.partitions))
    keeper = None
    if settings.partitions:
        keeper = PartitionKeeper(leases or MemoryLeases(), member=instance_name(settings),
                                 partitions=settings.partitions,
                                 lease_seconds=settings.partition_lease, clock=clock)
    try:
        senders = ReplySenders.parse(settings.reply_users)
    except ValueError as e:
        raise SettingsError(f"SAGA_REPLY_USERS: {e}") from e
    return Orchestrator(transport=transport, store=store, runner=runner, outbox=outbox,
                        topology=topology, plan=plan, registry=registry, senders=senders,
                        metrics=metrics, clock=clock, prefetch=common.prefetch,
                        loops=Loops(tick_interval=settings.tick_interval),
                        declare_topology=common.declare_topology, partitions=keeper)


def instance_name(settings: OrchestratorSettings) -> str:
    """SAGA_INSTANCE, or one unique to this process."""
    return settings.instance or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class OrchestratorProcess:
    """The orchestrator with real adapters, its ops endpoint, and its lifecycle."""

    settings: OrchestratorSettings

    def __post_init__(self) -> None:
        common = self.settings.common
        self.registry = CollectorRegistry()
        self.metrics = OrchestratorMetrics(self.registry)
        self.transport = RabbitTransport(common.amqp_url.get_secret_value(),
                                         connection_name="orchestrator")
        self.definitions = definitions(self.settings)
        client = None
        store: SagaStore = MemorySagaStore(self.definitions)
        self.leases: Leases = MemoryLeases()
        if common.store == "mongo":
            client = mongo.client(common.mongo_url_for("orchestrator"), app_name="orchestrator",
                                  listeners=[mongo.CommandCounter(self.registry)])
            db = client[common.database("orchestrator")]
            store = MongoSagaStore(db, self.definitions,
                                   retention=self.settings.retention_days * DAY)
            self.leases = MongoLeases(db)
        self.store = store
        self.orchestrator = build(self.settings, self.transport, store, self.definitions,
                                  self.metrics, leases=self.leases)
        ops = OpsServer(self.registry, self._ready)
        self.shell = ProcessShell(common, self.transport, ops, client)

    async def _ready(self) -> bool:
        return self.orchestrator.ready and await self.shell.dependencies_ready()

    async def start(self) -> None:
        """Connect (waiting for broker and database), then start."""
        await self.shell.open()
        await self.store.ensure_indexes()
        await self.leases.ensure_indexes()
        await self.orchestrator.start()

    async def stop(self) -> None:
        """Graceful shutdown."""
        await self.orchestrator.stop()
        await self.shell.close()
