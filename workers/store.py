"""The participant store port: typed documents, transactions, optimistic-lock versions."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Protocol

from pydantic import BaseModel, ConfigDict


class Doc(BaseModel):
    """A stored document. ``version`` is checked and bumped by every update."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    collection: ClassVar[str]

    id: str
    version: int = 0


DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How long the runtime's own records are kept, in seconds (TTL indexes delete them)."""

    inbox: float = 30 * DAY
    fence: float = 30 * DAY


DEFAULT_RETENTION = Retention()


def expiry(now: float, seconds: float) -> datetime:
    """The ``expires_at`` of a record written at ``now``: a date, as TTL indexes need."""
    return datetime.fromtimestamp(now + seconds, UTC)


class Tx(Protocol):
    """One transaction: all of its writes commit together or not at all."""

    async def get[T: Doc](self, kind: type[T], id: str) -> T | None:
        """Read a document (this transaction's own writes included)."""
        ...

    async def insert(self, doc: Doc) -> None:
        """Insert; raises DuplicateKey if the id is taken (now or at commit)."""
        ...

    async def update[T: Doc](self, doc: T) -> T:
        """Compare-and-set on ``doc.version``; returns the document with the next version.
        Raises VersionConflict if someone else changed it first."""
        ...

    async def delete(self, doc: Doc) -> None:
        """Compare-and-delete on ``doc.version``: raises VersionConflict if the document
        changed or went since it was read."""
        ...


class DocumentStore(Protocol):
    """A participant's database."""

    async def ensure_indexes(self, expiring: tuple[str, ...]) -> None:
        """Let the documents of these collections expire at their ``expires_at``."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction; an exception inside the block aborts it."""
        ...

    async def get[T: Doc](self, kind: type[T], id: str) -> T | None:
        """Read committed state."""
        ...

    async def all[T: Doc](self, kind: type[T], limit: int = 100_000) -> list[T]:
        """Every document of a kind (for seeding, status and audits)."""
        ...

    async def put(self, doc: Doc) -> None:
        """Insert or overwrite a document outside any saga (seeding only)."""
        ...
