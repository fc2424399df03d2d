"""The lines a failed chaos run prints about its processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness.chaos.diagnose import diagnose
from harness.processes import ManagedProcess


def _line(at: datetime, level: str, msg: str) -> str:
    return json.dumps({"ts": at.isoformat(timespec="milliseconds"), "level": level,
                       "logger": "orchestrator.timers", "msg": msg})


def test_a_dead_process_shows_its_most_repeated_recent_warnings(tmp_path: Path) -> None:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    log = tmp_path / "orchestrator.log"
    old = [_line(end - timedelta(seconds=200), "warning", "long ago")]
    recent = ([_line(end - timedelta(seconds=i), "warning", "timer failed") for i in range(5)]
              + [_line(end - timedelta(seconds=1), "error", "store failed")]
              + [_line(end, "info", "still here")])
    log.write_text("\n".join(old + recent) + "\n")
    standin_log = tmp_path / "standin-order.log"
    standin_log.write_text("mongodb://127.0.0.1:1/\n"
                           f"{end.astimezone().strftime('%Y-%m-%dT%H:%M:%S')} standin: "
                           "aborted a transaction: idle for more than 10s\n")
    processes = {"orchestrator": ManagedProcess("orchestrator", [], {}, log, 1),
                 "standin-order": ManagedProcess("standin-order", [], {}, standin_log, 2)}

    lines = diagnose(processes, now=(end + timedelta(seconds=30)).timestamp())

    text = "\n".join(lines)
    assert "  orchestrator: dead, 0 start(s), last line 30s ago" in text
    assert "    5x warning orchestrator.timers: timer failed" in text
    assert "    1x error orchestrator.timers: store failed" in text
    assert "long ago" not in text
    assert "still here" not in text
    assert "  standin-order: dead, 0 start(s), last line 30s ago" in text
    assert "1x 20" in text
    assert "standin: aborted a transaction: idle" in text


def test_a_process_without_a_log_says_so(tmp_path: Path) -> None:
    process = ManagedProcess("shipping", [], {}, tmp_path / "shipping.log", 1)
    assert diagnose({"shipping": process})[1] == "  shipping: dead, 0 start(s), no log"
