"""The partition lease port, and its in-memory adapter.

Orchestrator instances share P partitions of the work on sagas (orchestrator.partitions).
Each instance says it is alive (a membership record with an expiry) and holds leases on the
partitions it works on; a lease is taken only when it is free or has expired, so a partition
whose instance died moves on once its lease runs out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a partition, until when (seconds since the epoch)."""

    partition: int
    owner: str
    until: float


class Leases(Protocol):
    """Membership and partition leases, shared by every orchestrator instance."""

    async def ensure_indexes(self) -> None:
        """Whatever the adapter needs before the first call."""
        ...

    async def heartbeat(self, member: str, until: float) -> None:
        """Say that ``member`` is alive until ``until``."""
        ...

    async def members(self, now: float) -> list[str]:
        """The members alive at ``now``, sorted."""
        ...

    async def leave(self, member: str) -> None:
        """Forget ``member`` (a clean stop): the others share its partitions at once."""
        ...

    async def leases(self) -> list[Lease]:
        """Every lease ever taken (expired ones included)."""
        ...

    async def claim(self, partition: int, member: str, now: float, until: float) -> bool:
        """Take or renew the lease if it is free, expired or ``member``'s already."""
        ...

    async def release(self, partition: int, member: str) -> None:
        """Give the lease up if ``member`` holds it."""
        ...


class MemoryLeases:
    """Leases in this process: the embedded mode's and the tests' (one instance owns all)."""

    def __init__(self) -> None:
        self._members: dict[str, float] = {}
        self._leases: dict[int, Lease] = {}

    async def ensure_indexes(self) -> None:
        """Nothing to prepare."""

    async def heartbeat(self, member: str, until: float) -> None:
        """Remember the expiry."""
        self._members[member] = until

    async def members(self, now: float) -> list[str]:
        """Sorted ids of those not expired."""
        return sorted(m for m, until in self._members.items() if until > now)

    async def leave(self, member: str) -> None:
        """Forget it."""
        self._members.pop(member, None)

    async def leases(self) -> list[Lease]:
        """By partition."""
        return [self._leases[p] for p in sorted(self._leases)]

    async def claim(self, partition: int, member: str, now: float, until: float) -> bool:
        """Compare and set on owner and expiry."""
        held = self._leases.get(partition)
        if held is not None and held.owner != member and held.until > now:
            return False
        self._leases[partition] = Lease(partition, member, until)
        return True

    async def release(self, partition: int, member: str) -> None:
        """Expire it now, if ``member`` holds it."""
        held = self._leases.get(partition)
        if held is not None and held.owner == member:
            self._leases[partition] = Lease(partition, member, 0.0)
