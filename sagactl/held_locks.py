"""No semantic lock outlives its saga (workers.locks).

A prepare takes its keys and the step's confirm or cancel releases them, so once a saga has
ended every key it held is free again. A holder whose saga completed, failed or was
resolved (or is not in the store at all) holds a key nobody will ever release. A saga that
needs attention may still hold one: its failed cancel is the operator's to retry, and it is
listed with the sagas that need attention.
"""

from __future__ import annotations

from orchestrator.state import ACTIVE, SagaStatus
from sagactl.snapshot import Snapshot, Violation

LOCKS_RELEASED = "no lock outlives its saga"
DESCRIPTIONS = {LOCKS_RELEASED: "every key a participant holds belongs to a saga still running "
                                "(or needing attention)"}
MAY_HOLD = ACTIVE | {SagaStatus.NEEDS_ATTENTION}


def check(s: Snapshot) -> list[Violation]:
    """A violation per key held by a saga that has ended, or that does not exist."""
    out = []
    for service, locks in sorted(s.locks.items()):
        for lock in sorted(locks, key=lambda lk: lk.id):
            for holder in lock.holders:
                record = s.sagas.get(holder.saga_id)
                if record is None:
                    why = "no such saga"
                elif record.state.status not in MAY_HOLD:
                    why = f"its saga is {record.state.status.value}"
                else:
                    continue
                out.append(Violation(LOCKS_RELEASED, holder.saga_id,
                                     f"{service} lock {lock.id} still held by step "
                                     f"{holder.step}: {why}", "saga"))
    return out
