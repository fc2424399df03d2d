"""Partitioned work: each saga's replies and timers are handled by one instance at a time.

With ``SAGA_PARTITIONS`` = P > 0, a saga belongs to partition ``partition_of(saga_id, P)``
(contracts.topology). Its commands ask for their replies under that partition's routing key
(AMQP ``reply_to``), so replies land in the partition's own queue, and only the instance
holding the partition's lease consumes that queue and fires the partition's timers.

Instances share the partitions evenly: each round, an instance renews its membership, keeps
its share of the partitions it holds, gives up the rest, and takes free or expired ones up
to its share (``plan_round``, a pure function). An instance that dies keeps its partitions
until their leases expire; one that stops cleanly gives them up at once. Partition queues
have a single active consumer, so even two instances that both believe they hold a lease
(a clock jump, a database that could not be reached) never work on one partition at once;
and every save is a compare-and-set on the saga's version in any case.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from contracts.commands import saga_of
from contracts.topology import Topology, partition_key, partition_of
from infra.errors import SagaSystemError
from orchestrator.leases import Lease, Leases
from orchestrator.store import OutboxMessage

log = logging.getLogger(__name__)

Clock = Callable[[], float]
OnPartition = Callable[[int], Awaitable[None]]
ROUND_INTERVAL = 1.0  # seconds between rounds, at most


def shares(members: Sequence[str], partitions: int) -> dict[str, int]:
    """How many partitions each member works on: as even as can be, by sorted id."""
    base, extra = divmod(partitions, len(members))
    return {m: base + (1 if i < extra else 0) for i, m in enumerate(sorted(members))}


@dataclass(frozen=True, slots=True)
class Round:
    """What one instance does with the leases in one round."""

    keep: tuple[int, ...]  # held, and within its share: renew
    claim: tuple[int, ...]  # free or expired: try to take
    release: tuple[int, ...]  # held beyond its share: give up for the others


def plan_round(me: str, members: Sequence[str], leases: Sequence[Lease], partitions: int,
               now: float) -> Round:
    """The round of ``me``, from the members alive and the leases as they stand."""
    target = shares(sorted({*members, me}), partitions)[me]
    held = {lease.partition: lease for lease in leases}
    mine = sorted(p for p, lease in held.items()
                  if lease.owner == me and lease.until > now and p < partitions)
    keep, release = mine[:target], mine[target:]
    # Everyone starts looking at a different place, so that newcomers rarely race.
    start = zlib.crc32(me.encode()) % partitions
    free = [p for p in (*range(start, partitions), *range(start))
            if p not in held or held[p].until <= now]
    return Round(tuple(keep), tuple(free[:max(0, target - len(keep))]), tuple(release))


def reply_key_of(topology: Topology, partitions: int) -> Callable[[OutboxMessage], str | None]:
    """The ``reply_to`` of an outbox message: a command asks for its saga's partition."""

    def reply_to(message: OutboxMessage) -> str | None:
        if partitions == 0 or message.exchange != topology.commands_exchange:
            return None
        return partition_key(partition_of(saga_of(message.correlation_id), partitions))

    return reply_to


class PartitionKeeper:
    """Holds this instance's share of the partitions, and says when it gains or loses one."""

    def __init__(self, leases: Leases, *, member: str, partitions: int, lease_seconds: float,
                 clock: Clock) -> None:
        self._leases = leases
        self.member = member
        self.partitions = partitions
        self._lease_seconds = lease_seconds
        self._clock = clock
        self.owned: set[int] = set()
        self._valid_until = 0.0

    def partition_of(self, saga_id: str) -> int:
        """The saga's partition (a retried round's run id belongs to its saga's)."""
        return partition_of(saga_of(saga_id), self.partitions)

    def mine(self, saga_id: str) -> bool:
        """Whether this instance works on the saga now (its timers, for instance)."""
        return self.partition_of(saga_id) in self.owned

    async def run(self, gained: OnPartition, lost: OnPartition) -> None:
        """Rounds every second (or every third of a lease, if shorter) until cancelled: a
        partition given up waits at most that long for its next holder. A round that fails
        (the database away) is tried again; once the leases held may have expired, this
        instance lets its partitions go rather than work on them beside their next holder."""
        interval = min(self._lease_seconds / 3, ROUND_INTERVAL)
        while True:
            try:
                await self.round(gained, lost)
            except SagaSystemError as e:
                log.warning("partition leases not renewed: %s", e)
                if self.owned and self._clock() >= self._valid_until - interval:
                    log.error("partition leases may have expired; letting partitions %s go",
                              sorted(self.owned))
                    for partition in sorted(self.owned):
                        await self._lose(partition, lost)
            await asyncio.sleep(interval)

    async def round(self, gained: OnPartition, lost: OnPartition) -> None:
        """Renew membership, then keep, release and claim as ``plan_round`` says."""
        now = self._clock()
        until = now + self._lease_seconds
        await self._leases.heartbeat(self.member, until)
        members = await self._leases.members(now)
        plan = plan_round(self.member, members, await self._leases.leases(), self.partitions,
                          now)
        for partition in plan.release:
            await self._lose(partition, lost)
            await self._leases.release(partition, self.member)
        for partition in (*plan.keep, *plan.claim):
            if await self._leases.claim(partition, self.member, now, until):
                if partition not in self.owned:
                    self.owned.add(partition)
                    log.info("partition %d taken", partition, extra={"partition": partition})
                    await gained(partition)
            elif partition in self.owned:
                await self._lose(partition, lost)
        self._valid_until = until

    async def stop(self, lost: OnPartition) -> None:
        """Give every partition up and leave, so that the others take them over at once."""
        for partition in sorted(self.owned):
            await self._lose(partition, lost)
        try:
            for partition in range(self.partitions):
                await self._leases.release(partition, self.member)
            await self._leases.leave(self.member)
        except SagaSystemError as e:
            log.warning("partition leases not given up (they expire): %s", e)

    async def _lose(self, partition: int, lost: OnPartition) -> None:
        self.owned.discard(partition)
        log.info("partition %d let go", partition, extra={"partition": partition})
        await lost(partition)
