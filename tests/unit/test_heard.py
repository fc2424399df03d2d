"""The heard clock: timers wait for the replies already queued, and never forever."""

from __future__ import annotations

import asyncio

import pytest

from infra.errors import BrokerUnavailable
from infra.transport import Delivery
from orchestrator.heard import HeardClock

MAX_LAG = 60.0


class Queue:
    """A reply queue's ready count and a clock, both set by the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.ready = 0
        self.down = False

    async def depth(self) -> int:
        if self.down:
            raise BrokerUnavailable("the broker is down")
        return self.ready

    def clock(self) -> float:
        return self.now


@pytest.fixture
def queue() -> Queue:
    return Queue()


@pytest.fixture
def heard(queue: Queue) -> HeardClock:
    return HeardClock(queue.depth, queue.clock, max_lag=MAX_LAG)


async def test_before_the_first_look_timers_lag_by_the_maximum(queue: Queue,
                                                               heard: HeardClock) -> None:
    """A process that has not looked at its reply queue yet cannot know it is caught up."""
    assert heard() == queue.now - MAX_LAG


async def test_an_empty_queue_moves_the_clock_to_the_look(queue: Queue,
                                                          heard: HeardClock) -> None:
    """Seen empty with nothing being handled: every reply sent before then has been read."""
    await heard.refresh()
    queue.now += 5.0
    assert heard() == queue.now - 5.0
    assert heard.lag() == 5.0


async def test_a_backlog_holds_the_clock_back(queue: Queue, heard: HeardClock) -> None:
    """While replies wait unread, the clock stays where the queue was last seen empty."""
    await heard.refresh()
    seen_empty = queue.now
    queue.ready = 500
    for _ in range(10):
        queue.now += 2.0
        await heard.refresh()
    assert heard() == seen_empty
    queue.ready = 0
    await heard.refresh()
    assert heard() == queue.now


async def test_a_reply_being_handled_holds_the_clock_back(queue: Queue,
                                                          heard: HeardClock) -> None:
    """A reply delivered but not yet handled is not heard: the queue seen empty meanwhile
    counts only once that reply is done."""
    release = asyncio.Event()
    handled: list[Delivery] = []

    async def slow(delivery: Delivery) -> None:
        await release.wait()
        handled.append(delivery)

    handler = heard.track(slow)
    before = heard()
    task = asyncio.create_task(handler(object()))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await heard.refresh()  # empty, but one reply is still being handled
    assert heard() == before
    release.set()
    await task
    queue.now += 1.0
    await heard.refresh()
    assert heard() == queue.now
    assert len(handled) == 1


async def test_an_unreadable_depth_holds_the_clock_back(queue: Queue,
                                                        heard: HeardClock) -> None:
    """With the broker down nothing is heard, so nothing is concluded from silence."""
    await heard.refresh()
    seen_empty = queue.now
    queue.down = True
    queue.now += 20.0
    await heard.refresh()
    assert heard() == seen_empty


async def test_the_clock_lags_by_at_most_the_maximum(queue: Queue, heard: HeardClock) -> None:
    """An orchestrator that never catches up still times its sagas out, later."""
    await heard.refresh()
    queue.ready = 1
    queue.now += 10 * MAX_LAG
    await heard.refresh()
    assert heard() == queue.now - MAX_LAG
    assert heard.lag() == MAX_LAG


async def test_a_look_the_broker_never_answers_gives_up_and_the_clock_waits(
        queue: Queue) -> None:
    """The timer loop waits for each look at the reply queue: a broker channel that never
    answers must not stop every timer of the process."""
    never = asyncio.Event()

    async def hanging_depth() -> int:
        await never.wait()
        return 0

    heard = HeardClock(hanging_depth, queue.clock, max_lag=MAX_LAG, look_timeout=0.05)
    await asyncio.wait_for(heard.refresh(), 5.0)
    assert heard() == queue.now - MAX_LAG
