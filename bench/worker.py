"""``python -m bench.worker <service>``: a product worker on a seeded in-memory store.

The product's own entry point (``python -m workers <service>``) starts in-memory stores
empty, so every order would be rejected for lack of stock or money. This launcher wires
the same ``WorkerProcess`` and seeds its store before it starts consuming.
"""

from __future__ import annotations

import os
import sys

from bench.catalog import seed
from infra import logs
from infra.process import run_process
from infra.settings import SettingsError
from workers.app import WorkerProcess
from workers.catalog import registered
from workers.settings import worker_from_env


def main(argv: list[str]) -> int:
    """Read settings like the product does, seed, run until signalled."""
    if len(argv) != 1 or argv[0] not in registered():
        print(f"usage: python -m bench.worker {{{','.join(registered())}}}", file=sys.stderr)
        return 2
    service = argv[0]
    try:
        settings = worker_from_env(os.environ, service, registered()[service].metrics_port)
    except SettingsError as e:
        print(f"{service}: {e}", file=sys.stderr)
        return 2
    if settings.common.store != "memory":
        print("bench.worker seeds in-memory stores only; set SAGA_STORE=memory", file=sys.stderr)
        return 2
    logs.configure(service, settings.common.log_level)
    process = WorkerProcess(settings, registered()[service])

    async def start() -> None:
        await seed(service, process.store)
        await process.start()

    run_process(settings.common, start, process.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
