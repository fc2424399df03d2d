"""A live progress line for long runs (``sagactl demo``, ``sagactl chaos``).

On a terminal it is one line rewritten in place; anywhere else (CI logs, pipes) it is a
plain line every few seconds, so that a log shows the run moving without a wall of text.
It goes to its own stream (stderr), never to the results printed on stdout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TextIO

# Erase from the cursor to the end of the line: a shorter line leaves no tail behind.
CLEAR_TO_END = "\x1b[K"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """How far a run is: sagas finished of those planned, and named counts (e.g. faults)."""

    finished: int
    total: int
    extra: tuple[tuple[str, int], ...] = ()


def format_line(label: str, snapshot: Snapshot, elapsed: float) -> str:
    """The progress line, e.g. ``demo: 120/600 finished (20%), 12.0/s, 10s``."""
    share = snapshot.finished / snapshot.total if snapshot.total else 0.0
    rate = snapshot.finished / elapsed if elapsed > 0 else 0.0
    fields = [f"{snapshot.finished}/{snapshot.total} finished ({share:.0%})", f"{rate:.1f}/s",
              *(f"{name} {count}" for name, count in snapshot.extra), f"{elapsed:.0f}s"]
    return f"{label}: {', '.join(fields)}"


@dataclass(frozen=True, slots=True)
class Progress:
    """Writes the progress line while a block runs (``async with progress.running():``).

    ``snapshot`` is called on every line, from the event loop: it must be cheap and must not
    raise (read counters the run already keeps; never query a store from it).
    """

    label: str
    snapshot: Callable[[], Snapshot]
    stream: TextIO
    tty_interval: float = 0.5
    plain_interval: float = 5.0
    clock: Callable[[], float] = time.monotonic

    @property
    def live(self) -> bool:
        """True when the stream is a terminal: the line is rewritten in place."""
        return self.stream.isatty()

    def show(self, began: float, final: bool = False) -> None:
        """Write the line once; ``final`` ends a terminal's line with a newline."""
        line = format_line(self.label, self.snapshot(), self.clock() - began)
        if self.live:
            end = "\n" if final else ""
            self.stream.write(f"\r{line}{CLEAR_TO_END}{end}")
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Show the line until the block ends, then once more with the final count."""
        began = self.clock()
        task = asyncio.create_task(self._loop(began))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # Also on an error or Ctrl-C: a terminal's line must end before anything else
            # is printed.
            self.show(began, final=True)

    async def _loop(self, began: float) -> None:
        interval = self.tty_interval if self.live else self.plain_interval
        while True:
            self.show(began)
            await asyncio.sleep(interval)
