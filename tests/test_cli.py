"""sagactl refuses bad input with one line and a non-zero exit code, and never leaks a password."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.processes import ROOT


def sagactl(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run sagactl as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "sagactl", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, env={**os.environ, **env})


@pytest.mark.parametrize("args", [
    (),
    ("frobnicate",),
    ("submit", "--item", "a:1:1.00"),
    ("submit", "--customer", "c", "--item", "a:1"),
    ("submit", "--customer", "c", "--item", "a:zero:1.00"),
    ("submit", "--customer", "c", "--item", "a:1:1.005"),
    ("submit", "--customer", "c", "--item", "a:-1:1.00"),
    ("submit", "--customer", "c", "--item", "a:1:1.00", "--timeout", "-5"),
    ("list", "--state", "sleeping"),
    ("list", "--limit", "0"),
    ("seed",),
    ("seed", "--sku", "apple"),
    ("seed", "--sku", "apple=1.5"),
    ("seed", "--customer", "alice=-3"),
    ("demo", "--orders", "0"),
    ("demo", "--transient", "2"),
    ("demo", "--reject", "abc"),
    ("dlq",),
    ("dlq", "show"),
    ("dlq", "replay"),
    ("dlq", "purge", "--operator"),
    ("up", "--console-port", "70000"),
    ("up", "--console-port", "0"),
    ("up", "--data"),
    ("chaos", "--orchestrators", "9"),
    ("chaos", "--partitions", "-1"),
    ("chaos", "--partitions", "2000"),
])
def test_bad_arguments_get_one_line_and_exit_code_2(args: tuple[str, ...]) -> None:
    """Each malformed command line is explained in exactly one line on stderr."""
    result = sagactl(*args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sagactl: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("variable", "value"), [
    ("SAGA_STEP_TIMEOUT", "soon"),
    ("SAGA_REPLY_USERS", "everyone"),
    ("SAGA_PARTITIONS", "-2"),
    ("SAGA_INSTANCE", "a b"),
])
def test_the_orchestrator_names_a_bad_setting_in_one_line(variable: str, value: str) -> None:
    """The orchestrator process refuses a malformed setting before it connects anywhere."""
    result = subprocess.run([sys.executable, "-m", "orchestrator"], cwd=ROOT, text=True,
                            capture_output=True, timeout=60,
                            env={**os.environ, "SAGA_STORE": "memory", variable: value})
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"orchestrator: {variable}: ")


def test_a_bad_environment_variable_is_named() -> None:
    """A malformed setting says which variable is wrong."""
    result = sagactl("list", SAGA_PREFETCH="lots")
    assert result.returncode == 2
    assert "SAGA_PREFETCH" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_broker_is_one_line_without_the_password() -> None:
    """Connection failures name the host but never the credentials."""
    result = sagactl("submit", "--customer", "c", "--item", "a:1:1.00",
                     SAGA_AMQP_URL="amqp://guest:hunter2@127.0.0.1:1/")
    assert result.returncode == 3
    assert "hunter2" not in result.stderr + result.stdout
    assert "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_dead_letters_on_an_unreachable_broker_are_one_line() -> None:
    result = sagactl("dlq", "list", SAGA_AMQP_URL="amqp://guest:hunter2@127.0.0.1:1/")
    assert result.returncode == 3
    assert "hunter2" not in result.stderr + result.stdout
    assert result.stderr.strip() == ("sagactl: cannot reach RabbitMQ at "
                                     "amqp://guest:***@127.0.0.1:1/: AMQPConnectionError")


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    """The same for MongoDB."""
    result = sagactl("status", "some-order",
                     SAGA_MONGO_URL="mongodb://admin:hunter2@127.0.0.1:1/?serverSelectionTimeoutMS=200")
    assert result.returncode == 3
    assert "hunter2" not in result.stderr + result.stdout
    assert "cannot reach MongoDB" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_without_a_broker_runs_embedded_and_checks_invariants() -> None:
    """On a laptop with no RabbitMQ the demo falls back to one process and still passes."""
    result = sagactl("demo", "--orders", "40", SAGA_AMQP_URL="amqp://guest:guest@127.0.0.1:1/")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "running embedded instead" in result.stdout
    checks = {line.split("  ")[1].strip(): line.split()[-1]
              for line in result.stdout.splitlines() if line.startswith("  ") and "  " in line[2:]}
    assert checks.get("stock conserved") == "ok"
    assert checks.get("money conserved") == "ok"
    assert result.stdout.rstrip().splitlines()[-1].startswith("PASS")


@pytest.mark.parametrize("after", [3.0, 12.0])
def test_sigterm_stops_a_chaos_run_and_everything_it_started(after: float, amqp_url: str) -> None:
    """SIGTERM during start-up or mid-run exits 143 and leaves no process of the run behind
    (the stand-ins, orchestrator and workers it started are stopped)."""
    before = set(Path(tempfile.gettempdir()).glob("saga-chaos-*"))
    run = subprocess.Popen([sys.executable, "-m", "sagactl", "chaos", "--orders", "10",
                            "--duration", "60", "--faults", "worker-kill"], cwd=ROOT,
                           env={**os.environ, "SAGA_AMQP_URL": amqp_url},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 143
    runs = set(Path(tempfile.gettempdir()).glob("saga-chaos-*")) - before
    assert len(runs) == 1
    tag = next(iter(runs)).name
    left = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True, check=False)
    assert left.stdout == "", f"processes of {tag} left behind: {left.stdout}"
    namespace = "SAGA_NAMESPACE=chaos-" + tag.split("-")[2]
    for proc in Path("/proc").iterdir():
        environ = proc / "environ"
        if proc.name.isdigit() and environ.exists():
            try:
                assert namespace.encode() not in environ.read_bytes().split(b"\0"), proc.name
            except OSError:
                continue


@pytest.mark.parametrize(("command", "variable", "value", "says"), [
    (("chaos", "--orders", "5", "--duration", "5"), "SAGA_AMQP_URL",
     "amqp://guest:hunter2@127.0.0.1:1/", "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/"),
    (("chaos", "--orders", "5", "--duration", "5", "--faults", "worker-kill"), "SAGA_MONGO_URL",
     "mongodb://admin:hunter2@127.0.0.1:1/", "cannot reach MongoDB at mongodb://admin:***@127.0.0.1:1/"),
    (("demo", "--orders", "5"), "SAGA_MONGO_URL",
     "mongodb://admin:hunter2@127.0.0.1:1/", "cannot reach MongoDB at mongodb://admin:***@127.0.0.1:1/"),
])
def test_long_runs_report_an_unreachable_service_within_seconds(
        command: tuple[str, ...], variable: str, value: str, says: str, amqp_url: str) -> None:
    """demo and chaos check the broker and a configured database before starting anything:
    one line and exit code 3 within seconds, not a silent wait of ten seconds or more (the
    demo falls back to embedded only when the broker is missing, so its case is MongoDB)."""
    began = time.monotonic()
    result = sagactl(*command, **{"SAGA_AMQP_URL": amqp_url, variable: value})
    assert result.returncode == 3, result
    assert time.monotonic() - began < 10.0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"sagactl: {says}: ")
    assert "hunter2" not in result.stderr + result.stdout
