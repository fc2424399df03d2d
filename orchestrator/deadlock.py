"""Deadlocks between sagas: the wait-for graph, its cycles, and which saga gives way.

A saga waits for another when one of its steps waits for a key the other holds
(workers.locks). Each participant sees only its own keys, so the graph is the union of the
waits every participant reports. A cycle in it is a deadlock: no saga in it can move
until one of them is aborted (with reason ``DEADLOCK``) and compensates, which releases
what it holds.

The victim rule is *youngest first*: in each deadlocked group the saga that started last
gives way (ties broken by the greater saga id), so the result depends only on the waits,
never on the order they are read in or on which orchestrator instance decides. The oldest
saga of a group is never chosen while it waits, so it always makes progress. A victim
that starts again (SagaDefinition.deadlock_retries) keeps its start time: newcomers are
younger, so it only moves up the line, and its definition bounds its new rounds, so
repeated aborts cannot livelock. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Wait:
    """One saga waiting: for which sagas (the holders of the key it wants), since when, and
    when the waiting saga itself started (the victim rule's age)."""

    saga_id: str
    holders: frozenset[str]
    key: str
    started_at: float


Graph = Mapping[str, frozenset[str]]


def graph(waits: Iterable[Wait]) -> dict[str, frozenset[str]]:
    """Saga -> the sagas it waits for (several waits of one saga are merged)."""
    out: dict[str, frozenset[str]] = {}
    for w in waits:
        out[w.saga_id] = out.get(w.saga_id, frozenset()) | (w.holders - {w.saga_id})
    return out


def deadlocked(edges: Graph) -> list[frozenset[str]]:
    """Every group of sagas that wait for each other in a cycle (the strongly connected
    components with more than one saga), in a stable order."""
    search = _Components(edges)
    for root in sorted(edges):
        if root not in search.index:
            search.visit(root)
    return sorted((g for g in search.groups if len(g) > 1), key=sorted)


class _Components:
    """Tarjan's strongly connected components, iterative: a long chain of waits must not
    hit the recursion limit."""

    def __init__(self, edges: Graph) -> None:
        self.edges = edges
        self.index: dict[str, int] = {}
        self.low: dict[str, int] = {}
        self.stack: list[str] = []
        self.on_stack: set[str] = set()
        self.groups: list[frozenset[str]] = []

    def _enter(self, node: str) -> tuple[str, list[str]]:
        self.index[node] = self.low[node] = len(self.index)
        self.stack.append(node)
        self.on_stack.add(node)
        return node, sorted(self.edges.get(node, ()))

    def visit(self, root: str) -> None:
        work = [self._enter(root)]
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop(0)
                if nxt not in self.index:
                    work.append(self._enter(nxt))
                elif nxt in self.on_stack:
                    self.low[node] = min(self.low[node], self.index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                self.low[parent] = min(self.low[parent], self.low[node])
            if self.low[node] == self.index[node]:
                self._close(node)

    def _close(self, node: str) -> None:
        group = set()
        while True:
            member = self.stack.pop()
            self.on_stack.discard(member)
            group.add(member)
            if member == node:
                break
        self.groups.append(frozenset(group))


def youngest(group: Iterable[str], started: Mapping[str, float]) -> str:
    """The saga of the group that gives way: the latest start, then the greatest id."""
    return max(group, key=lambda saga: (started.get(saga, float("inf")), saga))


def victims(waits: Iterable[Wait]) -> list[str]:
    """The sagas to abort so that no cycle is left, chosen one at a time: a group can hold
    several cycles, and aborting its youngest saga may leave one among the others."""
    found = list(waits)
    started = {w.saga_id: w.started_at for w in found}
    edges = graph(found)
    chosen: list[str] = []
    while groups := deadlocked(edges):
        for group in groups:
            victim = youngest(group, started)
            chosen.append(victim)
            edges = {saga: holders - {victim} for saga, holders in edges.items()
                     if saga != victim}
    return sorted(chosen)
