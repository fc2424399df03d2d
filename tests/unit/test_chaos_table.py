"""The chaos run's verdict: violations, the drain, and whether most orders completed."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from audit.invariants import Report
from harness.chaos.plan import ChaosOptions
from harness.chaos.report import Findings, Outcomes, print_table


def _run(tmp_path: Path, outcomes: dict[str, int], business: int) -> tuple[int, str]:
    out = io.StringIO()
    findings = Findings(ChaosOptions(), "chaos-test", tmp_path,
                        Outcomes(Counter(outcomes), business), Counter(), set(), Report(), {},
                        set(), began=0.0, healed=1.0, drained=2.0)
    return print_table(findings, out), out.getvalue()


@pytest.mark.parametrize(("completed", "timed_out", "passes"), [(60, 30, True), (40, 50, False)])
def test_a_run_passes_only_if_most_orders_not_refused_by_business_complete(
        tmp_path: Path, completed: int, timed_out: int, passes: bool) -> None:
    """Business refusals are set aside; of the rest, at least half must complete."""
    code, text = _run(tmp_path, {"order completed": completed,
                                 "order rejected: TIMEOUT": timed_out,
                                 "order rejected: PAYMENT_DECLINED": 10}, business=10)
    assert f"{completed}/{completed + timed_out}" in text
    assert (code == 0) is passes
    assert text.rstrip().endswith("PASS: 0 violation(s)" if passes else "FAIL: 0 violation(s)")
