"""What the benchmark reads from the operating system and from the product's /metrics."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

from harness.processes import http_get

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def total_cpu(pids: Iterable[int]) -> float:
    """CPU seconds used so far by all of these processes."""
    return sum(cpu_seconds(pid) for pid in pids)


def broker_pid() -> int | None:
    """The local RabbitMQ node's Erlang VM, if it runs on this machine."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/comm") as f:
                    if f.read().strip() == "beam.smp":
                        return int(entry.name)
            except OSError:
                continue
    return None


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of a process."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median, NaN when there is nothing (a system that was not measured)."""
    clean = sorted(v for v in values if not math.isnan(v))
    if not clean:
        return math.nan
    mid = len(clean) // 2
    return clean[mid] if len(clean) % 2 else (clean[mid - 1] + clean[mid]) / 2


def samples(text: str, name: str) -> Counter[str]:
    """A counter's samples from Prometheus text, by their ``command`` label (or '')."""
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels.get("command", "")] += int(sample.value)
    return out


async def scrape(ports: Mapping[str, int], name: str) -> dict[str, Counter[str]]:
    """One counter from every process's /metrics, by process."""
    return {process: samples(await http_get(port, "/metrics"), name) for process, port in ports.items()}


def delta(after: Mapping[str, Counter[str]], before: Mapping[str, Counter[str]]) -> dict[str, Counter[str]]:
    """Per process, what a counter grew by (a restart would show as a negative value)."""
    return {p: Counter({k: v - before.get(p, Counter())[k] for k, v in after[p].items()})
            for p in after}
