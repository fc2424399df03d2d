"""The participant store port: typed documents, transactions, optimistic-lock versions."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
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
    """How long the runtime's own records are kept, in seconds (a TTL index deletes them)."""

    fence: float = 30 * DAY


DEFAULT_RETENTION = Retention()


def expiry(now: float, seconds: float) -> datetime:
    """The ``expires_at`` of a record written at ``now``: a date, as TTL indexes need."""
    return datetime.fromtimestamp(now + seconds, UTC)


@dataclass(frozen=True, slots=True)
class Change:
    """One conditional change of one document, made by the database in one write without a
    read first (MongoDB's ``findAndModify``). Fields are top-level; values are the model's.

    ``when`` holds field values the document must have for the change to apply (equality);
    ``within`` maps an integer field to another that it must not exceed once changed (a
    reservation within the stock, a hold within the balance). ``assign`` sets fields, ``add``
    adds to integer fields, ``append`` adds an item at the end of a tuple field. The version
    goes up by one, as with ``Tx.update``.
    """

    when: Mapping[str, object] = field(default_factory=dict)
    within: Mapping[str, str] = field(default_factory=dict)
    assign: Mapping[str, object] = field(default_factory=dict)
    add: Mapping[str, int] = field(default_factory=dict)
    append: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A bound is checked against the document as it was plus ``add``: an assigned field
        # in it would have two meanings.
        if set(self.assign) & {*self.within, *self.within.values()}:
            raise ValueError("a field in ``within`` cannot also be assigned")


def changed[T: Doc](doc: T, change: Change) -> T | None:
    """``doc`` after ``change`` at the same version, or None if ``change.when`` does not hold
    (the in-memory adapter's ``modify``, and a model of what the database does)."""
    if any(getattr(doc, name) != value for name, value in change.when.items()):
        return None
    update: dict[str, object] = dict(change.assign)
    update.update({name: getattr(doc, name) + amount for name, amount in change.add.items()})
    update.update({name: (*getattr(doc, name), item) for name, item in change.append.items()})
    after = doc.model_copy(update=update)
    if any(getattr(after, name) > getattr(after, ceiling)
           for name, ceiling in change.within.items()):
        return None
    return after


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

    async def modify[T: Doc](self, kind: type[T], id: str, change: Change) -> T | None:
        """Apply ``change`` to the document if it exists and matches ``change.when``, and
        return it as changed; None (and nothing written) otherwise. One round trip where
        ``get`` then ``update`` take two: for a write whose condition is a field's value,
        such as a state machine's move or a counter's increment."""
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
