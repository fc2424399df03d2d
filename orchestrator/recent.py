"""The states this process saved last: a bounded cache that saves a load per event.

Most events of a saga reach the instance that handled its previous event, which already
holds the state it saved. Using it spares a database read (and its decoding) per event.
It is only ever a guess. A stale entry (another instance moved the saga on, or a write
whose outcome is unknown) is caught two ways: a save from it fails the version
compare-and-set, and an event it would ignore is decided again on the stored state, since
ignoring saves nothing that could fail. Either way the runner forgets the entry and loads.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from orchestrator.state import SagaState


class RecentStates:
    """Least-recently-used states by saga id, at most ``capacity`` of them."""

    def __init__(self, capacity: int = 10_000) -> None:
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
        """Keep a state just written; a finished saga needs no more events, so it is dropped."""
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
