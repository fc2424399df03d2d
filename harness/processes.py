"""Start, watch, kill and restart the system's processes (for the demo and the tests)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

from contracts.errors import SagaSystemError
from infra.adapters.rabbit import amqp_user

ROOT = Path(__file__).resolve().parent.parent


# Ports handed out for processes to listen on, below Linux's default ephemeral range
# (32768-60999): a port the kernel picked (bind to port 0) is free now, but the next outgoing
# connection of any process may take it before the child binds it, and a test run makes
# thousands of them. Picked at random, checked free, and never handed out twice.
LISTEN_PORTS = range(20_000, 32_000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port nobody listens on right now, outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop - 1}")


async def http_ok(port: int, path: str, timeout: float = 1.0) -> bool:
    """True if GET http://127.0.0.1:port/path answers 200."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
        return b" 200 " in status
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def http_get(port: int, path: str, timeout: float = 5.0) -> str:
    """The body of GET http://127.0.0.1:port/path."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return data.split(b"\r\n\r\n", 1)[-1].decode()


async def port_open(port: int) -> bool:
    """True if something accepts connections on the port."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


FAULT_SEED = "SAGA_FAULT_SEED"


def incarnation_env(env: Mapping[str, str], starts: int) -> dict[str, str]:
    """The environment of a process's next start: its fault seed moves on with each restart.

    A restarted process that got its first seed again would roll the same dice again, and
    an injected crash early in that sequence would then kill every incarnation at once: a
    crash loop that the broker ends by dead-lettering the commands held at each crash.
    """
    seed = env.get(FAULT_SEED)
    if seed is None or starts == 0:
        return dict(env)
    return {**env, FAULT_SEED: str(int(seed) * 1000 + starts)}


@dataclass
class ManagedProcess:
    """One OS process of the system, with its log file and its ops port."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    ready_path: str | None = "/readyz"
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: IO[bytes] | None = None

    def start(self) -> None:
        """Launch it; output goes to its log file (appended across restarts)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()  # the last incarnation's, if it died on its own
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(self.argv, env=incarnation_env(self.env, self.starts),
                                      cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.starts += 1

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until /readyz says ready (or the port opens); fail if the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; "
                                   f"see {self.log_path}")
            ok = (await http_ok(self.port, self.ready_path) if self.ready_path
                  else await port_open(self.port))
            if ok:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s; see {self.log_path}")

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        if self.popen is not None and self.alive:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()
        self._close_log()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.popen is None:
            return None
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._close_log()
        return self.popen.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Cluster:
    """The orchestrator and every worker, plus (optionally) the MongoDB stand-in."""

    env: Mapping[str, str]
    log_dir: Path
    worker_env: Mapping[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    # What every process inherits before ``env``: this process's environment, unless the
    # caller keeps its own settings out (the benchmark does).
    inherited: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def add(self, name: str, module: str, extra_env: Mapping[str, str] | None = None,
            args: tuple[str, ...] = (), launcher: str | None = None) -> None:
        """Register a process running ``python -m module args`` (or ``python -m launcher
        module args``) with its own metrics port."""
        port = free_port()
        env = {**self.inherited, **self.env, **(extra_env or {}), "SAGA_METRICS_PORT": str(port),
               "SAGA_METRICS_HOST": "127.0.0.1"}
        if module == "orchestrator" and not env.get("SAGA_REPLY_USERS"):
            # Every process of this cluster logs in with the same broker URL unless told
            # otherwise: replies are accepted from that user only.
            env["SAGA_REPLY_USERS"] = f"*={amqp_user(env.get('SAGA_AMQP_URL', ''))}"
        argv = [sys.executable, "-m", *((launcher,) if launcher else ()), module, *args]
        self.processes[name] = ManagedProcess(name, argv, env,
                                              self.log_dir / f"{name}.log", port)

    def add_worker(self, service: str, extra_env: Mapping[str, str] | None = None,
                   name: str | None = None) -> None:
        """Register the participant process ``python -m workers SERVICE``."""
        self.add(name or service.rpartition(":")[2], "workers",
                 {**self.worker_env, **(extra_env or {})}, (service,))

    def add_system(self, services: Sequence[str] | Mapping[str, str], *, orchestrators: int = 1,
                   orchestrator_env: Mapping[str, str] | None = None,
                   worker_env: Callable[[str], Mapping[str, str]] | None = None) -> None:
        """The orchestrator (``orchestrator``, then ``orchestrator-2`` and on when there are
        several) and one worker per service. ``services`` maps process names to participant
        references where they differ; ``worker_env`` gives a worker's own settings by name."""
        for n in range(1, orchestrators + 1):
            name = "orchestrator" if n == 1 else f"orchestrator-{n}"
            # A stable instance name: restarted, it takes its partitions back at once
            # instead of waiting for its old leases to expire.
            self.add(name, "orchestrator", {"SAGA_INSTANCE": name, **(orchestrator_env or {})})
        refs = (services if isinstance(services, Mapping)
                else {s.rpartition(":")[2]: s for s in services})
        for name, ref in refs.items():
            self.add_worker(ref, worker_env(name) if worker_env else None, name=name)

    async def start(self, timeout: float = 60.0) -> None:
        """Start every process and wait until all are ready."""
        for p in self.processes.values():
            p.start()
        await asyncio.gather(*(p.wait_ready(timeout) for p in self.processes.values()))

    async def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start a (killed or stopped) process again and wait until it is ready."""
        process = self.processes[name]
        process.start()
        await process.wait_ready(timeout)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM everything; returns exit codes."""
        return {name: p.stop() for name, p in self.processes.items()}

    async def metric(self, process: str, name: str, **labels: str) -> float:
        """The sum of a metric's samples (matching ``labels``) scraped from a process."""
        text = await http_get(self.processes[process].port, "/metrics")
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == name and all(sample.labels.get(k) == v
                                                  for k, v in labels.items()))

    def logs(self) -> str:
        """Every log, for a failure message."""
        parts = []
        for p in self.processes.values():
            if p.log_path.exists():
                parts.append(f"===== {p.name}\n{p.log_path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


class LocalExtraMissing(SagaSystemError, RuntimeError):
    """The stand-in's server (mongoeco) is not installed: it comes with the ``local`` extra."""


def require_standin() -> None:
    """Fail in one line, before any process starts, when the stand-in cannot run."""
    if importlib.util.find_spec("mongoeco") is None:
        raise LocalExtraMissing("the MongoDB stand-in needs the local extra: "
                                "pip install 'saga-orchestrator[local]', or set SAGA_MONGO_URL")


async def start_standin(log_dir: Path, sqlite_path: Path | None = None,
                        port: int | None = None, name: str = "standin",
                        extra_args: tuple[str, ...] = ()) -> tuple[ManagedProcess, str]:
    """Run the MongoDB stand-in server in its own process; returns it and its URL."""
    require_standin()
    port = port or free_port()
    argv = [sys.executable, "-m", "harness.standin", "--port", str(port), *extra_args]
    if sqlite_path is not None:
        argv += ["--sqlite", str(sqlite_path)]
    process = ManagedProcess(name, argv, dict(os.environ), log_dir / f"{name}.log", port,
                             ready_path=None)
    process.start()
    try:
        await process.wait_ready(30.0)
    except BaseException:  # not ready, or the caller was cancelled: leave no orphan behind
        process.stop()
        raise
    return process, f"mongodb://127.0.0.1:{port}/?directConnection=true"


async def start_standins(owners: tuple[str, ...], log_dir: Path) -> tuple[
        list[ManagedProcess], dict[str, str]]:
    """One stand-in server per owner (the stand-in detects write conflicts server-wide, so
    owners sharing one would conflict with each other); returns the processes and the
    ``SAGA_MONGO_URL_<OWNER>`` variables pointing at them."""
    started = await asyncio.gather(*(start_standin(log_dir, name=f"standin-{o}") for o in owners))
    env = {f"SAGA_MONGO_URL_{o.upper()}": url for o, (_, url) in zip(owners, started, strict=True)}
    return [p for p, _ in started], env
