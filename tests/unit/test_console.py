"""The console's pure parts: who may do what, the list's query string, the vendored assets,
and the process's refusal of bad settings."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from console.api import BadQuery, parse_query
from console.app import STATIC
from console.auth import allowed, bearer, is_loopback
from engine.state import SagaStatus
from harness.processes import ROOT
from orchestrator.store import SagaQuery

TOKEN = "s3cret"


@pytest.mark.parametrize(("method", "client", "header", "token", "ok"), [
    ("GET", "127.0.0.1", None, None, True),  # a read from this host
    ("GET", "::1", None, None, True),
    ("GET", "::ffff:127.0.0.1", None, None, True),
    ("HEAD", "127.0.0.5", None, TOKEN, True),
    ("GET", "10.0.0.7", None, TOKEN, False),  # a read from elsewhere needs the token
    ("GET", "10.0.0.7", f"Bearer {TOKEN}", TOKEN, True),
    ("GET", "10.0.0.7", f"bearer {TOKEN}", TOKEN, True),
    ("GET", "10.0.0.7", "Bearer wrong", TOKEN, False),
    ("GET", "10.0.0.7", f"Basic {TOKEN}", TOKEN, False),
    ("GET", None, None, TOKEN, False),  # no peer address: not known to be local
    ("GET", "localhost", None, TOKEN, False),  # only addresses count, never names
    ("POST", "127.0.0.1", None, TOKEN, False),  # every action needs it, even from here
    ("POST", "127.0.0.1", f"Bearer {TOKEN}", TOKEN, True),
    ("POST", "127.0.0.1", "Bearer ", TOKEN, False),
    ("POST", "127.0.0.1", "Bearer anything", None, False),  # no token set: never
])
def test_the_access_rule(method: str, client: str | None, header: str | None,
                         token: str | None, ok: bool) -> None:
    assert allowed(method, client, header, token) is ok


def test_bearer_and_loopback_edges() -> None:
    assert bearer("Bearer  abc ") == "abc"
    assert bearer("Bearer") is None
    assert bearer(None) is None
    assert is_loopback("127.255.0.1")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("not an address")


def test_a_query_string_becomes_a_query() -> None:
    query = parse_query({"status": "running,needs_attention", "definition": "transfer",
                         "since": "2026-12-04T10:00:00+00:00", "q": " o-1 ",
                         "after": "1733306400.25|order:o-9", "limit": "20"}, 50)
    assert query == SagaQuery(
        statuses=frozenset({SagaStatus.RUNNING, SagaStatus.NEEDS_ATTENTION}),
        definition="transfer", since=1796378400.0, text="o-1",
        after=(1733306400.25, "order:o-9"), limit=20)
    assert parse_query({}, 50) == SagaQuery(limit=50)
    assert parse_query({"q": "  ", "definition": ""}, 7) == SagaQuery(limit=7)


@pytest.mark.parametrize(("params", "why"), [
    ({"status": "sleeping"}, "status: one of running"),
    ({"since": "last week"}, "since: an ISO 8601 time"),
    ({"after": "12.5"}, "after:"),
    ({"after": "soon|order:o-1"}, "after:"),
    ({"after": "12.5|"}, "after:"),
    ({"limit": "ten"}, "limit: a whole number"),
    ({"limit": "501"}, "limit: between 1 and 500"),
])
def test_a_bad_query_string_says_what_is_wrong(params: dict[str, str], why: str) -> None:
    with pytest.raises(BadQuery, match=why):
        parse_query(params, 50)


def test_the_vendored_mermaid_is_the_pinned_one() -> None:
    """console/static/vendor/ holds mermaid's browser bundle from the npm registry
    (scripts/vendor-assets), at the version whose parser checks our flowcharts."""
    record = json.loads((STATIC / "vendor" / "mermaid.json").read_text())
    lock = json.loads((ROOT / "tests" / "mermaid" / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/mermaid"]
    assert (record["version"], record["tarball_integrity"]) == (pinned["version"],
                                                                pinned["integrity"])
    body = (STATIC / "vendor" / "mermaid.min.js").read_bytes()
    assert hashlib.sha256(body).hexdigest() == record["sha256"]


def test_no_page_loads_anything_from_elsewhere() -> None:
    """Every script, style and image of the pages is served by the console itself."""
    for page in ("index.html", "saga.html"):
        text = (STATIC / page).read_text()
        for remote in ("http://", "https://", "//cdn"):
            assert remote not in text, (page, remote)


@pytest.mark.parametrize(("variable", "value"), [
    ("SAGA_CONSOLE_PORT", "eighty"),
    ("SAGA_CONSOLE_PORT", "70000"),
    ("SAGA_CONSOLE_ACTION_TIMEOUT", "-1"),
])
def test_the_console_names_a_bad_setting_in_one_line(variable: str, value: str) -> None:
    result = subprocess.run([sys.executable, "-m", "console"], cwd=ROOT, text=True,
                            capture_output=True, timeout=60, env={**os.environ, variable: value})
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"console: {variable}: ")


def test_an_unreachable_store_is_one_line_without_the_password() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "console"], cwd=ROOT, text=True, capture_output=True, timeout=60,
        env={**os.environ, "SAGA_STORE": "mongo",
             "SAGA_MONGO_URL": "mongodb://admin:hunter2@127.0.0.1:1/?serverSelectionTimeoutMS=200"})
    assert result.returncode == 3, result
    assert "hunter2" not in result.stderr
    assert result.stderr.strip().startswith("console: cannot reach MongoDB at ")
    assert len(result.stderr.strip().splitlines()) == 1
