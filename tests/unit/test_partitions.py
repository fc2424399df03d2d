"""How orchestrator instances share the partitions (orchestrator.partitions), as pure
rounds over the leases: even shares, newcomers served, the dead replaced, nobody's live
lease taken."""

from __future__ import annotations

import pytest

from contracts.commands import run_id
from contracts.topology import (
    REPLY_KEY,
    Topology,
    is_reply_key,
    partition_key,
    partition_of,
)
from orchestrator.leases import Lease, MemoryLeases
from orchestrator.partitions import (
    OnPartition,
    PartitionKeeper,
    plan_round,
    reply_key_of,
    shares,
)
from orchestrator.store import OutboxMessage

NOW = 1_000.0
P = 8


def test_shares_are_as_even_as_can_be_and_sum_to_the_partitions() -> None:
    assert shares(["b", "a", "c"], 8) == {"a": 3, "b": 3, "c": 2}
    assert shares(["a"], 8) == {"a": 8}
    assert shares(["a", "b", "c"], 2) == {"a": 1, "b": 1, "c": 0}


def test_a_lone_instance_claims_every_partition() -> None:
    r = plan_round("a", ["a"], [], P, NOW)
    assert (r.keep, sorted(r.claim), r.release) == ((), list(range(P)), ())


def test_a_newcomer_gets_half_once_the_holder_gives_its_surplus_up() -> None:
    held = [Lease(p, "a", NOW + 10) for p in range(P)]
    a = plan_round("a", ["a", "b"], held, P, NOW)
    assert (len(a.keep), a.claim, len(a.release)) == (4, (), 4)
    # b finds nothing free until a has released: no live lease is ever claimed.
    assert plan_round("b", ["a", "b"], held, P, NOW).claim == ()
    released = [Lease(p, "a", NOW + 10 if p in a.keep else 0.0) for p in range(P)]
    b = plan_round("b", ["a", "b"], released, P, NOW)
    assert sorted(b.claim) == sorted(a.release)


def test_the_partitions_of_a_dead_instance_move_once_their_leases_expire() -> None:
    held = [Lease(p, "a" if p < 4 else "dead", NOW + 5 if p < 4 else NOW - 1)
            for p in range(P)]
    r = plan_round("a", ["a"], held, P, NOW)
    assert (r.keep, sorted(r.claim), r.release) == ((0, 1, 2, 3), [4, 5, 6, 7], ())
    alive = [Lease(p, "a" if p < 4 else "slow", NOW + 5) for p in range(P)]
    assert plan_round("a", ["a"], alive, P, NOW).claim == ()  # expired membership, live lease


def test_fewer_partitions_than_instances_leave_some_idle() -> None:
    r = plan_round("c", ["a", "b", "c"], [], 2, NOW)
    assert r == plan_round("c", ["a", "b", "c"], [], 2, NOW)
    assert r.claim == ()


def test_every_process_maps_a_saga_to_the_same_partition_and_reply_key() -> None:
    # CRC-32: the same in every process and every release (replies in flight use it).
    assert (partition_of("order:o-1", P), partition_of("transfer:t-9", 1024)) == (3, 746)
    assert {partition_of(f"order:o-{i}", P) for i in range(200)} == set(range(P))
    assert is_reply_key(REPLY_KEY)
    assert is_reply_key(partition_key(7))
    for bad in ("reply.p", "reply.p01", "reply.p-1", "reply.p12345", "orders", "reply.p1.x"):
        assert not is_reply_key(bad)


def test_only_commands_ask_for_a_partition_and_a_retried_round_keeps_its_saga() -> None:
    topology = Topology("t")
    reply_to = reply_key_of(topology, P)

    def message(exchange: str, correlation_id: str) -> OutboxMessage:
        return OutboxMessage("m-1", exchange, "inventory", "inventory.reserve.prepare", "{}",
                             correlation_id, None, NOW)

    saga = "order:o-1"
    expected = partition_key(partition_of(saga, P))
    assert reply_to(message(topology.commands_exchange, saga)) == expected
    assert reply_to(message(topology.commands_exchange, run_id(saga, 2))) == expected
    assert reply_to(message(topology.orders_exchange, saga)) is None
    assert reply_key_of(topology, 0)(message(topology.commands_exchange, saga)) is None


@pytest.mark.parametrize("members", [2, 3])
async def test_keepers_on_shared_leases_end_with_every_partition_held_once(members: int) -> None:
    """Rounds of several keepers on one lease store converge: each partition held by one
    instance, shares even, and gains and losses reported for each."""
    leases = MemoryLeases()
    now = [NOW]
    keepers = [PartitionKeeper(leases, member=f"i{n}", partitions=P, lease_seconds=9,
                               clock=lambda: now[0]) for n in range(members)]
    consuming: dict[str, set[int]] = {k.member: set() for k in keepers}

    def callbacks(member: str) -> tuple[OnPartition, OnPartition]:
        async def gained(p: int) -> None:
            consuming[member].add(p)

        async def lost(p: int) -> None:
            consuming[member].discard(p)

        return gained, lost

    for _ in range(4):
        for keeper in keepers:
            gained, lost = callbacks(keeper.member)
            await keeper.round(gained, lost)
        now[0] += 1
    owned = [k.owned for k in keepers]
    assert sorted(p for o in owned for p in o) == list(range(P))
    assert sorted(len(o) for o in owned) == sorted(shares([k.member for k in keepers], P).values())
    assert [consuming[k.member] for k in keepers] == owned
    gone = keepers.pop()
    gained, lost = callbacks(gone.member)
    await gone.stop(lost)
    assert consuming[gone.member] == set()
    for keeper in keepers:
        gained, lost = callbacks(keeper.member)
        await keeper.round(gained, lost)
    assert sorted(p for k in keepers for p in k.owned) == list(range(P))
