"""The container path of the test fixtures, as far as it can be checked without Docker."""

from __future__ import annotations

import subprocess
import sys

from contracts.envelope import MAX_MESSAGE_BYTES
from harness.processes import ROOT
from tests.containers import MONGODB, RABBITMQ, amqp_url, mongo_url


def _imports_cleanly(*modules: str) -> subprocess.CompletedProcess[str]:
    code = "; ".join(f"import {m}" for m in modules)
    return subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, text=True,
                          capture_output=True, timeout=60)


def test_the_fixtures_and_the_testcontainers_api_they_use_import_without_warnings() -> None:
    """The suite turns every warning into an error: a deprecated module would fail every
    test on a machine with Docker."""
    result = _imports_cleanly("tests.conftest", "tests.containers",
                              "testcontainers.core.container",
                              "testcontainers.core.wait_strategies")
    assert result.returncode == 0, result.stderr


def test_the_deprecated_modules_would_fail_that_check() -> None:
    """What the fixtures used before: the same check rejects it."""
    for module in ("testcontainers.rabbitmq", "testcontainers.mongodb"):
        result = _imports_cleanly(module)
        assert result.returncode != 0
        assert "Warning" in result.stderr or "Error" in result.stderr


def test_the_urls_handed_to_the_tests() -> None:
    assert amqp_url("localhost", 32771) == "amqp://guest:guest@localhost:32771/"
    assert mongo_url("10.0.0.5", 32772) == "mongodb://10.0.0.5:32772/?directConnection=true"


def test_mongodb_runs_as_a_replica_set_without_authentication() -> None:
    assert MONGODB.command is not None
    assert "--replSet rs0" in MONGODB.command
    assert not any(k.startswith("MONGO_INITDB_ROOT") for k in MONGODB.env)
    assert "rs.initiate()" in " ".join(MONGODB.setup)
    assert "@" not in mongo_url("h", 1)  # no credentials for an unauthenticated server


def test_the_broker_container_has_the_shipped_message_size_limit() -> None:
    assert f"max_message_size {MAX_MESSAGE_BYTES}" in RABBITMQ.env[
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
