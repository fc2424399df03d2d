"""Explicit wiring of one worker process from its settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from contracts.topology import Plan, Topology
from infra import logs
from infra.adapters import mongo
from infra.adapters.rabbit import RabbitTransport
from infra.consumer import Boundary
from infra.faults import faulty
from infra.http import OpsServer
from infra.process import ProcessShell, run_process
from infra.settings import SettingsError
from infra.transport import Transport
from workers.faults import InjectedFaults
from workers.metrics import WorkerMetrics
from workers.runtime import EXPIRING, Clock, WorkerRuntime
from workers.sdk import Participant
from workers.settings import WorkerSettings, worker_from_env
from workers.store import DAY, DocumentStore, Retention
from workers.store_memory import MemoryDocumentStore
from workers.store_mongo import MongoDocumentStore


class Worker:
    """One service's runtime, consuming its command queue."""

    def __init__(self, *, settings: WorkerSettings, spec: Participant, transport: Transport,
                 store: DocumentStore, metrics: WorkerMetrics, clock: Clock = time.time) -> None:
        faults = settings.faults
        transport = faulty(transport, faults)
        self._transport = transport
        self._topology = Topology(settings.common.namespace)
        self._prefetch = settings.common.prefetch
        self._declare = settings.common.declare_topology
        self._metrics = metrics
        self.spec = spec
        self.runtime = WorkerRuntime(spec=spec, store=store, transport=transport,
                                     topology=self._topology,
                                     metrics=metrics.service(spec.name, spec.parks),
                                     faults=InjectedFaults(spec.name, faults, metrics.faults),
                                     clock=clock, conflict_retries=settings.conflict_retries,
                                     tx_concurrency=settings.tx_concurrency,
                                     store_patience=settings.store_patience,
                                     retention=Retention(settings.fence_retention_days * DAY))
        self.ready = False
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Declare the topology and start consuming."""
        if self._declare:
            await self._transport.declare(self._topology, Plan((), (self.spec.name,)))
        boundary = Boundary(self._transport, self._topology,
                            lambda q, kind: self._metrics.dead_lettered.labels(q, kind).inc())
        await self._transport.consume(self._topology.command_queue(self.spec.name),
                                      boundary.wrap(self.runtime.handle), self._prefetch)
        self._watch = asyncio.create_task(self.runtime.watch_waits(), name="lock-waits")
        self.ready = True

    async def stop(self) -> None:
        """Stop consuming; unacknowledged commands go back to the queue, parked prepares
        stay parked in the database for the next process."""
        self.ready = False
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._transport.close()


@dataclass
class WorkerProcess:
    """A worker with real adapters and its ops endpoint."""

    settings: WorkerSettings
    spec: Participant

    def __post_init__(self) -> None:
        common = self.settings.common
        self.registry = CollectorRegistry()
        self.transport = RabbitTransport(common.amqp_url.get_secret_value(),
                                         connection_name=f"worker-{self.spec.name}")
        client = None
        store: DocumentStore = MemoryDocumentStore()
        if common.store == "mongo":
            client = mongo.client(common.mongo_url_for(self.spec.name), app_name=self.spec.name,
                                  listeners=[mongo.CommandCounter(self.registry)])
            store = MongoDocumentStore(client, common.database(self.spec.name))
        self.store = store
        self.worker = Worker(settings=self.settings, spec=self.spec, transport=self.transport,
                             store=store, metrics=WorkerMetrics(self.registry))
        ops = OpsServer(self.registry, self._ready)
        self.shell = ProcessShell(common, self.transport, ops, client)

    async def _ready(self) -> bool:
        return self.worker.ready and await self.shell.dependencies_ready()

    async def start(self) -> None:
        """Connect (waiting for broker and database), then consume."""
        await self.shell.open()
        await self.store.ensure_indexes(EXPIRING)
        await self.worker.start()

    async def stop(self) -> None:
        """Graceful shutdown."""
        await self.worker.stop()
        await self.shell.close()


def run(spec: Participant) -> int:
    """Run one participant process until SIGTERM (``python -m workers``)."""
    try:
        settings = worker_from_env(os.environ, spec.name, spec.metrics_port)
    except SettingsError as e:
        print(f"{spec.name}: {e}", file=sys.stderr)
        return 2
    logs.configure(spec.name, settings.common.log_level)
    process = WorkerProcess(settings, spec)
    run_process(settings.common, process.start, process.stop)
    return 0
