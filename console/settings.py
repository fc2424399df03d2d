"""The console's settings: where it listens, and the token that guards its actions."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, SecretStr

from infra.settings import CommonSettings, Frozen, build, common_from_env, pick


class ConsoleSettings(Frozen):
    """The web console: where it listens, and the token that guards its actions."""

    common: CommonSettings
    # Loopback by default: reads from this host need no token (docs/console.md).
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=1, le=65535)
    # Every action, and every read from another address, needs it; unset, they answer 401.
    token: SecretStr | None = None
    # How long an action waits for the orchestrator's answer.
    action_timeout: float = Field(default=30.0, gt=0, le=600)
    page_size: int = Field(default=50, ge=1, le=500)


ENV = {
    "SAGA_CONSOLE_HOST": "host",
    "SAGA_CONSOLE_PORT": "port",
    "SAGA_CONSOLE_TOKEN": "token",
    "SAGA_CONSOLE_ACTION_TIMEOUT": "action_timeout",
}


def console_from_env(env: Mapping[str, str]) -> ConsoleSettings:
    """Settings of the console process."""
    common = common_from_env(env, "console")
    return build(ConsoleSettings, ENV, {"common": common, **pick(env, ENV)})
