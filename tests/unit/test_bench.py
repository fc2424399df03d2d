"""The benchmark's own arithmetic: system names, medians, ratios and verdicts in the report.

The benchmark itself runs outside the suite (``python -m bench``); this checks that what
it prints follows from what it measured.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.measure import cpu_seconds, median, percentile
from bench.report import Context, details, table
from bench.run import Bench, Figures, Plan, Rss, Sizes
from bench.systems import Kind, System

SIZES = Sizes(warmup=1, latency_1=1, latency_64=1, saturation=1, saturation_inflight=1, rss=1)


def test_system_names_parse_and_reject_unknown_ones() -> None:
    assert System.parse("memory") == System(Kind.MEMORY)
    assert System.parse("baseline+uvloop").uvloop_launcher
    assert System.parse("memory+asyncio").env == {"SAGA_EVENT_LOOP": "asyncio"}
    assert System.parse("memory").env == {}  # the product's own default
    for bad in ("mongo", "memory+trio", ""):
        with pytest.raises(ValueError, match="unknown"):
            System.parse(bad)


def test_several_orchestrators_share_only_a_database() -> None:
    two = System.parse("standin*2")
    assert (two.kind, two.orchestrators, two.name) == (Kind.STANDIN, 2, "standin*2")
    assert two.label.endswith(", 2 orchestrators")
    assert System.parse("standin").orchestrators == 1
    for bad in ("memory*2", "baseline*2", "standin*0", "standin*x", "standin*9"):
        with pytest.raises(ValueError, match="only standin"):
            System.parse(bad)


def test_medians_and_percentiles() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == pytest.approx(99.0, abs=1.0)


def test_cpu_seconds_of_this_process_grow_with_work() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert cpu_seconds(os.getpid()) > before


def _plan(*systems: System) -> Plan:
    return Plan(systems=systems, sizes={k: SIZES for k in Kind}, runs=3, rss=True,
                amqp_url="amqp://x", log_dir=Path("."))


def test_every_system_runs_in_a_namespace_the_broker_accepts() -> None:
    """Queue and exchange names may hold letters, digits, '-', '_', '.' and ':' only."""
    bench = Bench(_plan(), print)
    for name in ("standin*2", "memory+uvloop", "baseline"):
        namespace = bench._namespace(System.parse(name), 1)
        assert re.fullmatch(r"[A-Za-z0-9._:-]+", namespace), namespace


def test_report_uses_medians_and_states_each_target() -> None:
    base, product = System(Kind.BASELINE), System(Kind.MEMORY)
    figures = {
        base: [Figures(rate=r, cpu_per_saga=0.010) for r in (80.0, 100.0, 150.0)],
        product: [Figures(rate=r, cpu_per_saga=0.020) for r in (40.0, 70.0, 50.0)],
    }
    rss = {product: Rss(inflight=10_000, rss=150 * 2**20, reached_after=3.0)}
    context = Context("python -m bench", 2, datetime(2026, 12, 1, tzinfo=UTC), 0.0)
    text = details(_plan(base, product), figures, rss, context)
    assert ("Throughput ratio product, in-memory stores, asyncio / baseline (raw aio-pika, no "
            "state), asyncio: 0.50") in text
    assert "NOT met" in text  # 0.50 < 0.8 and a CPU ratio of 2.00 > 1.5
    assert "150 MB with 10000 sagas" in text
    assert "target < 200 MB at 10,000: met" in text
    rows = table(_plan(base, product), figures, rss).splitlines()
    assert len(rows) == 4  # header, rule, one row per system
    # The medians (100 and 50), not the means or the first run.
    assert rows[2].split("|")[2].strip() == "100"
    assert rows[3].split("|")[2].strip() == "50"


def test_each_product_run_is_compared_with_the_baseline_on_its_own_loop() -> None:
    """uvloop against uvloop, asyncio against asyncio, when both baselines ran."""
    base, base_uv = System(Kind.BASELINE), System.parse("baseline+uvloop")
    product, product_uv = System.parse("memory+asyncio"), System.parse("memory+uvloop")
    figures = {base: [Figures(rate=100.0, cpu_per_saga=0.010)],
               base_uv: [Figures(rate=200.0, cpu_per_saga=0.005)],
               product_uv: [Figures(rate=100.0, cpu_per_saga=0.010)],
               product: [Figures(rate=40.0, cpu_per_saga=0.020)]}
    context = Context("python -m bench", 2, datetime(2026, 12, 1, tzinfo=UTC), 0.0)
    text = details(_plan(base, base_uv, product_uv, product), figures, {}, context)
    assert ("ratio product, in-memory stores, uvloop / baseline (raw aio-pika, no state), "
            "uvloop: 0.50") in text
    assert ("ratio product, in-memory stores, asyncio / baseline (raw aio-pika, no state), "
            "asyncio: 0.40") in text
