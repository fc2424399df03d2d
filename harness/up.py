"""``sagactl up``: the whole system on this machine, until Ctrl-C or SIGTERM.

The orchestrator, one worker per registered participant and the console run as separate
processes against the configured RabbitMQ and MongoDB (``SAGA_MONGO_URL``), or, with no
MongoDB configured, against MongoDB stand-ins (one mongoeco server per database owner,
SQLite files in the data directory, so a restart of ``up`` keeps the sagas). A process that
exits on its own is started again, as a supervisor would, and says so. Ctrl-C or SIGTERM
stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from catalog.plan import Platform, owners
from client import connect
from harness.processes import Cluster, ManagedProcess, start_standin
from infra.settings import CommonSettings, redact

SUPERVISE_EVERY = 1.0  # seconds between looks at the processes


@dataclass(frozen=True, slots=True)
class UpOptions:
    """What ``sagactl up`` runs, and where."""

    console: bool = True
    console_port: int = 8088
    data: Path | None = None  # logs and stand-in data; a new temporary folder when None


@dataclass
class System:
    """What ``up`` started: stand-ins first, then the processes."""

    standins: list[ManagedProcess]
    cluster: Cluster
    console: ManagedProcess | None
    data: Path

    def processes(self) -> list[ManagedProcess]:
        """Every process of the system (the stand-ins aside)."""
        return [*self.cluster.processes.values(), *([self.console] if self.console else [])]

    def stop(self) -> None:
        """Stop the processes, then the databases they write to."""
        if self.console is not None:
            self.console.stop()
        self.cluster.stop()
        for standin in self.standins:
            standin.stop()


async def start(common: CommonSettings, opts: UpOptions, mongo_configured: bool) -> System:
    """Check the broker and the database, then start everything and wait until it is ready."""
    probe = await connect.transport(common, "sagactl-up-probe", within=3.0)
    await probe.close()
    if mongo_configured:
        await connect.require_databases(common)
    data = opts.data or Path(tempfile.mkdtemp(prefix="saga-up-"))
    data.mkdir(parents=True, exist_ok=True)
    plan = Platform.load(common).plan()
    env = {"SAGA_AMQP_URL": common.amqp_url.get_secret_value(), "SAGA_STORE": "mongo",
           "SAGA_NAMESPACE": common.namespace, "SAGA_MONGO_DB": common.mongo_db_prefix}
    standins: list[ManagedProcess] = []
    system = System(standins, Cluster(env, data / "logs"), None, data)
    try:
        if not mongo_configured:
            for owner in owners(plan.services):
                process, url = await start_standin(data / "logs", sqlite_path=data / f"{owner}.sqlite",
                                                   name=f"standin-{owner}")
                standins.append(process)
                env[f"SAGA_MONGO_URL_{owner.upper()}"] = url
            env["SAGA_TX_CONCURRENCY"] = "1"  # the stand-in detects conflicts server-wide
        system.cluster.add_system(plan.services)
        if opts.console:
            console_env = {**os.environ, **env, "SAGA_CONSOLE_PORT": str(opts.console_port)}
            system.console = ManagedProcess("console", [sys.executable, "-m", "console"],
                                            console_env, data / "logs" / "console.log",
                                            opts.console_port)
            system.console.start()
        await system.cluster.start()
        if system.console is not None:
            await system.console.wait_ready(60)
    except BaseException:
        system.stop()
        raise
    return system


def describe(system: System, common: CommonSettings, mongo_configured: bool) -> list[str]:
    """One line per process, and where everything is."""
    lines = []
    for process in system.processes():
        pid = process.popen.pid if process.popen else "-"
        what = ("http://127.0.0.1:{}/" if process.name == "console"
                else "http://127.0.0.1:{}/metrics").format(process.port)
        lines.append(f"{process.name:<14} pid {pid!s:<8} {what}")
    lines.append(f"{'broker':<14} {redact(common.amqp_url.get_secret_value())}")
    database = (redact(common.mongo_url.get_secret_value()) if mongo_configured else
                f"{len(system.standins)} MongoDB stand-ins, data in {system.data}")
    lines.append(f"{'database':<14} {database}")
    lines.append(f"{'logs':<14} {system.data / 'logs'}")
    if system.console is not None and not system.console.env.get("SAGA_CONSOLE_TOKEN"):
        lines.append("(the console's actions need SAGA_CONSOLE_TOKEN; it is not set)")
    return lines


async def supervise(system: System, out: TextIO) -> None:
    """Start again whatever exits on its own, until cancelled."""
    while True:
        await asyncio.sleep(SUPERVISE_EVERY)
        for process in system.processes():
            code = process.popen.poll() if process.popen else None
            if code is None:
                continue
            out.write(f"{process.name} exited with code {code}; starting it again "
                      f"(log: {process.log_path})\n")
            out.flush()
            process.start()


async def run(common: CommonSettings, opts: UpOptions, mongo_configured: bool,
              out: TextIO) -> int:
    """``sagactl up``: start, print where everything is, supervise until stopped."""
    system = await start(common, opts, mongo_configured)
    try:
        out.write("\n".join(describe(system, common, mongo_configured)) + "\n")
        out.write("running; Ctrl-C stops everything\n")
        out.flush()
        await supervise(system, out)
    finally:
        system.stop()
        out.write("stopped\n")
        out.flush()
    return 0
