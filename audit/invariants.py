"""Cross-store invariants: stock and money are conserved, and every store agrees.

Reads the orchestrator's sagas and every service's documents (and, given a broker, the
dead-letter queues) and reports each violated invariant with the orders involved. Sagas
in ``needs_attention`` are listed separately: they are visible, counted problems, not
silent corruption, and they are not judged by the per-order invariants. Sagas still in
flight are not judged at all.

The checks are pure functions of a Snapshot; ``audit`` loads one and checks it. A live
system changes between the reads of two collections, so whatever a first pass finds is
confirmed by a second, fresh load: only violations found by both are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from audit import dedup, dlq, held_locks, ledger, outcomes, transfers
from audit.snapshot import Snapshot, Violation, load, scope
from client.dlq import DeadLetterReader
from contracts.topology import Topology
from infra.transport import Transport
from orchestrator.store import SagaStore
from workers.store import DocumentStore

__all__ = ["INVARIANTS", "Report", "Snapshot", "Violation", "audit", "check", "load"]

# Every invariant, in report order, with what it means.
INVARIANTS: Mapping[str, str] = {
    **ledger.DESCRIPTIONS, **outcomes.DESCRIPTIONS, **dedup.DESCRIPTIONS,
    **transfers.DESCRIPTIONS, **held_locks.DESCRIPTIONS, **dlq.DESCRIPTIONS}

# How long past its deadline (or its own timer) an unfinished saga may go before it counts
# as stuck: the orchestrator fires timers every SAGA_TICK_INTERVAL (0.2 s by default).
DEFAULT_GRACE = 60.0


@dataclass(slots=True)
class Report:
    """Violations found, and the sagas that need an operator."""

    violations: list[Violation] = field(default_factory=list)
    needs_attention: list[str] = field(default_factory=list)
    attention_reasons: dict[str, str] = field(default_factory=dict)
    checked_sagas: int = 0
    in_flight: list[str] = field(default_factory=list)
    dead_letters: int | None = None  # messages checked; None when the queues were not read
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no invariant is violated (sagas needing attention aside)."""
        return not self.violations

    def by_invariant(self) -> dict[str, list[Violation]]:
        """The violations grouped by invariant, in report order."""
        groups: dict[str, list[Violation]] = {name: [] for name in INVARIANTS}
        for v in self.violations:
            groups.setdefault(v.invariant, []).append(v)
        return {name: found for name, found in groups.items() if found}


def check(snapshot: Snapshot, now: float | None = None, grace: float = DEFAULT_GRACE) -> Report:
    """Run every invariant over a snapshot, as of ``now`` (default: when it was taken)."""
    view = scope(snapshot, snapshot.taken_at if now is None else now, grace)
    report = Report(checked_sagas=len(snapshot.sagas), in_flight=sorted(view.in_flight),
                    needs_attention=sorted(view.attention),
                    attention_reasons=dict(sorted(view.attention.items())))
    report.violations = [*ledger.check(snapshot), *outcomes.check(snapshot, view),
                         *dedup.check(snapshot, view), *transfers.check(snapshot, view),
                         *held_locks.check(snapshot), *dlq.check(snapshot)]
    if snapshot.dead_letters is not None:
        report.dead_letters = sum(len(q.messages) for q in snapshot.dead_letters)
        report.notes += [f"{q.name}: {q.unread}" for q in snapshot.dead_letters if q.unread]
    return report


async def audit(sagas: SagaStore, services: Mapping[str, DocumentStore],
                transport: Transport | DeadLetterReader | None = None,
                topology: Topology | None = None, *, now: float | None = None,
                grace: float = DEFAULT_GRACE) -> Report:
    """Load and check; with a transport (or a dead-letter reader), the dead-letter queues of
    ``topology`` too (read without losing anything, see ``audit.dlq``)."""
    snapshot = await load(sagas, services)
    if transport is not None:
        snapshot.dead_letters = await dlq.read_all(transport, topology or Topology(),
                                                   sagas.definitions)
    report = check(snapshot, now, grace)
    if not report.violations:
        return report
    again = replace(await load(sagas, services), dead_letters=snapshot.dead_letters)
    return confirmed(report, check(again, now, grace))


def confirmed(first: Report, second: Report) -> Report:
    """The second report, keeping only violations (by invariant, subject and, for ledgers,
    imbalance) that the first one found too: one found once was a torn read of a system in
    motion."""
    seen = {_key(v) for v in first.violations}
    second.violations = [v for v in second.violations if _key(v) in seen]
    return second


def _key(v: Violation) -> tuple[str, str, int | None]:
    return v.invariant, v.subject, v.imbalance
