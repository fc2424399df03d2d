"""An end-to-end deployment per test: real processes, real broker, real (or stand-in) MongoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from tests.e2e.harness import Deployment

Deploy = Callable[..., Awaitable[Deployment]]


@pytest.fixture
async def deploy(amqp_url: str, mongo_env: dict[str, str], tag: str,
                 tmp_path: Path) -> AsyncIterator[Deploy]:
    """Start a deployment with extra settings for the orchestrator and the workers."""
    started: list[Deployment] = []

    async def start(orchestrator: Mapping[str, str] | None = None,
                    workers: Mapping[str, str] | None = None,
                    orchestrators: int = 1, common: Mapping[str, str] | None = None,
                    ) -> Deployment:
        env = {"SAGA_AMQP_URL": amqp_url, "SAGA_NAMESPACE": f"e2e-{tag}",
               "SAGA_MONGO_DB": f"e2e_{tag}", "SAGA_STORE": "mongo", "SAGA_LOG_LEVEL": "INFO",
               "SAGA_TICK_INTERVAL": "0.1", "SAGA_STEP_TIMEOUT": "5", "SAGA_RELAY_AFTER": "2",
               **mongo_env, **(common or {})}
        deployment = Deployment(env, tmp_path / "logs", dict(workers or {}),
                                dict(orchestrator or {}), orchestrators)
        started.append(deployment)
        await deployment.start()
        return deployment

    yield start
    for deployment in started:
        await deployment.stop()
