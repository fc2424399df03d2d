"""The lock decisions, for any holders: exclusive means alone, shared means among shared,
a saga never blocks itself, and taking then releasing leaves the holders as they were."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.locks import (
    MAX_KEYS,
    Holder,
    InvalidLockRequest,
    LockMode,
    canonical,
    conflict,
    with_holder,
    without,
)

sagas = st.sampled_from(["s:a", "s:b", "s:c"])
steps = st.sampled_from(["one", "two"])
modes = st.sampled_from(list(LockMode))
holder = st.builds(Holder, saga_id=sagas, step=steps, mode=modes, since=st.just(0.0))


def unique(holders: list[Holder]) -> tuple[Holder, ...]:
    """Holders as take() builds them: one per (saga, step)."""
    out: tuple[Holder, ...] = ()
    for h in holders:
        out = with_holder(out, h)
    return out


@given(st.lists(holder, max_size=6), sagas, modes)
def test_a_conflict_is_another_saga_holding_in_a_clashing_mode(
        holders: list[Holder], saga: str, mode: LockMode) -> None:
    found = conflict(holders, saga, mode)
    others = [h for h in holders if h.saga_id != saga]
    clashing = [h for h in others
                if mode is LockMode.EXCLUSIVE or h.mode is LockMode.EXCLUSIVE]
    assert found == (clashing[0] if clashing else None)


@given(st.lists(holder, max_size=6), holder)
def test_taking_then_releasing_restores_the_holders(holders: list[Holder],
                                                   new: Holder) -> None:
    before = tuple(h for h in unique(holders) if (h.saga_id, h.step) != (new.saga_id, new.step))
    taken = with_holder(before, new)
    assert new in taken
    assert with_holder(taken, new) == taken  # taking twice changes nothing
    assert without(taken, new.saga_id, new.step) == before


@given(st.lists(st.text(alphabet="abcxyz", min_size=1, max_size=3), min_size=1, max_size=20))
def test_keys_are_taken_once_each_in_one_order(keys: list[str]) -> None:
    assert canonical(keys) == sorted(set(keys))
    assert canonical(list(reversed(keys))) == canonical(keys)


@pytest.mark.parametrize(("keys", "why"), [
    ([], "at least one key"),
    (["a", ""], "non-empty string"),
    ([f"k{i}" for i in range(MAX_KEYS + 1)], f"at most {MAX_KEYS}"),
])
def test_a_bad_lock_request_says_why(keys: list[str], why: str) -> None:
    with pytest.raises(InvalidLockRequest, match=why):
        canonical(keys)
