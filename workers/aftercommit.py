"""Side effects that belong to a transaction's outcome: run only once it has committed.

A metric counted or a waiter woken inside a transaction that then rolls back (a conflict,
or a first attempt that guessed wrong and is tried again) would count or wake for
something that did not happen, and count it again on the next attempt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from workers.store import Change, Doc, DocumentStore, Tx


class AfterCommit:
    """A transaction that also keeps the actions to run if it commits."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self.actions: list[Callable[[], None]] = []

    def later(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the transaction has committed (never if it rolls back)."""
        self.actions.append(action)

    async def get[T: Doc](self, kind: type[T], id: str) -> T | None:
        """As ``Tx.get``."""
        return await self._tx.get(kind, id)

    async def insert(self, doc: Doc) -> None:
        """As ``Tx.insert``."""
        await self._tx.insert(doc)

    async def update[T: Doc](self, doc: T) -> T:
        """As ``Tx.update``."""
        return await self._tx.update(doc)

    async def modify[T: Doc](self, kind: type[T], id: str, change: Change) -> T | None:
        """As ``Tx.modify``."""
        return await self._tx.modify(kind, id, change)

    async def delete(self, doc: Doc) -> None:
        """As ``Tx.delete``."""
        await self._tx.delete(doc)


@asynccontextmanager
async def transaction(store: DocumentStore) -> AsyncIterator[AfterCommit]:
    """``store.transaction()``, then the actions it kept, in order, once it committed."""
    async with store.transaction() as tx:
        hooked = AfterCommit(tx)
        yield hooked
    for action in hooked.actions:
        action()
