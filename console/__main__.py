"""``python -m console``: serve the console until signalled."""

from __future__ import annotations

import asyncio
import os
import sys

import uvicorn

from client import connect
from client.admin import AdminClient
from console.api import Backend
from console.app import build
from console.settings import ConsoleSettings, console_from_env
from infra import logs
from infra.settings import SettingsError
from orchestrator.app import definitions
from orchestrator.settings import OrchestratorSettings


async def serve(settings: ConsoleSettings) -> None:
    """Connect to the store and the broker, then serve until uvicorn is told to stop."""
    common = settings.common
    registry = definitions(OrchestratorSettings(common=common))
    stores = await connect.stores(common, registry)
    try:
        actions = await AdminClient.open(common, "console")
        try:
            token = settings.token.get_secret_value() if settings.token else None
            app = build(Backend(stores.sagas, registry, actions, settings.action_timeout,
                                settings.page_size), token)
            config = uvicorn.Config(app, host=settings.host, port=settings.port,
                                    log_level=common.log_level.lower(), access_log=False)
            await uvicorn.Server(config).serve()
        finally:
            await actions.close()
    finally:
        await stores.close()


def main() -> int:
    """Read settings, serve; one line and a non-zero exit code for what stops it early."""
    try:
        settings = console_from_env(os.environ)
    except SettingsError as e:
        print(f"console: {e}", file=sys.stderr)
        return 2
    logs.configure("console", settings.common.log_level)
    try:
        asyncio.run(serve(settings))
    except connect.Unreachable as e:
        print(f"console: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
