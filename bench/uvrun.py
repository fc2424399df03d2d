"""``python -m bench.uvrun <module> [args]``: run a process's unmodified entry point on uvloop.

The entry points call ``asyncio.run``; with uvloop's event loop policy installed first,
that loop is uvloop's. This measures uvloop without touching the entry points.
"""

from __future__ import annotations

import asyncio
import runpy
import sys

import uvloop


def main(argv: list[str]) -> None:
    """Install uvloop's policy, then run ``argv[0]`` as ``__main__`` with the rest as args."""
    if not argv:
        print("usage: python -m bench.uvrun <module> [args]", file=sys.stderr)
        sys.exit(2)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.argv = [argv[0], *argv[1:]]
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
