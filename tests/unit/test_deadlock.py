"""Cycle detection on random wait-for graphs: every deadlock is found, none is invented,
the victims break every cycle, and the choice is deterministic and spares the oldest."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.deadlock import Wait, deadlocked, graph, victims, youngest

SAGAS = [f"s{i}" for i in range(8)]


@st.composite
def waits(draw: st.DrawFn) -> list[Wait]:
    """Up to eight sagas, each waiting (or not) for a random set of others."""
    found = []
    for saga in SAGAS:
        holders = draw(st.frozensets(st.sampled_from(SAGAS), max_size=3))
        if holders:
            found.append(Wait(saga, holders, f"k-{saga}", draw(st.sampled_from([1.0, 2.0, 3.0,
                                                                                 4.0]))))
    return found


def reachable(edges: dict[str, frozenset[str]], start: str) -> set[str]:
    """Every saga ``start`` waits for, directly or not (brute force)."""
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        saga = todo.pop()
        if saga not in seen:
            seen.add(saga)
            todo += edges.get(saga, ())
    return seen


def on_a_cycle(edges: dict[str, frozenset[str]]) -> set[str]:
    return {saga for saga in edges if saga in reachable(edges, saga)}


@given(waits())
def test_the_groups_are_exactly_the_sagas_on_cycles(found: list[Wait]) -> None:
    edges = graph(found)
    cyclic = on_a_cycle(edges)
    groups = deadlocked(edges)
    assert set().union(*groups) == cyclic
    for group in groups:  # a group is sagas that all reach each other
        for saga in group:
            assert group - {saga} <= reachable(edges, saga)


@given(waits())
def test_the_victims_break_every_cycle_and_only_cycles(found: list[Wait]) -> None:
    edges = graph(found)
    chosen = victims(found)
    assert set(chosen) <= on_a_cycle(edges)
    assert (chosen == []) == (not on_a_cycle(edges))
    left = {saga: holders - set(chosen) for saga, holders in edges.items()
            if saga not in chosen}
    assert on_a_cycle(left) == set()


@given(waits(), st.randoms(use_true_random=False))
def test_the_choice_does_not_depend_on_the_order_of_the_waits(found: list[Wait],
                                                              rng: random.Random) -> None:
    shuffled = list(found)
    rng.shuffle(shuffled)
    assert victims(shuffled) == victims(found)


@given(waits())
def test_the_oldest_saga_of_a_deadlocked_group_is_never_aborted(found: list[Wait]) -> None:
    started = {w.saga_id: w.started_at for w in found}
    chosen = set(victims(found))
    for group in deadlocked(graph(found)):
        oldest = min(group, key=lambda saga: (started[saga], saga))
        assert oldest not in chosen


def test_two_transfers_in_opposite_directions() -> None:
    """t-1 holds account a and waits for b; t-2 holds b and waits for a: t-2, the younger,
    gives way."""
    found = [Wait("transfer:t-1", frozenset({"transfer:t-2"}), "account:b", 10.0),
             Wait("transfer:t-2", frozenset({"transfer:t-1"}), "account:a", 11.0)]
    assert deadlocked(graph(found)) == [frozenset({"transfer:t-1", "transfer:t-2"})]
    assert victims(found) == ["transfer:t-2"]


def test_a_chain_without_a_cycle_aborts_nobody() -> None:
    chain = [Wait(f"s{i}", frozenset({f"s{i + 1}"}), "k", float(i)) for i in range(5000)]
    assert victims(chain) == []  # long chains do not hit the recursion limit


def test_equal_ages_are_broken_by_the_saga_id() -> None:
    assert youngest(["b", "a", "c"], {"a": 1.0, "b": 1.0, "c": 1.0}) == "c"
