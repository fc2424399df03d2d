"""``python -m workers SERVICE``: run one participant process.

SERVICE is the name of a shipped participant (``inventory``) or the import path of a
team's own, ``package.module:attribute`` (``mypkg.accounts:service``).
"""

from __future__ import annotations

import sys

from workers.app import run
from workers.catalog import UnknownParticipant, participant


def main(argv: list[str]) -> int:
    """Resolve the participant named on the command line and run it."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m workers SERVICE (a shipped service name, or "
              "package.module:attribute)", file=sys.stderr)
        return 2
    try:
        spec = participant(argv[0])
    except UnknownParticipant as e:
        print(f"workers: {e}", file=sys.stderr)
        return 2
    return run(spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
