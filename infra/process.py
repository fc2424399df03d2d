"""Process lifecycle: run until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from infra.adapters import mongo
from infra.adapters.rabbit import RabbitTransport
from infra.http import OpsServer
from infra.settings import CommonSettings

log = logging.getLogger(__name__)


def run_process(common: CommonSettings, start: Callable[[], Awaitable[None]],
                stop: Callable[[], Awaitable[None]]) -> None:
    """The whole life of a service process, on the configured event loop."""
    main = run_until_signalled(start, stop)
    if common.event_loop == "uvloop":
        try:
            import uvloop  # only imported where chosen: it is not on every platform
        except ImportError:
            log.warning("SAGA_EVENT_LOOP=uvloop, but uvloop is not installed: running on "
                        "asyncio")
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


async def run_until_signalled(start: Callable[[], Awaitable[None]],
                              stop: Callable[[], Awaitable[None]]) -> None:
    """Start, wait for SIGTERM/SIGINT, stop. A failed start still runs ``stop``."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await start()
        log.info("started")
        await stopping.wait()
        log.info("stopping")
    finally:
        await stop()
        log.info("stopped")


class ProcessShell:
    """What every process keeps around its component: the ops endpoint, the broker
    connection and, with the MongoDB store, a database client. Opened before the component
    starts, closed after it stops."""

    def __init__(self, common: CommonSettings, transport: RabbitTransport, ops: OpsServer,
                 mongo_client: AsyncMongoClient[dict[str, Any]] | None) -> None:
        self.common = common
        self.transport = transport
        self.ops = ops
        self.mongo = mongo_client

    async def open(self) -> None:
        """Serve /metrics first (so that a slow start is visible), then wait for the database
        and the broker."""
        if self.common.metrics_port:
            await self.ops.start(self.common.metrics_host, self.common.metrics_port)
        if self.mongo is not None:
            await mongo.wait_until_ready(self.mongo)
        await self.transport.connect()

    async def dependencies_ready(self) -> bool:
        """Connected to the broker and, with the MongoDB store, the database answers a ping
        (within a second: a probe must not hang)."""
        if not self.transport.connected:
            return False
        if self.mongo is None:
            return True
        try:
            await asyncio.wait_for(self.mongo.admin.command("ping"), timeout=1.0)
        except (PyMongoError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        """Stop serving and close the database client (the component closed the broker)."""
        await self.ops.stop()
        if self.mongo is not None:
            await self.mongo.close()
