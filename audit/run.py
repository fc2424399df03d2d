"""``sagactl audit``: check every invariant across the deployment's stores and dead letters.

Exit codes: 0 when every invariant holds and no saga needs attention; 1 when an
invariant is violated; 4 when the only problem is sagas needing attention (visible,
counted, an operator's job, but not corruption). An unreachable broker skips the
dead-letter queues with a note; an unreachable database is exit code 3 (``sagactl.cli``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TextIO

from audit.dlq import DEAD_LETTERS_EXPLAINED, DEAD_LETTERS_INVALID
from audit.invariants import DEFAULT_GRACE, INVARIANTS, Report, audit
from audit.snapshot import Violation
from client import connect
from client.dlq import RabbitDeadLetters
from contracts.topology import Topology
from infra.settings import CommonSettings, redact
from orchestrator.app import definitions
from orchestrator.settings import OrchestratorSettings

EXIT_OK, EXIT_VIOLATIONS, EXIT_ATTENTION = 0, 1, 4
QUEUE_INVARIANTS = (DEAD_LETTERS_EXPLAINED, DEAD_LETTERS_INVALID)
WIDTH = 44


@dataclass(frozen=True, slots=True)
class AuditOptions:
    """What ``sagactl audit`` does and prints."""

    queues: bool = True
    as_json: bool = False
    limit: int = 10  # violations listed per invariant in the text report
    grace: float = DEFAULT_GRACE


def exit_code(report: Report) -> int:
    """1 for any violation, else 4 for sagas needing attention, else 0."""
    if report.violations:
        return EXIT_VIOLATIONS
    return EXIT_ATTENTION if report.needs_attention else EXIT_OK


async def run(common: CommonSettings, opts: AuditOptions, out: TextIO) -> int:
    """Audit the deployment ``common`` points at; print the report; return the exit code."""
    stores = await connect.stores(common, definitions(OrchestratorSettings(common=common)))
    try:
        reader, note = await _dead_letter_reader(common) if opts.queues else (
            None, "dead-letter queues not checked (--no-queues)")
        try:
            report = await audit(stores.sagas, stores.services, reader,
                                 Topology(common.namespace), grace=opts.grace)
        finally:
            if reader is not None:
                await reader.close()
    finally:
        await stores.close()
    if note:
        report.notes.insert(0, note)
    out.write(as_json(report) if opts.as_json else as_text(report, opts.limit))
    return exit_code(report)


async def _dead_letter_reader(common: CommonSettings) -> tuple[RabbitDeadLetters | None, str]:
    url = common.amqp_url.get_secret_value()
    reader = RabbitDeadLetters(url)
    try:
        await reader.connect()
    except Exception as e:  # any failure to connect means the same: no queues to read
        return None, (f"dead-letter queues not checked: cannot reach RabbitMQ at {redact(url)} "
                      f"({type(e).__name__})")
    return reader, ""


def _status(report: Report, name: str, found: list[Violation]) -> str:
    if found:
        return f"FAILED ({len(found)})"
    return "not checked" if name in QUEUE_INVARIANTS and report.dead_letters is None else "ok"


def as_text(report: Report, limit: int) -> str:
    """A report for people: every invariant, then the violations of each (at most
    ``limit`` per invariant), the sagas needing attention and the verdict."""
    groups = report.by_invariant()
    queues = ("dead-letter queues not checked" if report.dead_letters is None
              else f"{report.dead_letters} dead letters checked")
    lines = [f"Audit of {report.checked_sagas} sagas ({len(report.in_flight)} in flight, "
             f"not judged); {queues}", "", f"{'Invariant':<{WIDTH}}Result"]
    lines += [f"{name:<{WIDTH}}{_status(report, name, groups.get(name, []))}" for name in INVARIANTS]
    for name, found in groups.items():
        lines += ["", f"{name}: {len(found)}"]
        lines += [f"  {_subject(v):<24} {v.detail}" for v in found[:limit]]
        if len(found) > limit:
            lines.append(f"  ... and {len(found) - limit} more (--json lists them all)")
    if report.needs_attention:
        lines += ["", f"Needs attention: {len(report.needs_attention)} saga(s)"]
        lines += [f"  {saga_id:<24} {report.attention_reasons.get(saga_id, '')}"
                  for saga_id in report.needs_attention[:limit]]
        if len(report.needs_attention) > limit:
            lines.append(f"  ... and {len(report.needs_attention) - limit} more")
    if report.notes:
        lines += ["", "Notes", *(f"  {note}" for note in report.notes)]
    lines += ["", _verdict(report)]
    return "\n".join(lines) + "\n"


def _subject(v: Violation) -> str:
    return v.subject if v.subject_kind == "order" else f"{v.subject} ({v.subject_kind})"


def _verdict(report: Report) -> str:
    code = exit_code(report)
    attention = f"{len(report.needs_attention)} saga(s) need attention"
    if code == EXIT_VIOLATIONS:
        extra = f"; {attention}" if report.needs_attention else ""
        return (f"FAILED: {len(report.violations)} violation(s) of "
                f"{len(report.by_invariant())} invariant(s){extra} (exit {code})")
    if code == EXIT_ATTENTION:
        return f"ATTENTION: every invariant holds, but {attention} (exit {code})"
    return "OK: every invariant holds"


def as_json(report: Report) -> str:
    """The whole report for programs, every violation included."""
    groups = report.by_invariant()
    body: dict[str, Any] = {
        "ok": report.ok,
        "exit_code": exit_code(report),
        "sagas": {"checked": report.checked_sagas, "in_flight": len(report.in_flight),
                  "needs_attention": len(report.needs_attention)},
        "dead_letters_checked": report.dead_letters,
        "invariants": [
            {"name": name, "description": description,
             "status": _status(report, name, groups.get(name, [])).split(" (")[0].lower(),
             "violations": [{"subject": v.subject, "subject_kind": v.subject_kind,
                             "detail": v.detail, "imbalance": v.imbalance}
                            for v in groups.get(name, [])]}
            for name, description in INVARIANTS.items()],
        "needs_attention": [{"order_id": saga_id, "reason": report.attention_reasons.get(saga_id)}
                            for saga_id in report.needs_attention],
        "notes": report.notes,
    }
    return json.dumps(body, indent=2) + "\n"
