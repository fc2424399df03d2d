"""No semantic lock outlives its saga (workers.locks).

A prepare takes its keys and the step's confirm or cancel releases them, so once a saga has
ended every key it held is free again. A holder whose saga completed, failed or was
resolved (or is not in the store at all) holds a key nobody will ever release. A saga that
needs attention may still hold one: its failed cancel is the operator's to retry, and it is
listed with the sagas that need attention.

The same holds for a prepare parked to wait for a key (policy ``wait``): its saga's cancel
or its own run ends the wait, so a waiter whose saga has ended is a phantom that would run
a prepare nobody asked for any more.
"""

from __future__ import annotations

from audit.snapshot import Snapshot, Violation
from contracts.commands import round_of, saga_of
from engine.state import ACTIVE, SagaStatus

LOCKS_RELEASED = "no lock outlives its saga"
NO_PHANTOM_WAITS = "no lock wait outlives its saga"
DESCRIPTIONS = {LOCKS_RELEASED: "every key a participant holds belongs to a saga still running "
                                "(or needing attention)",
                NO_PHANTOM_WAITS: "every parked prepare belongs to a saga still running "
                                  "(or needing attention)"}
MAY_HOLD = ACTIVE | {SagaStatus.NEEDS_ATTENTION}


def check(s: Snapshot) -> list[Violation]:
    """A violation per key held, or waited for, by a saga that has ended or does not exist."""
    out = []
    for service, locks in sorted(s.locks.items()):
        for lock in sorted(locks, key=lambda lk: lk.id):
            for holder in lock.holders:
                if (why := _ended(s, holder.saga_id)) is not None:
                    out.append(Violation(LOCKS_RELEASED, saga_of(holder.saga_id),
                                         f"{service} lock {lock.id} still held by step "
                                         f"{holder.step}: {why}", "saga"))
    for service, waiters in sorted(s.waiters.items()):
        for waiter in sorted(waiters, key=lambda w: w.id):
            if waiter.answered:
                continue  # no longer waiting: its answer is on its way
            run = waiter.id.rsplit(":", 1)[0]
            if (why := _ended(s, run)) is not None:
                out.append(Violation(NO_PHANTOM_WAITS, saga_of(run),
                                     f"{service} still parks {waiter.id} waiting for "
                                     f"{waiter.lock}: {why}", "saga"))
    return out


def _ended(s: Snapshot, run: str) -> str | None:
    """Why a saga (in the round that ``run`` names, contracts.commands.run_id) may no longer
    hold or wait for anything, or None if it may."""
    record = s.sagas.get(saga_of(run))
    if record is None:
        return "no such saga"
    if record.state.status not in MAY_HOLD:
        return f"its saga is {record.state.status.value}"
    if round_of(run) != record.state.round:
        return f"its round {round_of(run)} was undone; the saga is in round {record.state.round}"
    return None
