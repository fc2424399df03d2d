"""``sagactl chaos``: the real processes under faults, then drain, audit and a table.

Orders are published steadily for ``--duration`` seconds while fault loops kill the
orchestrator and workers, cut and restart the broker, restart the database servers,
duplicate, delay and reorder messages, inject business and compensation failures and
feed poison messages to every queue. Then every fault stops, everything is brought back,
and the run waits for the system to drain: every order's saga finished, every outbox
empty. The audit then checks every invariant; the run fails on any violation.

The parts: ``plan`` (options, faults, each process's own fault settings), ``faults`` (the
injector and the supervisor), ``report`` (drain, outcomes, dead letters, the table and
the verdict) and ``run`` (one run, built by one constructor).
"""

from __future__ import annotations

import sys
from typing import TextIO

from client import connect
from harness.broker import LocalBroker
from harness.chaos.plan import BROKER_FAULTS, FAULTS, ChaosOptions
from harness.chaos.run import ChaosRun
from infra.settings import CommonSettings, redact

__all__ = ["FAULTS", "ChaosOptions", "run"]


async def run(common: CommonSettings, opts: ChaosOptions, mongo_configured: bool,
              out: TextIO, err: TextIO | None = None) -> int:
    """``sagactl chaos``: the table goes to ``out``, a progress line to ``err`` (stderr
    unless given). An unreachable broker or configured database raises
    ``connect.Unreachable`` within seconds, before anything is started."""
    probe = await connect.transport(common, "sagactl-chaos-probe", within=3.0)
    await probe.close()
    if mongo_configured:
        await connect.require_databases(common)
    if BROKER_FAULTS & opts.faults and not await LocalBroker().answers():
        out.write("broker faults need rabbitmqctl for the broker at "
                  f"{redact(common.amqp_url.get_secret_value())}; running without them\n")
        opts = opts.without(BROKER_FAULTS)
    chaos = await ChaosRun.open(common, opts, out, err or sys.stderr, mongo_configured)
    try:
        return await chaos.run()
    finally:
        await chaos.close()
