"""Render a saga for people (a table) and for programs (JSON)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contracts.errors import SagaSystemError
from orchestrator.serde import Undecodable
from orchestrator.start import saga_id
from orchestrator.store import Quarantined, SagaRecord, SagaStore


def _time(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def as_json(record: SagaRecord) -> dict[str, Any]:
    """Everything ``sagactl status`` knows about one saga."""
    state = record.state
    failure = state.failure
    steps = sorted(state.ops.items(), key=lambda kv: (kv[1].started_at or 0.0, kv[0][0]))
    return {
        "saga_id": state.saga_id,
        "definition": state.definition,
        "definition_version": state.definition_version,
        "status": state.status.value,
        "created_at": _time(state.created_at),
        "updated_at": _time(state.updated_at),
        "deadline_at": _time(state.deadline_at),
        "failure": None if failure is None else {
            "reason_code": failure.reason_code, "reason": failure.reason,
            "step": failure.step},
        "attention": state.attention,
        "data": state.data.model_dump(mode="json"),
        "steps": [{
            "step": step, "operation": op.value, "status": o.status.value,
            "attempts": o.attempt, "message_id": o.message_id,
            "started_at": _time(o.started_at), "finished_at": _time(o.finished_at),
            "errors": [{"attempt": e.attempt, "code": e.code, "detail": e.detail,
                        "at": _time(e.at)} for e in o.errors],
        } for (step, op), o in steps],
        "history": [{
            "at": _time(e.at), "kind": e.kind, "step": e.step,
            "operation": None if e.op is None else e.op.value, "detail": e.detail, "by": e.by,
        } for e in state.history],
        "history_dropped": state.history_dropped,
        "outbox_pending": len(record.outbox),
        "version": state.version,
    }


def as_text(record: SagaRecord) -> str:
    """A human-readable status block."""
    j = as_json(record)
    lines = [f"saga {j['saga_id']}: {j['status']}   ({j['definition']} v{j['definition_version']})",
             f"  created {j['created_at']}   updated {j['updated_at']}   deadline {j['deadline_at']}"]
    if j["failure"]:
        f = j["failure"]
        lines.append(f"  failure: {f['reason_code']} at {f['step'] or '-'}: {f['reason']}")
    if j["attention"]:
        lines.append(f"  NEEDS ATTENTION: {j['attention']}")
    lines.append(f"  {'STEP':<20}{'OPERATION':<12}{'STATUS':<11}{'TRY':>4}  {'STARTED':<25}"
                 f"{'FINISHED':<25}LAST ERROR")
    for s in j["steps"]:
        last = s["errors"][-1] if s["errors"] else None
        error = f"{last['code']}: {last['detail']}" if last else ""
        lines.append(f"  {s['step']:<20}{s['operation']:<12}{s['status']:<11}{s['attempts']:>4}  "
                     f"{s['started_at'] or '-':<25}{s['finished_at'] or '-':<25}{error}")
    return "\n".join([*lines, *timeline(j)])


def timeline(j: dict[str, Any]) -> list[str]:
    """The history as one line per transition, oldest first."""
    lines = ["", "  history" + (f" ({j['history_dropped']} older entries dropped)"
                                if j["history_dropped"] else "")]
    for e in j["history"]:
        what = " ".join(filter(None, (e["step"], e["operation"])))
        by = f" by {e['by']}" if e["by"] else ""
        lines.append(f"  {e['at']}  {e['kind']:<14}{what:<30}{e['detail']}{by}".rstrip())
    return lines


def row(record: SagaRecord) -> str:
    """One line per saga, for ``sagactl list``."""
    state = record.state
    reason = state.failure.reason_code if state.failure else ""
    return (f"{state.saga_id:<40}{state.status.value:<16}{reason:<22}"
            f"{_time(state.created_at)}")


class NotFound(SagaSystemError, LookupError):
    """No saga (or more than one) answers to an id; the message says which."""


async def lookup(store: SagaStore, ident: str) -> SagaRecord:
    """A saga by its id (``order:o-1``), or by a business key alone (``o-1``) when exactly one
    definition has a saga with that key."""
    candidates = [ident] if ":" in ident else [saga_id(n, ident) for n in store.definitions.names()]
    found = []
    for candidate in candidates:
        try:
            record = await store.load(candidate)
        except Undecodable as e:
            raise NotFound(f"saga {candidate} cannot be decoded ({e.reason}): it is "
                           "quarantined; see sagactl list --state quarantined") from e
        if record is not None:
            found.append(record)
    if not found:
        raise NotFound(f"no saga with id {ident}")
    if len(found) > 1:
        raise NotFound(f"{ident} is the key of several sagas: "
                       f"{', '.join(r.state.saga_id for r in found)}; give one of those ids")
    return found[0]


def quarantined_row(q: Quarantined) -> str:
    """One line per quarantined saga."""
    return (f"{q.saga_id:<40}{'quarantined':<16}{q.reason:<22}{_time(q.at)}  "
            f"{q.definition} v{q.definition_version}: {q.detail}")


def quarantined_json(q: Quarantined) -> dict[str, object]:
    """A quarantined saga as JSON."""
    return {"saga_id": q.saga_id, "status": "quarantined", "definition": q.definition,
            "definition_version": q.definition_version, "reason": q.reason, "detail": q.detail,
            "quarantined_at": _time(q.at)}
