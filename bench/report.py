"""The table: medians over the runs, the throughput ratios, and the targets."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.measure import median
from bench.run import COMMANDS_PER_SAGA, MESSAGES_PER_SAGA, Figures, Plan, Rss
from bench.systems import Kind, System

Results = dict[System, list[Figures]]


@dataclass(frozen=True, slots=True)
class Context:
    """Where and how the figures were taken."""

    command: str
    cores: int
    started: datetime
    background_per_second: float


def _m(runs: list[Figures], pick: Callable[[Figures], float]) -> float:
    return median([pick(f) for f in runs])


def _num(value: float, fmt: str = ".0f") -> str:
    return "n/a" if math.isnan(value) else format(value, fmt)


def _ms(value: float) -> str:
    return _num(value * 1000, ".1f")


def _row(system: System, runs: list[Figures], rss: Rss | None) -> list[str]:
    db = _m(runs, lambda f: f.db_per_saga)
    return [
        system.label,
        _num(_m(runs, lambda f: f.rate)),
        f"{_ms(_m(runs, lambda f: f.p50_1))} / {_ms(_m(runs, lambda f: f.p99_1))}",
        f"{_ms(_m(runs, lambda f: f.p50_64))} / {_ms(_m(runs, lambda f: f.p99_64))}",
        _ms(_m(runs, lambda f: f.cpu_per_saga)),
        _ms(_m(runs, lambda f: f.broker_cpu_per_saga)),
        f"{_num(_m(runs, lambda f: f.published_per_saga), '.1f')} / "
        f"{_num(_m(runs, lambda f: f.delivered_per_saga), '.1f')}",
        "n/a" if math.isnan(db) else f"{db:.1f} ({db / COMMANDS_PER_SAGA:.2f})",
        "n/a" if rss is None else f"{rss.rss / 2**20:.0f} MB @ {rss.inflight}",
    ]


HEADERS = ["system", "sagas/s saturated", "p50 / p99 ms @1", "p50 / p99 ms @64",
           "CPU ms/saga (ours)", "RabbitMQ CPU ms/saga", "broker msgs/saga (pub / deliv)",
           "DB cmds/saga (per step)", "orchestrator RSS @ in flight"]


def table(plan: Plan, figures: Results, rss: dict[System, Rss]) -> str:
    """A Markdown table, one row per system."""
    rows = [_row(s, figures[s], rss.get(s)) for s in plan.systems]
    widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in [HEADERS, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def details(plan: Plan, figures: Results, rss: dict[System, Rss], context: Context) -> str:
    """Everything beside the table: context, sizes, ratios, targets, database commands."""
    out = [f"Date {context.started:%Y-%m-%d %H:%M} UTC, {context.cores} cores, "
           f"{plan.runs} run(s) per system, figures are medians; command: {context.command}",
           f"Expected broker messages per saga: {MESSAGES_PER_SAGA} (1 request, "
           f"{COMMANDS_PER_SAGA} commands, {COMMANDS_PER_SAGA} replies, 1 outcome); broker "
           f"traffic while the benchmark was idle: {_num(context.background_per_second, '.1f')} "
           "msgs/s (counted in the msgs/saga column)", ""]
    for system in plan.systems:
        out += _sizes(plan, system, figures[system])
    out.append("")
    out += _ratios(plan, figures, rss)
    out += _db(plan, figures)
    return "\n".join(out)


def _sizes(plan: Plan, system: System, runs: list[Figures]) -> list[str]:
    s = plan.sizes[system.kind]
    roles = sorted({r for f in runs for r in f.cpu_by_process})
    cpu = ", ".join(f"{r} {_ms(median([f.cpu_by_process.get(r, math.nan) for f in runs]))}"
                    for r in roles)
    return [f"{system.label}: per run {s.warmup} warm-up, {s.latency_1} @1, {s.latency_64} @64, "
            f"{s.saturation} @{s.saturation_inflight} (saturation); failed "
            f"{sum(f.failed for f in runs)}, lost {sum(f.lost for f in runs)}; sagas/s per run "
            + ", ".join(_num(f.rate) for f in runs),
            f"  CPU ms/saga by process at saturation: {cpu}"]


def _baseline(figures: Results, system: System) -> tuple[System, list[Figures]] | None:
    """The baseline to compare ``system`` with: the one on the same event loop if it ran,
    else the plain one."""
    same = System(Kind.BASELINE, system.event_loop if system.event_loop == "uvloop" else "")
    for candidate in (same, System(Kind.BASELINE)):
        if candidate in figures:
            return candidate, figures[candidate]
    return None


def _ratios(plan: Plan, figures: Results, rss: dict[System, Rss]) -> list[str]:
    lines = []
    for system in plan.systems:
        found = _baseline(figures, system)
        if found is None or system.kind is not Kind.MEMORY:
            continue
        against, base = found
        runs = figures[system]
        ratio = _m(runs, lambda f: f.rate) / _m(base, lambda f: f.rate)
        per_run = [m.rate / b.rate for m, b in zip(runs, base, strict=False) if b.rate]
        cpu = _m(runs, lambda f: f.cpu_per_saga) / _m(base, lambda f: f.cpu_per_saga)
        lines += [f"Throughput ratio {system.label} / {against.label}: {ratio:.2f} (per run: "
                  f"{', '.join(f'{r:.2f}' for r in per_run)}); target >= 0.8 (aim >= 1.0): "
                  f"{'met' if ratio >= 0.8 else 'NOT met'}",
                  f"CPU per saga ratio {system.label} / {against.label}: {cpu:.2f}; target "
                  f"<= 1.5: {'met' if cpu <= 1.5 else 'NOT met'}"]
    for system, r in rss.items():
        verdict = ""
        if system.kind is not Kind.BASELINE:
            verdict = f"; target < 200 MB at 10,000: {'met' if r.rss < 200 * 2**20 else 'NOT met'}"
            if r.inflight < 10_000:
                verdict = "; fewer than 10,000 in flight, so the target is not tested here"
        lines.append(f"Orchestrator RSS, {system.label}: {r.rss / 2**20:.0f} MB with {r.inflight} "
                     f"sagas started and waiting (all started {r.reached_after:.0f}s after the "
                     f"first submit){verdict}")
    return lines


def _db(plan: Plan, figures: Results) -> list[str]:
    out = []
    for system in plan.systems:
        if system.kind is not Kind.STANDIN:
            continue
        runs = figures[system]
        total = _m(runs, lambda f: f.db_per_saga)
        orch = _m(runs, lambda f: f.db_orchestrator_per_saga)
        by: Counter[str] = Counter()
        for f in runs:
            by.update(f.db_by_command)
        parts = ", ".join(f"{k} {v / len(runs):.2f}" for k, v in by.most_common())
        per_step = total / COMMANDS_PER_SAGA
        out += [f"Database commands per saga, {system.label}: {_num(total, '.1f')} = "
                f"{_num(per_step, '.2f')} per step ({COMMANDS_PER_SAGA} commands sent per saga); "
                f"orchestrator {_num(orch, '.1f')}, workers {_num(total - orch, '.1f')}; "
                f"target <= 4 per step: {'met' if per_step <= 4 else 'NOT met'}",
                f"  by command, per saga (mean of runs): {parts}",
                f"  saga version conflicts per 1,000 sagas: "
                f"{_num(_m(runs, lambda f: f.conflicts_per_1000), '.1f')}",
                f"  the stand-in servers' own CPU, not in the table: "
                f"{_ms(_m(runs, lambda f: f.standin_cpu_per_saga))} ms/saga"]
    return out


def now() -> datetime:
    """The time the report is dated with."""
    return datetime.now(UTC)
