"""Processes the harness restarts: each incarnation rolls its own fault dice."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.processes import FAULT_SEED, ManagedProcess, incarnation_env

PRINT_SEED = "import os; print('seed', os.environ.get('SAGA_FAULT_SEED'))"


def test_a_restarted_process_gets_a_fresh_fault_seed(tmp_path: Path) -> None:
    """A chaos run restarts a worker that an injected crash killed. With the first seed
    again, it replayed the same dice and crashed at once, over and over (account: 18
    crashes in 100 s), until the broker dead-lettered the commands it held each time."""
    log = tmp_path / "p.log"
    process = ManagedProcess("p", [sys.executable, "-c", PRINT_SEED], {FAULT_SEED: "7"}, log,
                             port=0, ready_path=None)
    for _ in range(3):
        process.start()
        assert process.popen is not None
        process.popen.wait(30)
        process.stop()  # closes its log
    seeds = [line.split()[1] for line in log.read_text().splitlines()]
    assert seeds[0] == "7"  # the first start is the seed the run was given
    assert len(set(seeds)) == 3


def test_the_environment_is_left_alone_without_a_seed() -> None:
    assert incarnation_env({"A": "1"}, 5) == {"A": "1"}
    assert incarnation_env({FAULT_SEED: "3"}, 2) == {FAULT_SEED: "3002"}
