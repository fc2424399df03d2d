"""No command was applied twice: the deduplication records agree with the effects.

Each participant writes, in the transaction that applies a command, the effect (a
reservation, a hold, an order record, ...) and the fence of the (saga, step), which keeps
the inbox record of that command with its reply. So for every step of every finished
order saga:

* the fence state and the effect's state are a pair the fence rules can produce;
* every effect state has the inbox record of the command that produced it, and every
  inbox record of a command that ran has its effect;
* each operation of a step ran at most once (later attempts are replays).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from audit.outcomes import HAS_SAGA
from audit.snapshot import Scope, Snapshot, Violation
from contracts.commands import Operation, Outcome, StepReply, saga_of
from sagas.order import APPROVED_NOTICE, REJECTED_NOTICE
from workers.fence import FenceState, fence_id

FENCES_MATCH = "fences match effects"
INBOX_MATCHES = "inbox matches effects"
APPLIED_ONCE = "no command applied twice"

DESCRIPTIONS = {
    FENCES_MATCH: "each step's fence state fits the state of the document the step wrote",
    INBOX_MATCHES: "each effect has the inbox record of the command that made it, and "
                   "each successful inbox record has its effect",
    APPLIED_ONCE: "each operation of each step ran once at most; later attempts were replays",
}

# How workers/runtime.py words a SUCCEEDED reply that did not run the handler: a replay
# ("already <fence state>") or an empty rollback. Every other SUCCEEDED reply ran it.
REPLAY_PREFIX = "already "
EMPTY_ROLLBACK = "nothing to undo"

F, C, X = Operation.FORWARD, Operation.CONFIRM, Operation.COMPENSATE  # X: undo
Effect = Callable[[Snapshot, str], str | None]


@dataclass(frozen=True, slots=True)
class StepRules:
    """What one step of the order saga writes, and which states the fence rules allow.

    ``effect`` reads the state of the step's document (None: there is none);
    ``fence`` maps a fence state to the effect states it may coexist with;
    ``after`` maps an operation that ran to the effect states that may follow it;
    ``needs`` maps an effect state to the operations that must have run to produce it.
    """

    service: str
    effect: Effect
    fence: Mapping[FenceState | None, frozenset[str | None]]
    after: Mapping[Operation, frozenset[str]]
    needs: Mapping[str, tuple[Operation, ...]]


def _two_phase(service: str, effect: Effect, done: str, undone: str) -> StepRules:
    return StepRules(
        service, effect,
        fence={FenceState.TRIED: frozenset({"held"}), FenceState.CONFIRMED: frozenset({done}),
               FenceState.COMPENSATED: frozenset({undone, None}),
               FenceState.REJECTED: frozenset({None}), None: frozenset({None})},
        after={F: frozenset({"held", done, undone}), C: frozenset({done}),
               X: frozenset({undone})},
        needs={"held": (F,), done: (F, C), undone: (F, X)})


def _one_shot(service: str, effect: Effect, done: str) -> StepRules:
    """A step with no confirm and no compensation: notifications, the approval."""
    return StepRules(service, effect,
                     fence={FenceState.TRIED: frozenset({done}), None: frozenset({None})},
                     after={F: frozenset({done})}, needs={done: (F,)})


def _notified(kind: str) -> Effect:
    return lambda s, order_id: "sent" if (order_id, kind) in s.notified else None


def _order_status(s: Snapshot, order_id: str) -> str | None:
    order = s.orders.get(order_id)
    return None if order is None else order.status


def _approved(s: Snapshot, order_id: str) -> str | None:
    return "APPROVED" if _order_status(s, order_id) == "APPROVED" else None


def _reservation(s: Snapshot, order_id: str) -> str | None:
    r = s.reservations.get(order_id)
    return None if r is None else r.state


def _hold(s: Snapshot, order_id: str) -> str | None:
    h = s.holds.get(order_id)
    return None if h is None else h.state


def _shipment(s: Snapshot, order_id: str) -> str | None:
    shipment = s.shipments.get(order_id)
    return None if shipment is None else shipment.status


def _booking(s: Snapshot, order_id: str) -> str | None:
    """A two-phase booking (version 2): TENTATIVE is its held state."""
    status = _shipment(s, order_id)
    return "held" if status == "TENTATIVE" else status


_SOME = frozenset({"PENDING", "APPROVED"})
# Step names as in sagas/order.py (a test keeps them in step), version 1.
ORDER_SAGA_V1_STEPS: Mapping[str, StepRules] = {
    "create_order": StepRules(
        "order", _order_status,
        fence={FenceState.TRIED: _SOME, FenceState.COMPENSATED: frozenset({"REJECTED", None}),
               FenceState.REJECTED: frozenset({None}), None: frozenset({None})},
        after={F: _SOME | {"REJECTED"}, X: frozenset({"REJECTED"})},
        needs={"PENDING": (F,), "APPROVED": (F,), "REJECTED": (F, X)}),
    "reserve_stock": _two_phase("inventory", _reservation, "committed", "released"),
    "hold_funds": _two_phase("payment", _hold, "captured", "released"),
    "schedule_shipment": StepRules(
        "shipping", _shipment,
        fence={FenceState.TRIED: frozenset({"SCHEDULED"}),
               FenceState.COMPENSATED: frozenset({"CANCELLED", None}),
               FenceState.REJECTED: frozenset({None}), None: frozenset({None})},
        after={F: frozenset({"SCHEDULED", "CANCELLED"}), X: frozenset({"CANCELLED"})},
        needs={"SCHEDULED": (F,), "CANCELLED": (F, X)}),
    "approve_order": _one_shot("order", _approved, "APPROVED"),
    "notify_customer": _one_shot("notification", _notified(APPROVED_NOTICE), "sent"),
    "notify_rejection": _one_shot("notification", _notified(REJECTED_NOTICE), "sent"),
}
# Version 2 books the shipment in two phases.
ORDER_SAGA_STEPS: Mapping[str, StepRules] = {
    **ORDER_SAGA_V1_STEPS,
    "schedule_shipment": _two_phase("shipping", _booking, "SCHEDULED", "CANCELLED"),
}
STEPS_BY_VERSION = {1: ORDER_SAGA_V1_STEPS, 2: ORDER_SAGA_STEPS}

RunKey = tuple[str, str, str, Operation]  # service, saga, step, operation


def check(s: Snapshot, scope: Scope) -> list[Violation]:
    """Fences and inbox records against effects, for every finished order saga."""
    inbox = _read_inbox(s)
    out = list(inbox.unreadable)
    for saga_id, saga in sorted(scope.finished.items()):
        steps = STEPS_BY_VERSION[saga.record.state.definition_version]
        for step, rules in steps.items():
            out += _step(s, saga_id, saga.order_id, step, rules, inbox.runs)
    return out + _orphans(s, inbox.sagas)


@dataclass(slots=True)
class _Inbox:
    """Every inbox record (in the fences), read once: how often each operation really ran
    (SUCCEEDED, and neither a replay nor an empty rollback), one record per saga, and what
    could not be read."""

    runs: Counter[RunKey] = field(default_factory=Counter)
    sagas: dict[str, str] = field(default_factory=dict)
    unreadable: list[Violation] = field(default_factory=list)


def _read_inbox(s: Snapshot) -> _Inbox:
    found = _Inbox()
    for service, fences in s.fences.items():
        for record in (run for fence in fences.values() for run in fence.runs):
            try:
                reply = StepReply.model_validate_json(record.reply)
            except ValidationError:
                found.unreadable.append(Violation(
                    INBOX_MATCHES, record.message_id,
                    f"{service} inbox record has an unreadable reply", "message"))
                continue
            found.sagas.setdefault(reply.saga_id, f"{service} inbox record {record.message_id}")
            if reply.outcome is Outcome.SUCCEEDED and _ran(reply.detail):
                found.runs[(service, reply.saga_id, reply.step, reply.operation)] += 1
    return found


def _ran(detail: str) -> bool:
    return not detail.startswith(REPLAY_PREFIX) and detail != EMPTY_ROLLBACK


def _step(s: Snapshot, saga_id: str, order_id: str, step: str, rules: StepRules,
          runs: Counter[RunKey]) -> list[Violation]:
    fence = s.fences.get(rules.service, {}).get(fence_id(saga_id, step))
    fenced = None if fence is None else fence.state
    effect = rules.effect(s, order_id)
    out = []
    if effect not in rules.fence.get(fenced, frozenset()):
        out.append(Violation(FENCES_MATCH, order_id,
                             f"{step}: fence {fenced or 'missing'}, but its effect is "
                             f"{effect or 'missing'}"))
    ran = {op: runs[(rules.service, saga_id, step, op)] for op in Operation}
    for op, times in ran.items():
        if times > 1:
            out.append(Violation(APPLIED_ONCE, order_id, f"{step} {op} applied {times} times"))
        if times and effect not in rules.after.get(op, frozenset()):
            out.append(Violation(INBOX_MATCHES, order_id,
                                 f"{step} {op} succeeded in the inbox, but its effect is "
                                 f"{effect or 'missing'}"))
    for op in rules.needs.get(effect or "", ()):
        if not ran[op]:
            out.append(Violation(INBOX_MATCHES, order_id,
                                 f"{step}: effect {effect} without a successful {op} "
                                 "in the inbox"))
    return out


def _orphans(s: Snapshot, inbox_sagas: Mapping[str, str]) -> list[Violation]:
    found: dict[str, str] = {}
    for service, fences in s.fences.items():
        for fid in fences:
            saga_id, _, step = fid.rpartition(":")
            found.setdefault(saga_id, f"{service} fence of {step}")
    for saga_id, what in inbox_sagas.items():
        found.setdefault(saga_id, what)
    # A retried round's records name its run id (contracts.commands.run_id).
    return [Violation(HAS_SAGA, saga_id, f"{what} without any saga")
            for saga_id, what in sorted(found.items()) if saga_of(saga_id) not in s.sagas]
