"""A participant that lives outside the project's packages: a vault of items, locked in two
phases, and a stamp that can be undone.

Registered only through configuration (``SAGA_PARTICIPANTS=tests.platform.vault:SERVICE``),
run as ``python -m workers tests.platform.vault:SERVICE``. Its parameters can ask it to
refuse, or to fail its own undo for good, so that tests reach every path.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from contracts.envelope import Model
from workers.sdk import Action, Impossible, Participant, Rejected, StepContext, TwoPhase
from workers.store import Doc, Tx

Key = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9-]+$")]


class Lock(Model):
    """vault.lock: hold ``units`` of an item (created on first use with ``stock`` units)."""

    item: Key
    units: int = Field(ge=1, le=1000)
    refuse: bool = False  # vote rollback-required
    broken_cancel: bool = False  # the cancel fails for good


class Stamp(Model):
    """vault.stamp: mark a document; its undo removes the mark."""

    document: Key


class Item(Doc):
    """An item with ``free`` units and ``locked`` units."""

    collection = "items"
    free: int
    locked: int = 0


class Mark(Doc):
    """A stamp; ``id`` is ``<saga id>:<step>``."""

    collection = "marks"
    document: str
    removed: bool = False


STOCK = 100


async def lock(tx: Tx, p: Lock, step: StepContext) -> str:
    """Hold units, or refuse."""
    if p.refuse:
        raise Rejected("VAULT_REFUSED", f"the vault refuses {p.item}")
    item = await tx.get(Item, p.item)
    if item is None:
        await tx.insert(Item(id=p.item, free=STOCK))
        item = await tx.get(Item, p.item)
        assert item is not None
    if item.free < p.units:
        raise Rejected("VAULT_EMPTY", f"{p.units} wanted, {item.free} free")
    await tx.update(item.model_copy(update={"free": item.free - p.units,
                                            "locked": item.locked + p.units}))
    return f"locked {p.units} {p.item}"


async def release(tx: Tx, p: Lock, step: StepContext, taken: bool) -> str:
    """Give the units back (``taken``: they leave the vault for good)."""
    item = await tx.get(Item, p.item)
    if item is None:
        raise Impossible(f"no item {p.item}")
    free = item.free if taken else item.free + p.units
    await tx.update(item.model_copy(update={"free": free, "locked": item.locked - p.units}))
    return f"{'took' if taken else 'released'} {p.units} {p.item}"


async def take(tx: Tx, p: Lock, step: StepContext) -> str:
    """Confirm: the locked units leave the vault."""
    return await release(tx, p, step, taken=True)


async def unlock(tx: Tx, p: Lock, step: StepContext) -> str:
    """Cancel: the locked units are free again (or, when asked, this fails for good)."""
    if p.broken_cancel:
        raise Impossible("the vault's cancel is broken on purpose")
    return await release(tx, p, step, taken=False)


async def stamp(tx: Tx, p: Stamp, step: StepContext) -> str:
    """Mark the document."""
    await tx.insert(Mark(id=f"{step.saga_id}:{step.step}", document=p.document))
    return f"stamped {p.document}"


async def unstamp(tx: Tx, p: Stamp, step: StepContext) -> str:
    """Remove the mark."""
    mark = await tx.get(Mark, f"{step.saga_id}:{step.step}")
    if mark is None:
        raise Impossible("no mark")
    await tx.update(mark.model_copy(update={"removed": True}))
    return f"unstamped {p.document}"


SERVICE = Participant(
    name="vault",
    description="A test-only participant: items locked in two phases, undoable stamps.",
    operations=(
        TwoPhase("lock", Lock, prepare=lock, confirm=take, cancel=unlock),
        Action("stamp", Stamp, run=stamp, undo=unstamp),
    ),
    documents=(Item, Mark),
    rejection="VAULT_REFUSED",
    reasons=("VAULT_REFUSED", "VAULT_EMPTY"),
)
