"""The saga store port: one document per saga, compare-and-set saves, an outbox inside it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.state import ACTIVE, SagaState, SagaStatus
from orchestrator.registry import DefinitionRegistry


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message recorded with the state change that produced it, published after the write."""

    message_id: str
    exchange: str
    routing_key: str
    type: str
    body: str
    correlation_id: str
    causation_id: str | None
    created_at: float
    traceparent: str | None = None
    # Commands must reach a queue; an outcome event may have no subscriber (publish/subscribe).
    must_route: bool = True


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """A saga as stored: its state and its not-yet-confirmed outgoing messages."""

    state: SagaState[Any]
    outbox: tuple[OutboxMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A saga set aside because its document cannot be decoded."""

    saga_id: str
    definition: str
    definition_version: int
    reason: str  # unknown_definition or undecodable
    detail: str
    at: float


@dataclass(frozen=True, slots=True)
class SagaQuery:
    """A page of sagas for people (the console): newest first, filtered.

    ``after`` is the (created_at, saga id) of the last saga of the previous page: a stable
    cursor, unlike an offset, while new sagas arrive at the top.
    """

    statuses: frozenset[SagaStatus] | None = None  # None: every status but quarantined
    definition: str | None = None
    since: float | None = None  # created at or after
    text: str | None = None  # a substring of the saga id (which holds the business key)
    after: tuple[float, str] | None = None
    limit: int = 50


# The statuses the store gauges count (each a range of the status index): the finished
# sagas kept for their retention period are never counted.
GAUGED = (*ACTIVE, SagaStatus.NEEDS_ATTENTION)


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What an on-call engineer asks of the store, counted there (so right after restarts and
    the same for every orchestrator replica)."""

    by_status: Mapping[SagaStatus, int] = field(
        default_factory=lambda: dict.fromkeys(GAUGED, 0))  # the GAUGED statuses only
    oldest_unfinished_at: float | None = None  # created_at of the oldest unfinished saga
    overdue: int = 0  # unfinished sagas whose deadline has passed
    outbox_messages: int = 0  # written, not yet confirmed by the broker
    oldest_outbox_at: float | None = None
    quarantined: Mapping[str, int] = field(default_factory=dict)  # by reason


class SagaStore(Protocol):
    """Where sagas live. Every save checks the version it read: no lost updates."""

    # The definitions its documents are decoded with.
    definitions: DefinitionRegistry

    async def ensure_indexes(self) -> None:
        """Create what the queries need (idempotent)."""
        ...

    async def create(self, state: SagaState[Any], outbox: Sequence[OutboxMessage]) -> bool:
        """Insert a new saga; False (and nothing written) if its id exists."""
        ...

    async def load(self, saga_id: str) -> SagaRecord | None:
        """The saga and its outbox, or None; Undecodable when its document cannot be
        decoded (the caller quarantines it)."""
        ...

    async def quarantine(self, saga_id: str, reason: str, detail: str, now: float) -> None:
        """Set a saga aside: status quarantined, why, and no timer (idempotent)."""
        ...

    async def quarantined(self, limit: int) -> list[Quarantined]:
        """The sagas set aside, newest first."""
        ...

    async def save(self, state: SagaState[Any], expected_version: int,
                   outbox: Sequence[OutboxMessage]) -> SagaState[Any]:
        """Replace the saga if its version is still ``expected_version`` and append to its
        outbox; returns the state with its new version. Raises VersionConflict."""
        ...

    async def due(self, now: float, limit: int) -> list[str]:
        """Ids of unfinished sagas with a timer at or before ``now``, earliest first."""
        ...

    async def waiting(self, limit: int) -> list[SagaRecord]:
        """Running sagas with a step waiting for a lock another saga holds (the wait-for
        graph's edges); one that cannot be decoded is left out."""
        ...

    async def pending_outbox(self, created_before: float, limit: int,
                             after: str | None = None) -> list[SagaRecord]:
        """Sagas holding outbox messages written at or before ``created_before``, in saga id
        order from just after ``after``, so that a relay can page through all of them; one
        that cannot be decoded is quarantined instead of returned."""
        ...

    async def clear_outbox(self, published: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Remove published messages: pairs of (saga id, message ids)."""
        ...

    async def find(self, statuses: Collection[SagaStatus] | None, limit: int) -> list[SagaRecord]:
        """Sagas in the given states (all when None, quarantined ones never), newest first."""
        ...

    async def search(self, query: SagaQuery) -> list[SagaRecord]:
        """One page of sagas matching ``query``, newest first (created_at, then id, both
        descending); quarantined sagas never."""
        ...

    async def count_by_status(self) -> dict[SagaStatus, int]:
        """How many sagas are in each state."""
        ...

    async def health(self, now: float) -> StoreHealth:
        """Counts for the gauges: by status, the oldest unfinished saga, overdue sagas, and
        the outbox backlog."""
        ...
