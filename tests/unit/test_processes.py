"""The harness's processes: how a system is laid out, and restarts that roll their own
fault dice."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.processes import FAULT_SEED, Cluster, ManagedProcess, incarnation_env

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


def test_a_system_is_its_orchestrators_and_one_worker_per_service(tmp_path: Path) -> None:
    """Every way of running the system (demo, chaos, bench, tests, ``sagactl up``) lays it
    out through ``add_system``: names, modules and each process's own settings."""
    cluster = Cluster({"SAGA_NAMESPACE": "n"}, tmp_path, {"SHARED": "w"}, inherited={})
    cluster.add_system({"order": "order", "team": "pkg.module:team"}, orchestrators=2,
                       orchestrator_env={"ROLE": "orchestrator"},
                       worker_env=lambda name: {"ROLE": f"worker {name}"})
    processes = cluster.processes
    assert list(processes) == ["orchestrator", "orchestrator-2", "order", "team"]
    argv = {name: p.argv[2:] for name, p in processes.items()}
    assert argv == {"orchestrator": ["orchestrator"], "orchestrator-2": ["orchestrator"],
                    "order": ["workers", "order"], "team": ["workers", "pkg.module:team"]}
    assert {name: p.env["ROLE"] for name, p in processes.items()} == {
        "orchestrator": "orchestrator", "orchestrator-2": "orchestrator",
        "order": "worker order", "team": "worker team"}
    # Each orchestrator keeps its instance name across restarts (its partition leases).
    assert [processes[n].env["SAGA_INSTANCE"] for n in ("orchestrator", "orchestrator-2")] == [
        "orchestrator", "orchestrator-2"]
    assert all(p.env["SAGA_NAMESPACE"] == "n" for p in processes.values())
    assert processes["team"].env["SHARED"] == "w"
    assert "SHARED" not in processes["orchestrator"].env
    assert len({p.port for p in processes.values()}) == 4
