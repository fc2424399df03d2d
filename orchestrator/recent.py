"""The states this process saved last: a bounded cache that spares a load per event.

Most events of a saga reach the instance that handled its previous one (always, once the
work is partitioned by saga id), and that instance already holds the state it saved. Using
it spares a database read, and its decoding, per event.

An entry is only ever a guess, and the runner never trusts it for anything it cannot
check:

* a save from it is a compare-and-set on the version, which fails if anything wrote the
  saga since (another instance, an operator's tool, a write whose outcome was unknown);
* an event it would ignore, or a check it would fail, saves nothing that could fail, so
  the runner decides again on the stored state before it drops or refuses the event.

Either way the runner forgets the entry and loads.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from engine.state import SagaState

DEFAULT_CAPACITY = 10_000


class RecentStates:
    """Least-recently-used states by saga id, at most ``capacity`` of them (0: none)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._states: OrderedDict[str, SagaState[Any]] = OrderedDict()

    def get(self, saga_id: str) -> SagaState[Any] | None:
        """The state last remembered for the saga, or None."""
        state = self._states.get(saga_id)
        if state is not None:
            self._states.move_to_end(saga_id)
        return state

    def remember(self, state: SagaState[Any]) -> None:
        """Keep a state just written. A finished saga expects no more events worth a
        shortcut (a late reply loads it), so it makes room instead."""
        if state.finished or self._capacity == 0:
            self._states.pop(state.saga_id, None)
            return
        self._states[state.saga_id] = state
        self._states.move_to_end(state.saga_id)
        while len(self._states) > self._capacity:
            self._states.popitem(last=False)

    def forget(self, saga_id: str) -> None:
        """Drop the entry: the store is the truth again."""
        self._states.pop(saga_id, None)

    def __len__(self) -> int:
        return len(self._states)
