"""After the faults: drain, count the outcomes, audit, read the dead letters, print the
table and give the verdict."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from audit.invariants import Report
from contracts.reasons import is_business
from contracts.topology import Plan, Topology, dead_letter_queue
from engine.state import SagaStatus
from harness.chaos.plan import MIN_COMPLETED_SHARE, ChaosOptions
from infra.consumer import BROKER_REASON_HEADER, REASON_HEADER
from infra.transport import Transport
from orchestrator.store import SagaStore

DeadLetters = dict[str, list[dict[str, object]]]


async def drain(store: SagaStore, saga_ids: set[str], timeout: float,
                progress: Callable[[int], None]) -> tuple[float | None, set[str]]:
    """Wait until every saga of the run finished and every outbox is empty; returns when
    that happened (None if it did not in ``timeout`` seconds) and the unfinished ones."""
    deadline = time.monotonic() + timeout
    missing = set(saga_ids)
    while time.monotonic() < deadline:
        try:
            records = await store.find(None, 1_000_000)
            outbox = await store.pending_outbox(float("inf"), 1)
        except Exception:  # a store that does not answer yet: the drain goes on
            await asyncio.sleep(1.0)
            continue
        missing = saga_ids - {r.state.saga_id for r in records if r.state.finished}
        progress(len(saga_ids) - len(missing))
        if not missing and not outbox:
            return time.monotonic(), set()
        await asyncio.sleep(1.0)
    return None, missing


@dataclass
class Outcomes:
    """How the run's sagas ended, counted from the store: every saga, however its
    announcement fared."""

    counts: Counter[str] = field(default_factory=Counter)
    business_rejections: int = 0

    @classmethod
    async def count(cls, store: SagaStore) -> Outcomes:
        """Count every saga in the store."""
        outcomes = cls()
        for r in await store.find(None, 1_000_000):
            state = r.state
            if state.status is SagaStatus.FAILED and state.failure is not None:
                code = state.failure.reason_code
                outcomes.counts[f"{state.definition} rejected: {code}"] += 1
                outcomes.business_rejections += is_business(code)
            else:
                outcomes.counts[f"{state.definition} {state.status.value.replace('_', ' ')}"] += 1
        return outcomes

    def completed_share(self) -> tuple[int, int]:
        """Completed sagas, and sagas not refused for a business reason."""
        total = sum(self.counts.values())
        done = sum(n for key, n in self.counts.items() if key.endswith(" completed"))
        return done, total - self.business_rejections


async def dead_letters(transport: Transport, topology: Topology, plan: Plan) -> DeadLetters:
    """Everything in the dead-letter queues (the run's namespace is deleted afterwards)."""
    found: DeadLetters = {}
    for queue in topology.consumer_queues(plan):
        messages: list[dict[str, object]] = []
        while (m := await transport.get(dead_letter_queue(queue))) is not None:
            messages.append({"poison": m.headers.get("x-chaos-poison"),
                             "reason": m.headers.get(REASON_HEADER)
                             or m.headers.get(BROKER_REASON_HEADER),
                             "type": m.type, "message_id": m.message_id})
        found[queue] = messages
    return found


def worker_faults(log_dir: Path) -> Counter[str]:
    """Faults the processes injected themselves, counted from their logs across restarts."""
    counts: Counter[str] = Counter()
    for path in log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"fault": ' in line:
                try:
                    counts[str(json.loads(line)["fault"])] += 1
                except (ValueError, KeyError):
                    continue
    return counts


@dataclass(frozen=True)
class Findings:
    """Everything the table reports."""

    opts: ChaosOptions
    namespace: str
    log_dir: Path
    outcomes: Outcomes
    faults: Counter[str]  # injected from outside; the processes' own are read from logs
    poison_sent: set[str]
    report: Report
    dead: DeadLetters
    missing: set[str]  # sagas that did not finish
    began: float
    healed: float
    drained: float | None
    # Lines about the processes, read from their logs only if the run failed.
    diagnosis: Callable[[], list[str]] = list


def print_table(f: Findings, out: TextIO) -> int:
    """The summary; returns the exit code (0 only with no violation, a full drain and
    most sagas not refused by business completed)."""
    out.write(f"\nChaos run: {f.opts.orders} orders and {f.opts.transfers} transfers over "
              f"{f.opts.duration:.0f}s, seed {f.opts.seed}, namespace {f.namespace}, logs in "
              f"{f.log_dir}\n")
    out.write(f"\n{'Sagas':<44}{'count':>7}\n")
    for key, n in sorted(f.outcomes.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        out.write(f"  {key:<42}{n:>7}\n")
    out.write(f"\n{'Faults injected':<44}{'count':>7}\n")
    for key, n in sorted((f.faults + worker_faults(f.log_dir)).items()):
        out.write(f"  {key:<42}{n:>7}\n")
    # At-least-once: a consumer killed between its dead-letter copy and its ack copies the
    # message again, so the dead-letter queues are compared by message id.
    poison_dead = {str(m["message_id"]) for msgs in f.dead.values() for m in msgs if m["poison"]}
    lost_poison = f.poison_sent - poison_dead
    valid_dead = [m for msgs in f.dead.values() for m in msgs if not m["poison"]]
    unexplained = [m for msgs in f.dead.values() for m in msgs if not m["reason"]]
    violations = (len(f.report.violations) + len(valid_dead) + len(unexplained)
                  + len(f.missing) + len(lost_poison))
    out.write(f"\n{'Checks':<44}{'result':>7}\n")
    out.write(f"  {'invariant violations (audit)':<42}{len(f.report.violations):>7}\n")
    out.write(f"  {'orders without a finished saga':<42}{len(f.missing):>7}\n")
    out.write(f"  {'poison messages sent':<42}{len(f.poison_sent):>7}\n")
    out.write(f"  {'poison messages not in a dead-letter queue':<42}{len(lost_poison):>7}\n")
    out.write(f"  {'valid messages dead-lettered':<42}{len(valid_dead):>7}\n")
    out.write(f"  {'dead letters without a reason':<42}{len(unexplained):>7}\n")
    out.write(f"  {'sagas needing attention (visible, counted)':<42}"
              f"{len(f.report.needs_attention):>7}\n")
    completed, eligible = f.outcomes.completed_share()
    share = completed / eligible if eligible else 1.0
    out.write(f"  {'completed (of those not refused by business)':<44}"
              f"{f'{completed}/{eligible} ({share:.0%})':>16}\n")
    drain_time = "did not drain" if f.drained is None else f"{f.drained - f.healed:.1f}s"
    out.write(f"  {'time to drain after the last fault':<42}{drain_time:>7}\n")
    out.write(f"  {'total run time':<42}{time.monotonic() - f.began:>6.0f}s\n")
    for v in f.report.violations[:20]:
        out.write(f"    {v.invariant}: {v.subject}: {v.detail}\n")
    for m in valid_dead[:10]:
        out.write(f"    valid message dead-lettered: {m}\n")
    enough = share >= MIN_COMPLETED_SHARE
    if not enough:
        out.write(f"    fewer than {MIN_COMPLETED_SHARE:.0%} of the orders not refused by "
                  f"business completed: the run mostly tested failure paths\n")
    ok = violations == 0 and f.drained is not None and enough
    if not ok and (diagnosis := f.diagnosis()):
        out.write("\n" + "\n".join(diagnosis) + "\n")
    out.write(f"\n{'PASS' if ok else 'FAIL'}: {violations} violation(s)\n")
    return 0 if ok else 1
