"""Semantic locks: a step holds business keys (an account, a SKU) until its saga settles it.

A two-phase operation may declare ``Locks``: its prepare takes a lock on each key, in the
same transaction as its effect, and its confirm or cancel releases them in theirs. The lock
lives with the participant's own data (collection ``locks``, one document per key), so it
is exactly as durable as the effect it protects, and a duplicate or a retried command sees
the same locks as the first.

- Modes: ``exclusive`` (one holder) or ``shared`` (any number of shared holders).
- A saga never blocks itself: another step of the same saga may take a key it holds.
- Keys are taken in one canonical order (sorted), so one step never deadlocks with itself.
- Policy ``fail``: a key held in a conflicting mode rejects the prepare at once with the
  reason code ``LOCKED``, naming the key and the saga that holds it.
- Policy ``wait``: the prepare is parked instead (a ``Waiter``, durable, one per step). The
  participant answers ``waiting`` with the key and its holders, which is what the
  orchestrator's wait-for graph is made of (orchestrator.deadlock), and runs the prepare
  again whenever one of its keys is let go. A wait longer than ``wait_timeout`` ends with
  the reason code ``LOCK_TIMEOUT``; a cancel of the step ends it without running anything.

The decisions (``conflict``, ``with_holder``, ``without``) are pure; ``take`` and
``release`` apply them through the step's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from contracts.envelope import Model
from contracts.errors import SagaSystemError
from contracts.reasons import PlatformReason
from contracts.topology import REPLY_KEY
from workers.store import Doc, Tx

P = TypeVar("P", bound=Model)
LOCKED = "LOCKED"  # the reason code of a prepare refused by a held lock
# The reason code of a prepare that waited too long for a key: the platform's, like any
# timeout (contracts.reasons), whereas LOCKED is the participant's own refusal.
LOCK_TIMEOUT = PlatformReason.LOCK_TIMEOUT
MAX_KEYS = 50


class LockMode(StrEnum):
    """How a step holds a key."""

    EXCLUSIVE = "exclusive"
    SHARED = "shared"


class LockPolicy(StrEnum):
    """What a prepare does when a key it needs is held in a conflicting mode."""

    FAIL = "fail"
    WAIT = "wait"


class Holder(Model):
    """One step of one saga holding a key."""

    saga_id: str
    step: str
    mode: LockMode
    since: float


class Lock(Doc):
    """The holders of one key; ``id`` is ``<kind>:<key>``."""

    collection = "locks"
    holders: tuple[Holder, ...] = ()


class Waiter(Doc):
    """A prepare parked until a key is free; ``id`` is ``<saga id>:<step>``.

    It keeps the command itself (its envelope and body, as JSON), so that the prepare can
    be run again by whichever process of the participant sees the key let go, or after a
    restart: a wait survives the process that began it.
    """

    collection = "lock_waits"
    lock: str  # the lock id (``<kind>:<key>``) it waits for
    holders: tuple[str, ...]
    envelope: str
    command: str
    since: float
    until: float
    # The prepare ran or was refused: the wait is over, and its answer (in the inbox) is
    # owed until it is published.
    answered: bool = False
    reply_to: str = REPLY_KEY  # where the command asked for its reply (its partition's key)


@dataclass(frozen=True, slots=True)
class Locks(Generic[P]):
    """What an operation locks: ``kind`` names the keys' domain (``account``, ``sku``) and
    ``keys`` reads them from the command's parameters."""

    kind: str
    keys: Callable[[P], Sequence[str]]
    mode: LockMode = LockMode.EXCLUSIVE
    policy: LockPolicy = LockPolicy.FAIL
    wait_timeout: float = 30.0  # seconds a ``wait`` prepare may wait before LOCK_TIMEOUT


class InvalidLockRequest(SagaSystemError, ValueError):
    """The keys cannot be locked (none, too many, or an empty key); the message says why."""


def canonical(keys: Sequence[str]) -> list[str]:
    """The keys to take, each once, in the one order every step takes them in."""
    if not keys:
        raise InvalidLockRequest("a lock request needs at least one key")
    if any(not isinstance(k, str) or not k.strip() for k in keys):
        raise InvalidLockRequest("a lock key must be a non-empty string")
    unique = sorted(set(keys))
    if len(unique) > MAX_KEYS:
        raise InvalidLockRequest(f"{len(unique)} keys; at most {MAX_KEYS} per step")
    return unique


def conflicts(holders: Sequence[Holder], saga_id: str, mode: LockMode) -> tuple[Holder, ...]:
    """The holders that keep ``saga_id`` from taking the key in ``mode``."""
    return tuple(h for h in holders
                 if h.saga_id != saga_id  # a saga never waits for itself
                 and (mode is LockMode.EXCLUSIVE or h.mode is LockMode.EXCLUSIVE))


def conflict(holders: Sequence[Holder], saga_id: str, mode: LockMode) -> Holder | None:
    """The first holder that keeps ``saga_id`` from taking the key in ``mode``, or None."""
    blockers = conflicts(holders, saga_id, mode)
    return blockers[0] if blockers else None


def with_holder(holders: Sequence[Holder], holder: Holder) -> tuple[Holder, ...]:
    """The holders once ``holder`` has the key (taking it again changes nothing)."""
    mine = [h for h in holders if (h.saga_id, h.step) == (holder.saga_id, holder.step)]
    return tuple(holders) if mine else (*holders, holder)


def without(holders: Sequence[Holder], saga_id: str, step: str) -> tuple[Holder, ...]:
    """The holders once one step of one saga has let go."""
    return tuple(h for h in holders if (h.saga_id, h.step) != (saga_id, step))


def lock_id(kind: str, key: str) -> str:
    """The document id of one key's lock."""
    return f"{kind}:{key}"


class KeyLocked(SagaSystemError):
    """A key is held in a conflicting mode."""

    def __init__(self, kind: str, key: str, holders: tuple[Holder, ...]) -> None:
        first = holders[0]
        others = f" and {len(holders) - 1} more" if len(holders) > 1 else ""
        super().__init__(f"{kind} {key} is locked by {first.saga_id} ({first.step}, "
                         f"{first.mode.value}){others}")
        self.lock = lock_id(kind, key)
        self.holders = tuple(sorted({h.saga_id for h in holders}))


async def take(tx: Tx, locks: Locks[P], params: P, saga_id: str, step: str,
               now: float) -> None:
    """Take every key of the step, or raise KeyLocked (the transaction then rolls back
    whatever was taken) or InvalidLockRequest."""
    for key in canonical(locks.keys(params)):
        current = await tx.get(Lock, lock_id(locks.kind, key))
        holders = current.holders if current else ()
        blockers = conflicts(holders, saga_id, locks.mode)
        if blockers:
            raise KeyLocked(locks.kind, key, blockers)
        held = with_holder(holders, Holder(saga_id=saga_id, step=step, mode=locks.mode,
                                           since=now))
        if current is None:
            await tx.insert(Lock(id=lock_id(locks.kind, key), holders=held))
        elif held != current.holders:
            await tx.update(current.model_copy(update={"holders": held}))


async def release(tx: Tx, locks: Locks[P], params: P, saga_id: str, step: str) -> list[str]:
    """Let go of every key the step holds (a key it does not hold is left as it is); the
    ids of the locks let go, whose waiters may now run."""
    freed = []
    for key in canonical(locks.keys(params)):
        current = await tx.get(Lock, lock_id(locks.kind, key))
        if current is None:
            continue
        left = without(current.holders, saga_id, step)
        if left != current.holders:
            await tx.update(current.model_copy(update={"holders": left}))
            freed.append(current.id)
    return freed
