"""Who may answer a command: the broker user of the service the command went to.

Every participant user may publish to the replies exchange, and a reply names its command
by id; without this check a compromised participant could answer "succeeded" for another
service's step. RabbitMQ stamps nothing itself, but it refuses a ``user_id`` property that
is not the publishing connection's user, and our transport sets it on every publish. So the
orchestrator accepts a reply only when its ``user_id`` is the user mapped to the command's
service, and only when the reply names that command's step and operation.

``SAGA_REPLY_USERS`` sets the mapping:

- ``service`` (the default): service ``S`` answers as ``saga-S``, the users the generated
  broker definitions create;
- ``payment=alice,*=guest``: explicit users, ``*`` for every service not listed (the rest
  follow the ``service`` rule); ``*=guest`` fits a development broker where every process
  logs in as guest;
- ``any``: no check at all, logged as a warning at start-up and counted on /metrics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from contracts.topology import service_user

SERVICE_RULE = "service"
RELAXED = "any"
EVERY_OTHER = "*"
_PAIR = re.compile(r"^(?P<service>[a-z][a-z0-9_-]*|\*)=(?P<user>[^\s,=]+)$")


@dataclass(frozen=True, slots=True)
class ReplySenders:
    """The mapping from service to the broker user whose replies are accepted."""

    relaxed: bool = False
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, text: str) -> ReplySenders:
        """From the SAGA_REPLY_USERS syntax (see the module); ValueError when malformed."""
        text = text.strip()
        if text == RELAXED:
            return cls(relaxed=True)
        if text in ("", SERVICE_RULE):
            return cls()
        users: dict[str, str] = {}
        for part in text.split(","):
            match = _PAIR.match(part.strip())
            if match is None:
                raise ValueError(f"{part.strip()!r} is not SERVICE=USER (or *=USER); the "
                                 f"value is '{SERVICE_RULE}', '{RELAXED}' or such pairs")
            users[match["service"]] = match["user"]
        return cls(users=MappingProxyType(users))

    def expected(self, service: str) -> str:
        """The user whose replies to ``service``'s commands are accepted."""
        return self.users.get(service) or self.users.get(EVERY_OTHER) or service_user(service)

    def problem(self, service: str, user: str | None) -> str | None:
        """Why a reply published by ``user`` cannot answer a command to ``service``."""
        if self.relaxed:
            return None
        wanted = self.expected(service)
        if user == wanted:
            return None
        return (f"a reply to a {service} command must be published by broker user {wanted!r},"
                f" this one came from {user or 'no user'!r} (SAGA_REPLY_USERS)")

    def describe(self) -> str:
        """One line for the start-up log."""
        if self.relaxed:
            return "any broker user may answer any command (SAGA_REPLY_USERS=any)"
        rules = [f"{s}={u}" for s, u in sorted(self.users.items())]
        return "replies are accepted from " + ", ".join(
            [*rules, "saga-<service> for the others" if EVERY_OTHER not in self.users else ""]
        ).rstrip(", ")
