"""A real Prometheus scrapes the running system with the project's own configuration; every
dashboard query and every rule must then return data. Also: trace context end to end,
JSON logs that explain a saga, and the readiness probe."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog.deploy import RABBITMQ_PROMETHEUS_PORT
from client.orders import submit
from contracts.envelope import WireMessage
from contracts.orders import OrderItem, OrderRequested
from contracts.trace import trace_id_of
from harness.processes import ManagedProcess, free_port, http_ok, start_standin
from sagas.order import order_saga
from tests.e2e.conftest import Deploy
from tests.e2e.harness import Deployment
from tests.test_deploy import (
    DASHBOARD,
    NAME_IN_EXPR,
    PROMETHEUS,
    RULES,
    _annotation_exprs,
    _dashboard_exprs,
    as_sent,
)

# Scraped every second, so that rates over a minute (the dashboard's $__rate_interval, as
# the tests fill it in) have points within seconds.
SCRAPE = "1s"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
DATA_TIMEOUT = 60.0


def _prometheus_config(deployment: Deployment, tmp: Path) -> Path:
    """deploy/prometheus/prometheus.yml with each compose target replaced by the local port of
    the same process (jobs, labels and rules unchanged)."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    config["global"] |= {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE}
    config["rule_files"] = [str(RULES)]
    ports = {name: p.port for name, p in deployment.cluster.processes.items()}
    ports["rabbitmq"] = RABBITMQ_PROMETHEUS_PORT  # the local broker's rabbitmq_prometheus
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            host = group["targets"][0].split(":")[0]
            group["targets"] = [f"127.0.0.1:{ports[host]}"]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[tuple[ManagedProcess, Path]]:
    """A Prometheus server (Debian's package); started by the test once targets exist."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not on PATH: install Debian's prometheus package")
    port = free_port()
    process = ManagedProcess("prometheus", [binary], {}, tmp_path / "logs" / "prometheus.log",
                             port, ready_path="/-/ready")
    yield process, tmp_path
    process.stop()


def _query(port: int, expr: str) -> dict[str, Any]:
    return _get(port, "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def _get(port: int, path: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    return body


async def _returns_data(port: int, expr: str) -> tuple[bool, str]:
    """True when the query succeeds with at least one sample; else the reason."""
    body = await asyncio.to_thread(_query, port, expr)
    if body.get("status") != "success":
        return False, f"error: {body.get('error')}"
    result = body["data"]["result"]
    return bool(result), "" if result else "no data"


async def _all_return_data(port: int, exprs: list[str]) -> dict[str, str]:
    """Poll every expression until each has returned data once; the ones that never did."""
    waiting = {e: "not queried" for e in exprs}
    deadline = asyncio.get_running_loop().time() + DATA_TIMEOUT
    while waiting and asyncio.get_running_loop().time() < deadline:
        for expr in list(waiting):
            ok, why = await _returns_data(port, expr)
            if ok:
                del waiting[expr]
            else:
                waiting[expr] = why
        await asyncio.sleep(1.0)
    return waiting


def _rules() -> list[dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


async def _run_sagas(d: Deployment) -> set[str]:
    """Thirty orders: most complete, some run out of stock or money, and one carries a
    caller's trace context. Plus a poison request, which must end in a dead-letter queue."""
    await d.seed({"SKU-A": 40, "SKU-B": 3}, {"rich": 1_000_000, "poor": 500})
    ids: set[str] = set()
    for n in range(24):
        ids.add(await d.order(f"obs-{n}", "rich", ("SKU-A", 1, "2.50")))
    for n in range(3):
        ids.add(await d.order(f"obs-stock-{n}", "rich", ("SKU-B", 2, "1.00")))
    for n in range(2):
        ids.add(await d.order(f"obs-money-{n}", "poor", ("SKU-A", 1, "90.00")))
    await d.transport.publish(d.topology.orders_exchange, "order.requested", WireMessage(
        body=b"{not json", message_id="obs-poison", correlation_id="obs-poison",
        type="order.requested", timestamp=None, headers={"x-schema-version": 1}))
    return ids


async def test_prometheus_scrapes_the_system_and_every_query_returns_data(
        deploy: Deploy, prometheus: tuple[ManagedProcess, Path]) -> None:
    """Start the system with failures injected, point a real Prometheus at it with the
    project's own configuration and rules, run sagas, then evaluate every dashboard query
    (panels in collapsed rows too, with every definition selected) and recording rule
    through the HTTP API (each must return data), every metric an alert or an annotation
    reads (each must exist), and see the dead-letter alert fire for the poison message and
    a worker's restart annotated."""
    d = await deploy(workers={"SAGA_FAULT_TRANSIENT": "0.1", "SAGA_FAULT_REJECT": "0.05",
                              "SAGA_FAULT_SEED": "3"})
    server, tmp = prometheus
    config = _prometheus_config(d, tmp)
    server.argv += [f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{server.port}"]
    server.start()
    await server.wait_ready(60)
    # "Growing" needs a point before the poison message: wait until Prometheus has the
    # empty dead-letter queue on record.
    dlq = d.topology.requests_queue + ".dlq"
    assert not await _all_return_data(server.port, [f'saga_dead_letter_queue_messages{{queue="{dlq}"}} == 0'])

    ids = await _run_sagas(d)
    outcomes = await d.outcomes(ids, timeout=90)
    assert {o.label for o in outcomes.values()} >= {"completed", "INSUFFICIENT_STOCK"}
    report = await d.settled()
    assert report.ok, report.violations

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [as_sent(e) for e in _dashboard_exprs(dashboard)]
    rules = _rules()
    recorded = [r["record"] for r in rules if "record" in r]
    queries += [r["expr"] for r in rules if "record" in r] + recorded
    # An alert's or an annotation's expression is empty while all is well; what must exist
    # is every series it reads (a misspelt metric or label would silence it for good).
    quiet = [r["expr"] for r in rules if "alert" in r] + _annotation_exprs(dashboard)
    inputs = sorted({name for expr in quiet for name in NAME_IN_EXPR.findall(expr)} - set(recorded))
    queries += [f'count({{__name__="{name}"}})' for name in inputs]
    queries += ['up{job=~"saga-.*"} == 1', 'up{job="rabbitmq"} == 1',
                # per queue: the orchestrator's inbound requests queue among them
                f'rabbitmq_queue_messages{{queue="{d.topology.requests_queue}"}}']
    missing = await _all_return_data(server.port, sorted(set(queries)))
    assert not missing, "queries without data:\n" + "\n".join(
        f"  {why}: {expr}" for expr, why in missing.items()) + "\n" + d.cluster.logs()
    for expr in quiet:
        body = await asyncio.to_thread(_query, server.port, as_sent(expr))
        assert body["status"] == "success", (expr, body)
    # The orchestrator's per-participant series keep their own service label (honor_labels),
    # so the "by service" panels show each participant, not one "orchestrator" line.
    by_service = await asyncio.to_thread(
        _query, server.port, 'count by (service) (saga_step_duration_seconds_count)')
    services = {r["metric"].get("service") for r in by_service["data"]["result"]}
    assert {"inventory", "payment", "shipping"} <= services, services
    renamed = await asyncio.to_thread(_query, server.port, 'count({exported_service!=""})')
    assert renamed["data"]["result"] == [], renamed
    definitions = await asyncio.to_thread(
        _get, server.port, "/api/v1/label/definition/values?match[]=saga_started_total")
    assert "order" in definitions["data"], definitions  # the $definition variable's choices

    up = await asyncio.to_thread(_query, server.port, 'sum(up{job=~"saga-.*"})')
    assert float(up["data"]["result"][0]["value"][1]) == len(d.cluster.processes)
    firing = await _eventually(server.port, 'ALERTS{alertname="SagaDeadLetterQueueGrowing"}',
                               queue=dlq)
    assert firing, f"SagaDeadLetterQueueGrowing did not fire for {dlq}"
    [restarts] = [a["target"]["expr"] for a in dashboard["annotations"]["list"]
                  if a["name"] == "Restarts"]
    await asyncio.to_thread(d.cluster.processes["shipping"].stop)
    await d.cluster.restart("shipping")
    assert await _eventually(server.port, as_sent(restarts), service="shipping"), (
        "the restart of shipping is not annotated")


async def _eventually(port: int, expr: str, **labels: str) -> bool:
    """Poll a query until it returns a sample with these labels."""
    deadline = asyncio.get_running_loop().time() + DATA_TIMEOUT
    while asyncio.get_running_loop().time() < deadline:
        body = await asyncio.to_thread(_query, port, expr)
        if body["status"] == "success" and any(
                labels.items() <= sample["metric"].items() for sample in body["data"]["result"]):
            return True
        await asyncio.sleep(1.0)
    return False


async def test_trace_context_and_logs_explain_one_saga(deploy: Deploy) -> None:
    """A request's trace id reaches the outcome event and every log line of its saga, in the
    orchestrator and in the workers; the logs name the status transitions and commands."""
    d = await deploy()
    await d.seed({"SKU-T": 5}, {"tracy": 100_000})
    order = OrderRequested(order_id="obs-traced", customer_id="tracy",
                           items=(OrderItem(sku="SKU-T", quantity=1, unit_price=Decimal("3.00")),))
    await submit(d.transport, d.topology, order,
                 traceparent=f"00-{TRACE}-00f067aa0ba902b7-01")
    outcome = (await d.outcomes({"obs-traced"}))["obs-traced"]
    assert outcome.label == "completed"
    assert trace_id_of(outcome.traceparent) == TRACE
    await d.settled()

    lines = []
    for process in d.cluster.processes.values():
        for raw in process.log_path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(raw)  # every line is JSON
            assert {"ts", "level", "service", "msg"} <= entry.keys(), raw
            if entry.get("saga_id") == "order:obs-traced":
                lines.append(entry)
    assert lines
    assert all(e.get("trace_id") == TRACE for e in lines), lines
    services = {e["service"] for e in lines}
    assert services == {"orchestrator", "order", "inventory", "payment", "shipping",
                        "notification"}
    transitions = [e["transition"] for e in lines if "transition" in e]
    assert transitions == ["new->running", "running->committed", "committed->completed"]
    sent = [e for e in lines if e["msg"].startswith("command ")]
    assert len(sent) == len([op for phase in order_saga().forward_phases for op in phase.ops])
    assert all(e.get("message_id") and e.get("step") for e in sent)


async def test_readiness_follows_the_database(deploy: Deploy, tmp_path: Path) -> None:
    """/readyz says ready while broker and database answer, and not ready once the
    database is gone; /healthz still says the process is alive."""
    standin, url = await start_standin(tmp_path, name="standin-readiness")
    try:
        d = await deploy(workers={"SAGA_MONGO_URL_PAYMENT": url})
        payment = d.cluster.processes["payment"]
        assert await http_ok(payment.port, "/readyz")
        standin.kill()
        assert not await http_ok(payment.port, "/readyz", timeout=3.0)
        assert await http_ok(payment.port, "/healthz")
        assert await http_ok(d.cluster.processes["order"].port, "/readyz")
    finally:
        standin.stop()
