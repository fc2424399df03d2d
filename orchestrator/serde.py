"""Saga state to and from a JSON-compatible document, the same for every store adapter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contracts.commands import Operation, Outcome
from contracts.errors import SagaSystemError
from engine.definition import Failure
from engine.state import (
    AttemptError,
    HistoryEntry,
    OpState,
    OpStatus,
    SagaState,
    SagaStatus,
)
from orchestrator.registry import DefinitionRegistry, UnknownDefinition
from orchestrator.store import OutboxMessage, Quarantined, SagaRecord

Document = dict[str, Any]
# Present (true) only on a saga with a step waiting for a lock: a sparse index finds the
# few that are, for the wait-for graph (orchestrator.deadlock).
LOCK_WAITING = "lock_waiting"


def state_fields(state: SagaState[Any]) -> Document:
    """Every field of the state except the id and the version, as a document."""
    failure = state.failure
    return {
        "definition": state.definition,
        "definition_version": state.definition_version,
        "data": state.data.model_dump(mode="json"),
        "status": state.status.value,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "deadline_at": state.deadline_at,
        "cursor": state.cursor,
        "ops": [_op_document(step, op, o) for (step, op), o in state.ops.items()],
        "failure": None if failure is None else {
            "reason_code": str(failure.reason_code), "reason": failure.reason,
            "step": failure.step},
        "attention": state.attention,
        "trace_id": state.trace_id,
        "history": [_entry_document(e) for e in state.history],
        "history_dropped": state.history_dropped,
        "attention_announced": state.attention_announced,
        "round": state.round,
    }


def _entry_document(e: HistoryEntry) -> Document:
    return {"at": e.at, "kind": e.kind, "step": e.step, "op": None if e.op is None else e.op.value,
            "detail": e.detail, "by": e.by, "ref": e.ref}


def _entry(d: Document) -> HistoryEntry:
    return HistoryEntry(d["at"], d["kind"], d.get("step"),
                        None if d.get("op") is None else Operation(d["op"]),
                        d.get("detail", ""), d.get("by"), d.get("ref"))


def _op_document(step: str, op: Operation, o: OpState) -> Document:
    return {
        "step": step, "op": op.value, "status": o.status.value, "attempt": o.attempt,
        "message_id": o.message_id, "due_at": o.due_at, "started_at": o.started_at,
        "finished_at": o.finished_at, "outcome": None if o.outcome is None else o.outcome.value,
        "errors": [{"attempt": e.attempt, "code": e.code, "detail": e.detail, "at": e.at}
                   for e in o.errors],
        "detail": o.detail,
        "budget_from": o.budget_from,
        "waiting_on": list(o.waiting_on),
        "lock": o.lock,
    }


# Finished sagas that may be deleted once their retention has passed; one that needs
# attention waits for an operator, however long that takes.
EXPIRING = frozenset({SagaStatus.COMPLETED, SagaStatus.FAILED, SagaStatus.RESOLVED})
DAY = 86_400.0


def expires_at(state: SagaState[Any], retention: float) -> datetime | None:
    """When the store may delete the saga (a BSON date for MongoDB's TTL index), or None
    while it must stay: ``retention`` seconds after it finished."""
    if state.status not in EXPIRING:
        return None
    return datetime.fromtimestamp(state.updated_at + retention, UTC)


def outbox_document(m: OutboxMessage) -> Document:
    """An outbox entry as a document."""
    return {
        "message_id": m.message_id, "exchange": m.exchange, "routing_key": m.routing_key,
        "type": m.type, "body": m.body, "correlation_id": m.correlation_id,
        "causation_id": m.causation_id, "created_at": m.created_at,
        "traceparent": m.traceparent, "must_route": m.must_route,
    }


def to_document(state: SagaState[Any], outbox: tuple[OutboxMessage, ...] = ()) -> Document:
    """The full stored document of a saga."""
    doc = {"_id": state.saga_id, "version": state.version, **state_fields(state),
           "outbox": [outbox_document(m) for m in outbox]}
    wakeup = state.next_wakeup
    if wakeup is not None:
        doc["next_wakeup"] = wakeup
    if state.lock_waits:
        doc[LOCK_WAITING] = True
    return doc


class Undecodable(SagaSystemError):
    """A stored saga that cannot be rebuilt; ``reason`` is a bounded label."""

    def __init__(self, saga_id: str, reason: str, detail: str) -> None:
        super().__init__(f"saga {saga_id}: {reason}: {detail}")
        self.saga_id = saga_id
        self.reason = reason
        self.detail = detail[:500]


UNKNOWN_DEFINITION = "unknown_definition"
UNDECODABLE = "undecodable"
QUARANTINE_REASONS = (UNKNOWN_DEFINITION, UNDECODABLE)


def decode(doc: Document, registry: DefinitionRegistry) -> SagaRecord:
    """Rebuild a saga, or raise Undecodable with why."""
    saga_id = str(doc.get("_id"))
    try:
        return from_document(doc, registry)
    except UnknownDefinition as e:
        raise Undecodable(saga_id, UNKNOWN_DEFINITION, str(e)) from e
    except (KeyError, TypeError, ValueError) as e:  # pydantic's ValidationError included
        raise Undecodable(saga_id, UNDECODABLE, f"{type(e).__name__}: {e}") from e


def quarantine_fields(reason: str, detail: str, now: float) -> Document:
    """What a quarantined saga's document gets: its status, why, and no timer."""
    return {"status": SagaStatus.QUARANTINED.value,
            "quarantine": {"reason": reason, "detail": detail[:500], "at": now}}


def decodable(docs: list[Document], registry: DefinitionRegistry) -> list[SagaRecord]:
    """The documents that decode (a listing skips the others; the runner and the relay
    quarantine them when they meet them)."""
    records = []
    for doc in docs:
        try:
            records.append(decode(doc, registry))
        except Undecodable:
            continue
    return records


def quarantined_from(doc: Document) -> Quarantined:
    """A quarantined saga's listing entry."""
    why = doc.get("quarantine") or {}
    return Quarantined(str(doc["_id"]), str(doc.get("definition")),
                       int(doc.get("definition_version") or 0), str(why.get("reason")),
                       str(why.get("detail", "")), float(why.get("at") or 0.0))


def from_document(doc: Document, registry: DefinitionRegistry) -> SagaRecord:
    """Rebuild a saga from its document; its data model comes from its definition."""
    definition = registry.get(doc["definition"], doc["definition_version"])
    failure = doc.get("failure")
    state: SagaState[Any] = SagaState(
        saga_id=doc["_id"],
        definition=doc["definition"],
        definition_version=doc["definition_version"],
        data=definition.data_model.model_validate(doc["data"]),
        status=SagaStatus(doc["status"]),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        deadline_at=doc["deadline_at"],
        cursor=doc["cursor"],
        ops={(o["step"], Operation(o["op"])): _op_state(o) for o in doc["ops"]},
        failure=None if failure is None else Failure(
            failure["reason_code"], failure["reason"], failure["step"]),
        attention=doc.get("attention"),
        trace_id=doc.get("trace_id"),
        history=tuple(_entry(e) for e in doc.get("history", ())),
        history_dropped=doc.get("history_dropped", 0),
        # Documents written before the flag existed: a saga needing attention announced it.
        attention_announced=doc.get("attention_announced",
                                    doc["status"] == SagaStatus.NEEDS_ATTENTION.value),
        round=doc.get("round", 0),
        version=doc["version"],
    )
    outbox = tuple(OutboxMessage(**m) for m in doc.get("outbox", ()))
    return SagaRecord(state, outbox)


def _op_state(o: Document) -> OpState:
    return OpState(
        status=OpStatus(o["status"]), attempt=o["attempt"], message_id=o["message_id"],
        due_at=o["due_at"], started_at=o["started_at"], finished_at=o["finished_at"],
        outcome=None if o["outcome"] is None else Outcome(o["outcome"]),
        errors=tuple(AttemptError(e["attempt"], e["code"], e["detail"], e["at"])
                     for e in o["errors"]),
        detail=o.get("detail", ""),
        budget_from=o.get("budget_from", 0),
        waiting_on=tuple(o.get("waiting_on", ())),
        lock=o.get("lock"),
    )
