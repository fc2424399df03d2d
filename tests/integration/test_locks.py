"""Semantic locks through the real worker runtime on the real broker: a prepare takes its
keys in the transaction of its effect, a conflicting prepare is refused with LOCKED (policy
fail) or parked and answered ``waiting`` (policy wait), and the confirm or cancel lets go
and wakes the parked ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from pydantic import Field, SecretStr

from contracts.commands import Outcome, StepCommand, StepReply
from contracts.envelope import Model, read_envelope, read_payload
from contracts.topology import REPLY_KEY, Topology, partition_key
from infra.adapters.rabbit import RabbitTransport
from infra.settings import CommonSettings
from tests.integration.test_worker_runtime import Participant as Running
from tests.integration.test_worker_runtime import Rig
from workers.app import Worker
from workers.locks import (
    LOCK_TIMEOUT,
    LOCKED,
    Lock,
    LockMode,
    LockPolicy,
    Locks,
    Waiter,
    lock_id,
)
from workers.metrics import WorkerMetrics
from workers.sdk import Participant, StepContext, TwoPhase
from workers.settings import WorkerSettings
from workers.store import Tx
from workers.store_memory import MemoryDocumentStore

WAIT_FOR = 3.0  # the ``queue`` operation's lock wait timeout, in seconds


class Keys(Model):
    """The items one step holds."""

    items: tuple[str, ...] = Field(max_length=60)


async def noted(tx: Tx, p: Keys, step: StepContext) -> str:
    return f"{step.step}: {','.join(p.items)}"


def _items(p: Keys) -> tuple[str, ...]:
    return p.items


KEEPER = Participant(
    name="keeper",
    operations=(
        TwoPhase("hold", Keys, prepare=noted, confirm=noted, cancel=noted,
                 locks=Locks("item", _items)),
        TwoPhase("peek", Keys, prepare=noted, confirm=noted, cancel=noted,
                 locks=Locks("item", _items, LockMode.SHARED)),
        TwoPhase("queue", Keys, prepare=noted, confirm=noted, cancel=noted,
                 locks=Locks("item", _items, policy=LockPolicy.WAIT, wait_timeout=WAIT_FOR)),
    ),
)


@pytest.fixture
async def keeper(amqp_url: str, topology: Topology, rabbit: RabbitTransport,
                 ) -> AsyncIterator[tuple[Rig, MemoryDocumentStore, CollectorRegistry]]:
    """The keeper worker on this test's namespace (it declares its own queue)."""
    common = CommonSettings(amqp_url=SecretStr(amqp_url), namespace=topology.namespace,
                            store="memory")
    transport = RabbitTransport(amqp_url, connection_name="pytest-keeper", connect_timeout=10)
    await transport.connect()
    store, registry = MemoryDocumentStore(), CollectorRegistry()
    worker = Worker(settings=WorkerSettings(common=common, service="keeper"), spec=KEEPER,
                    transport=transport, store=store, metrics=WorkerMetrics(registry))
    await worker.start()
    replies = await rabbit.temporary_queue(topology.replies_exchange, (REPLY_KEY,))
    try:
        yield Rig(rabbit, topology, replies, {"keeper": Running(worker, store, registry)}), \
            store, registry
    finally:
        await worker.stop()


def keys(saga: str, step: str, *items: str) -> StepCommand:
    return StepCommand(saga_id=f"keeper:{saga}", step=step,
                       params=Keys(items=items).model_dump(mode="json"))


async def holders(store: MemoryDocumentStore, item: str) -> list[tuple[str, str]]:
    async with store.transaction() as tx:
        lock = await tx.get(Lock, lock_id("item", item))
    return [] if lock is None else [(h.saga_id, h.step) for h in lock.holders]


Keeper = tuple[Rig, MemoryDocumentStore, CollectorRegistry]


async def test_a_held_key_refuses_another_saga_until_the_holder_settles(keeper: Keeper) -> None:
    rig, store, registry = keeper
    first = await rig.call("keeper.hold.prepare", keys("a", "s", "y", "x", "x"), "a-1")
    assert first.outcome is Outcome.SUCCEEDED
    assert await holders(store, "x") == await holders(store, "y") == [("keeper:a", "s")]

    refused = await rig.call("keeper.hold.prepare", keys("b", "s", "y"), "b-1")
    assert (refused.outcome, refused.reason_code) == (Outcome.REJECTED, LOCKED)
    assert refused.detail == "item y is locked by keeper:a (s, exclusive)"
    assert registry.get_sample_value("saga_worker_lock_refusals_total",
                                     {"service": "keeper"}) == 1
    # Its saga undoes it: nothing was taken, so nothing is released, and a holds still.
    undone = await rig.call("keeper.hold.cancel", keys("b", "s", "y"), "b-2")
    assert undone.detail == "nothing to undo"
    assert await holders(store, "y") == [("keeper:a", "s")]

    await rig.send("keeper.hold.prepare", keys("a", "s", "x", "y"), "a-1")  # a duplicate
    (_, again) = (await rig.replies_to("a-1", 2))[1]
    assert again == first
    assert await holders(store, "x") == [("keeper:a", "s")]
    assert (await rig.call("keeper.hold.confirm", keys("a", "s", "x", "y"), "a-2")).outcome \
        is Outcome.SUCCEEDED
    assert await holders(store, "x") == await holders(store, "y") == []
    later = await rig.call("keeper.hold.prepare", keys("c", "s", "y"), "c-1")
    assert later.outcome is Outcome.SUCCEEDED


async def test_shared_holders_coexist_and_keep_out_an_exclusive_one(keeper: Keeper) -> None:
    rig, store, _ = keeper
    for saga in ("r1", "r2"):
        peek = await rig.call("keeper.peek.prepare", keys(saga, "look", "z"), f"{saga}-1")
        assert peek.outcome is Outcome.SUCCEEDED
    hold = await rig.call("keeper.hold.prepare", keys("w", "s", "z"), "w-1")
    assert (hold.outcome, hold.reason_code) == (Outcome.REJECTED, LOCKED)
    assert "locked by keeper:r1 (look, shared)" in hold.detail
    for saga in ("r1", "r2"):
        await rig.call("keeper.peek.cancel", keys(saga, "look", "z"), f"{saga}-2")
    assert await holders(store, "z") == []
    retry = await rig.call("keeper.hold.prepare", keys("w", "s2", "z"), "w-2")
    assert retry.outcome is Outcome.SUCCEEDED


async def test_a_saga_does_not_wait_for_itself(keeper: Keeper) -> None:
    rig, store, _ = keeper
    await rig.call("keeper.hold.prepare", keys("m", "first", "k"), "m-1")
    second = await rig.call("keeper.hold.prepare", keys("m", "second", "k"), "m-2")
    assert second.outcome is Outcome.SUCCEEDED
    assert await holders(store, "k") == [("keeper:m", "first"), ("keeper:m", "second")]
    await rig.call("keeper.hold.cancel", keys("m", "first", "k"), "m-3")
    assert await holders(store, "k") == [("keeper:m", "second")]


async def test_an_empty_key_list_fails_for_good_with_the_reason(keeper: Keeper) -> None:
    rig, _, _ = keeper
    reply = await rig.call("keeper.hold.prepare", keys("e", "s"), "e-1")
    assert (reply.outcome, reply.detail) == (Outcome.PERMANENT_ERROR,
                                             "a lock request needs at least one key")
    blank = await rig.call("keeper.hold.prepare", keys("e2", "s", " "), "e-2")
    assert (blank.outcome, blank.detail) == (Outcome.PERMANENT_ERROR,
                                             "a lock key must be a non-empty string")


# --- policy wait ------------------------------------------------------------------------------


async def waiters(store: MemoryDocumentStore) -> list[str]:
    """The steps still waiting (an answered wait is kept until its answer is out)."""
    return sorted(w.id for w in await store.all(Waiter) if not w.answered)


async def test_a_waiting_prepare_is_parked_and_runs_when_the_key_is_let_go(
        keeper: Keeper) -> None:
    rig, store, registry = keeper
    await rig.call("keeper.hold.prepare", keys("a", "s", "x"), "a-1")
    parked = await rig.call("keeper.queue.prepare", keys("b", "q", "x", "w"), "b-1")
    assert parked.outcome is Outcome.WAITING
    assert parked.waiting is not None
    assert (parked.waiting.key, parked.waiting.holders) == ("item:x", ["keeper:a"])
    assert await waiters(store) == ["keeper:b:q"]
    # Keys are taken in order and all or none: "w" sorts first, but is not kept while waiting.
    assert await holders(store, "w") == []

    await rig.call("keeper.hold.confirm", keys("a", "s", "x"), "a-2")
    (_, first), (_, ran) = await rig.replies_to("b-1", 2)
    assert first == parked
    assert (ran.outcome, ran.detail) == (Outcome.SUCCEEDED, "q: x,w")
    assert await holders(store, "x") == await holders(store, "w") == [("keeper:b", "q")]
    assert await waiters(store) == []
    assert registry.get_sample_value("saga_worker_lock_waits_total", {"service": "keeper"}) == 1
    assert registry.get_sample_value("saga_worker_lock_wait_seconds_count",
                                     {"service": "keeper", "end": "ran"}) == 1
    # A late copy of the command gets the answer it got in the end, nothing runs twice.
    await rig.send("keeper.queue.prepare", keys("b", "q", "x", "w"), "b-1")
    (_, _, (_, again)) = await rig.replies_to("b-1", 3)
    assert again == ran


async def test_a_wait_that_lasts_too_long_is_refused_with_lock_timeout(keeper: Keeper) -> None:
    rig, store, registry = keeper
    await rig.call("keeper.hold.prepare", keys("a", "s", "t"), "a-1")
    parked = await rig.call("keeper.queue.prepare", keys("b", "q", "t"), "b-1")
    assert parked.outcome is Outcome.WAITING
    (_, _), (_, refused) = await rig.replies_to("b-1", 2)  # after WAIT_FOR seconds
    assert (refused.outcome, refused.reason_code) == (Outcome.REJECTED, LOCK_TIMEOUT)
    assert "item:t, held by keeper:a" in refused.detail
    assert await waiters(store) == []
    assert registry.get_sample_value("saga_worker_lock_wait_seconds_count",
                                     {"service": "keeper", "end": "timed_out"}) == 1
    # Once refused, always refused: the release that follows does not run it after all.
    await rig.call("keeper.hold.cancel", keys("a", "s", "t"), "a-2")
    assert await holders(store, "t") == []
    again = await rig.call("keeper.queue.prepare", keys("b", "q", "t"), "b-2")
    assert (again.outcome, again.reason_code) == (Outcome.REJECTED, LOCK_TIMEOUT)


async def test_a_cancelled_wait_leaves_no_waiter_and_never_runs(keeper: Keeper) -> None:
    rig, store, registry = keeper
    await rig.call("keeper.hold.prepare", keys("a", "s", "c"), "a-1")
    assert (await rig.call("keeper.queue.prepare", keys("b", "q", "c"), "b-1")).outcome \
        is Outcome.WAITING
    undone = await rig.call("keeper.queue.cancel", keys("b", "q", "c"), "b-2")
    assert (undone.outcome, undone.detail) == (Outcome.SUCCEEDED, "nothing to undo")
    assert await waiters(store) == []
    await rig.call("keeper.hold.confirm", keys("a", "s", "c"), "a-2")
    assert await rig.participants["keeper"].worker.runtime.look_at_waits() == 0
    assert await holders(store, "c") == []
    assert len(await rig.replies_to("b-1")) == 1  # only "waiting", never a late success
    assert registry.get_sample_value("saga_worker_lock_wait_seconds_count",
                                     {"service": "keeper", "end": "cancelled"}) == 1


async def test_a_wait_survives_its_process(keeper: Keeper, amqp_url: str,
                                           topology: Topology) -> None:
    """The worker that parked the prepare stops; the next one, on the same database, runs it
    when the key is let go."""
    rig, store, _ = keeper
    await rig.call("keeper.hold.prepare", keys("a", "s", "d"), "a-1")
    assert (await rig.call("keeper.queue.prepare", keys("b", "q", "d"), "b-1")).outcome \
        is Outcome.WAITING
    await rig.participants["keeper"].worker.stop()
    common = CommonSettings(amqp_url=SecretStr(amqp_url), namespace=topology.namespace,
                            store="memory")
    transport = RabbitTransport(amqp_url, connection_name="pytest-keeper-2", connect_timeout=10)
    await transport.connect()
    second = Worker(settings=WorkerSettings(common=common, service="keeper"), spec=KEEPER,
                    transport=transport, store=store, metrics=WorkerMetrics(CollectorRegistry()))
    await second.start()
    try:
        assert await waiters(store) == ["keeper:b:q"]
        await rig.call("keeper.hold.cancel", keys("a", "s", "d"), "a-2")
        (_, _), (_, ran) = await rig.replies_to("b-1", 2)
        assert ran.outcome is Outcome.SUCCEEDED
        assert await holders(store, "d") == [("keeper:b", "q")]
    finally:
        await second.stop()


async def test_a_waiter_hears_who_holds_the_key_once_it_changes_hands(keeper: Keeper) -> None:
    """The orchestrator's wait-for graph names the holder of now: when the key goes to
    another waiter, the ones still waiting say so again, or a cycle through the new holder
    would never be seen."""
    rig, store, _ = keeper
    await rig.call("keeper.hold.prepare", keys("a", "s", "h"), "a-1")
    for saga in ("b", "c"):
        parked = await rig.call("keeper.queue.prepare", keys(saga, "q", "h"), f"{saga}-1")
        assert parked.waiting is not None
        assert parked.waiting.holders == ["keeper:a"]
    await rig.call("keeper.hold.confirm", keys("a", "s", "h"), "a-2")
    (_, _), (_, ran) = await rig.replies_to("b-1", 2)  # the first to wait goes first
    assert ran.outcome is Outcome.SUCCEEDED
    (_, _), (_, again) = await rig.replies_to("c-1", 2)
    assert again.outcome is Outcome.WAITING
    assert again.waiting is not None
    assert again.waiting.holders == ["keeper:b"]
    assert await holders(store, "h") == [("keeper:b", "q")]


async def test_a_resumed_wait_answers_on_the_key_its_command_asked_for(keeper: Keeper) -> None:
    """A parked prepare keeps its command's reply_to: the answer sent when the key is let
    go reaches the partition that waits for it, as the "waiting" answer did."""
    rig, _, _ = keeper
    partition = await rig.rabbit.temporary_queue(rig.topology.replies_exchange,
                                                 (partition_key(1),))
    await rig.call("keeper.hold.prepare", keys("a", "s", "x"), "a-1")
    await rig.send("keeper.queue.prepare", keys("b", "q", "x"), "b-1", reply_to=partition_key(1))
    await rig.call("keeper.hold.confirm", keys("a", "s", "x"), "a-2")
    answers: list[Outcome] = []
    deadline = asyncio.get_running_loop().time() + 10
    while len(answers) < 2:
        assert asyncio.get_running_loop().time() < deadline, f"only {answers} on the partition"
        if (message := await rig.rabbit.get(partition)) is not None:
            assert read_envelope(message).causation_id == "b-1"
            answers.append(read_payload(message, StepReply).outcome)
        else:
            await asyncio.sleep(0.02)
    assert answers == [Outcome.WAITING, Outcome.SUCCEEDED]
    assert "b-1" not in rig.replies
