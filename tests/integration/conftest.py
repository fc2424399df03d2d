"""The real orchestrator of one test's namespace: an in-memory saga store, the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from contracts.topology import Topology
from infra.adapters.rabbit import RabbitTransport
from infra.settings import CommonSettings
from orchestrator.app import build, definitions
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.settings import OrchestratorSettings
from orchestrator.store_memory import MemorySagaStore


@pytest.fixture
async def saga_store(amqp_url: str, topology: Topology,
                     rabbit: RabbitTransport) -> AsyncIterator[MemorySagaStore]:
    """The orchestrator runs while the test does; the test sees its saga store."""
    settings = OrchestratorSettings(common=CommonSettings(
        amqp_url=SecretStr(amqp_url), store="memory", namespace=topology.namespace))
    registry = definitions(settings)
    store = MemorySagaStore(registry)
    transport = RabbitTransport(amqp_url, connection_name="pytest-orchestrator")
    await transport.connect()
    running = build(settings, transport, store, registry, OrchestratorMetrics(CollectorRegistry()))
    await running.start()
    yield store
    await running.stop()
