"""The progress line of long runs: its wording, its rate, and how it behaves on a terminal
and in a log."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import pytest

from harness.progress import CLEAR_TO_END, Progress, Snapshot, format_line


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@dataclass
class Clock:
    """Time that moves only when a test moves it."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Counts:
    """What a run would have finished so far."""

    finished: int = 0
    faults: int = 0

    def snapshot(self) -> Snapshot:
        return Snapshot(self.finished, 40, (("faults injected", self.faults),))


def test_the_line_says_finished_of_total_the_rate_and_the_extra_counts() -> None:
    """Everything an operator watching a long run asks: how far, how fast, what was done."""
    line = format_line("chaos", Snapshot(30, 120, (("faults injected", 7),)), elapsed=12.0)
    assert line == "chaos: 30/120 finished (25%), 2.5/s, faults injected 7, 12s"


def test_the_line_at_the_very_start_divides_by_nothing() -> None:
    """No time elapsed and nothing planned yet is a line of zeros, not a crash."""
    assert format_line("demo", Snapshot(0, 0), elapsed=0.0) == "demo: 0/0 finished (0%), 0.0/s, 0s"


def test_the_rate_is_measured_on_the_injected_clock() -> None:
    """The rate is finished per second since the start, by the given clock."""
    clock, counts, stream = Clock(), Counts(finished=20), io.StringIO()
    progress = Progress("demo", counts.snapshot, stream, clock=clock)
    clock.now += 8.0
    progress.show(began=100.0)
    assert stream.getvalue() == "demo: 20/40 finished (50%), 2.5/s, faults injected 0, 8s\n"


def test_in_a_log_each_line_is_a_plain_line() -> None:
    """CI logs and pipes get whole lines: no carriage returns, no terminal escapes."""
    counts, stream = Counts(), io.StringIO()
    progress = Progress("demo", counts.snapshot, stream, clock=Clock())
    progress.show(began=100.0)
    counts.finished = 4
    progress.show(began=100.0, final=True)
    text = stream.getvalue()
    assert text.endswith("\n")
    assert [line.split(",")[0] for line in text.splitlines()] == ["demo: 0/40 finished (0%)",
                                                                 "demo: 4/40 finished (10%)"]
    assert "\r" not in text
    assert "\x1b" not in text


def test_on_a_terminal_one_line_is_rewritten_in_place_and_ended_at_the_end() -> None:
    """Each update returns to the start of the line and clears its tail; only the last one
    ends the line, so that what is printed next starts on a line of its own."""
    counts, stream = Counts(), Terminal()
    progress = Progress("chaos", counts.snapshot, stream, clock=Clock())
    progress.show(began=100.0)
    counts.finished = 40
    progress.show(began=100.0)
    assert "\n" not in stream.getvalue()
    assert stream.getvalue().count("\r") == 2
    assert stream.getvalue().endswith(CLEAR_TO_END)
    progress.show(began=100.0, final=True)
    assert stream.getvalue().endswith(f"\rchaos: 40/40 finished (100%), 0.0/s, faults injected 0, "
                                      f"0s{CLEAR_TO_END}\n")


async def test_running_shows_the_line_at_once_and_the_final_count_at_the_end() -> None:
    """The line appears as soon as the loop runs, and once more when the block ends, with
    what was finished by then (the next periodic line is seconds away: never waited for)."""
    counts, stream = Counts(), io.StringIO()
    async with Progress("demo", counts.snapshot, stream, clock=Clock()).running():
        await asyncio.sleep(0)  # the reporter's task writes its first line
        counts.finished, counts.faults = 40, 3
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["demo: 0/40 finished (0%)",
                                                      "demo: 40/40 finished (100%)"]
    assert lines[1].endswith("faults injected 3, 0s")


async def test_a_failing_run_still_ends_the_terminal_line() -> None:
    """An error (or Ctrl-C) inside the block leaves the terminal on a fresh line for the
    error message, and stops the reporter."""
    stream = Terminal()
    with pytest.raises(RuntimeError, match="broker gone"):
        async with Progress("demo", Counts().snapshot, stream, clock=Clock()).running():
            await asyncio.sleep(0)
            raise RuntimeError("broker gone")
    assert stream.getvalue().endswith("\n")
    assert len(asyncio.all_tasks()) == 1  # only the test's own
