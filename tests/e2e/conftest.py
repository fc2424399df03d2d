"""An end-to-end deployment per test: real processes, real broker, real (or stand-in) MongoDB."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.processes import ManagedProcess, free_port
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


TOKEN = "console-test-token"


@dataclass(frozen=True)
class Console:
    """A running console and the deployment it watches."""

    url: str
    deployment: Deployment
    process: ManagedProcess


@pytest.fixture
async def console(deploy: Deploy) -> AsyncIterator[Console]:
    """A deployment (the shipping worker slow, so a saga can be caught running) and
    ``python -m console`` in front of it, with a token."""
    # Shipping answers after 15 s; the step timeout leaves it time to, so a saga waits there,
    # before its commit point, long enough for a person (or a browser) to cancel it.
    d = await deploy(common={"SAGA_STEP_TIMEOUT": "40"})
    await d.seed({"apple": 100}, {"alice": 1_000_000})
    port = free_port()
    process = ManagedProcess(
        "console", [sys.executable, "-m", "console"],
        {**d.cluster.processes["orchestrator"].env, "SAGA_CONSOLE_PORT": str(port),
         "SAGA_CONSOLE_TOKEN": TOKEN, "SAGA_CONSOLE_ACTION_TIMEOUT": "20"},
        d.log_dir / "console.log", port)
    process.start()
    try:
        await process.wait_ready(60)
        yield Console(f"http://127.0.0.1:{port}", d, process)
    finally:
        process.stop()
