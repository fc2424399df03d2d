"""What each process was doing when a chaos run failed, printed under its table.

A run that fails in CI leaves its logs on a machine nobody can look at afterwards: the
table says what went wrong, and this says where to look. For each process and stand-in:
whether it is alive, how often it started, how long ago it last wrote a line, and the
warnings it repeated most in the last minute of its log.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from harness.processes import ManagedProcess

RECENT = 60.0  # seconds of each log's tail whose warnings are counted
TOP = 3  # warnings shown per process
WIDTH = 150  # characters of a message shown


def _when(line: str) -> float | None:
    """The wall-clock time of a log line: a JSON line's ``ts``, or a stand-in line's prefix."""
    try:
        stamp = str(json.loads(line)["ts"])
    except (ValueError, KeyError, TypeError):
        stamp = line[:19]
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def _warning(line: str) -> str | None:
    """``level logger: message`` of a warning or worse, else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.strip()[:WIDTH] if "standin:" in line else None
    if not isinstance(record, dict) or record.get("level") in ("info", "debug", None):
        return None
    return f"{record['level']} {record.get('logger', '?')}: {record.get('msg', '')}"[:WIDTH]


def tail(path: Path, now: float) -> list[str]:
    """Lines about one log: its last line's age, then its most repeated recent warnings."""
    if not path.exists():
        return ["no log"]
    lines = path.read_text(errors="replace").splitlines()
    stamps = [t for t in map(_when, lines[-50:]) if t is not None]
    out = [f"last line {now - stamps[-1]:.0f}s ago" if stamps else "no timestamped line"]
    if not stamps:
        return out
    recent: Counter[str] = Counter()
    for line in reversed(lines):
        when = _when(line)
        if when is not None and when < stamps[-1] - RECENT:
            break
        if (warning := _warning(line)) is not None:
            recent[warning] += 1
    out += [f"{n}x {warning}" for warning, n in recent.most_common(TOP)]
    return out


def diagnose(processes: Mapping[str, ManagedProcess], now: float | None = None) -> list[str]:
    """A few lines per process (workers, orchestrators and stand-ins alike), as of ``now``
    (the wall clock unless given)."""
    now = time.time() if now is None else now
    lines = [f"Processes at the end (warnings of each log's last {RECENT:.0f}s)"]
    for name, process in sorted(processes.items()):
        state = "alive" if process.alive else "dead"
        first, *rest = tail(process.log_path, now)
        lines.append(f"  {name}: {state}, {process.starts} start(s), {first}")
        lines += [f"    {line}" for line in rest]
    return lines
