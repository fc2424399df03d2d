"""The chaos run's control of the local broker never waits on a hung ``rabbitmqctl``.

The commands are small shell scripts standing in for RabbitMQ's tools, so the real broker
the other tests use is never touched; what each was asked to do is logged to a file.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from harness.broker import BrokerDown, LocalBroker


def tool(directory: Path, name: str, body: str) -> str:
    """An executable script that logs its arguments, then runs ``body``."""
    path = directory / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> {directory}/calls\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def calls(directory: Path) -> list[str]:
    return (directory / "calls").read_text().splitlines()


def broker(directory: Path, ctl_body: str, deadline: float = 0.5) -> LocalBroker:
    return LocalBroker(ctl=tool(directory, "rabbitmqctl", ctl_body),
                       server=(tool(directory, "rabbitmq-server", "exit 0"), "-detached"),
                       kill=(tool(directory, "kill-node", "exit 0"),),
                       deadline=deadline, startup_deadline=deadline)


async def test_a_hung_call_is_killed_at_its_deadline(tmp_path: Path) -> None:
    hung = broker(tmp_path, "exec sleep 30")
    began = time.monotonic()
    assert await hung.ctl_call("stop_app") is False
    assert time.monotonic() - began < 10  # killed at 0.5 s, not after the 30 s sleep


async def test_a_node_that_starts_again_is_not_restarted_hard(tmp_path: Path) -> None:
    assert await broker(tmp_path, "exit 0").recover() == "start_app"
    assert calls(tmp_path) == ["rabbitmqctl start_app"]


async def test_a_hung_node_is_killed_and_started_again(tmp_path: Path) -> None:
    # start_app hangs; once the node has been started again, await_startup answers.
    body = ('case "$1" in start_app) exec sleep 30;; '
            f'await_startup) grep -q rabbitmq-server {tmp_path}/calls;; esac')
    assert await broker(tmp_path, body).recover() == "hard restart"
    assert calls(tmp_path) == ["rabbitmqctl start_app", "kill-node ",
                               "rabbitmq-server -detached", "rabbitmqctl await_startup"]


async def test_a_node_that_never_comes_back_is_reported(tmp_path: Path) -> None:
    with pytest.raises(BrokerDown, match="did not come back"):
        await broker(tmp_path, "exec sleep 30").recover()


async def test_a_missing_tool_means_no_local_broker(tmp_path: Path) -> None:
    assert await LocalBroker(ctl=str(tmp_path / "absent")).answers() is False


async def test_a_node_slow_to_come_back_is_asked_again_until_it_answers(tmp_path: Path) -> None:
    """await_startup fails at once while the new node is not reachable yet; it is asked
    again (this failed before: one refusal was taken for a node that never came back)."""
    body = ('case "$1" in start_app) exit 1;; '
            f'await_startup) n=$(grep -c await_startup {tmp_path}/calls); [ "$n" -ge 3 ];; '
            'esac')
    slow = LocalBroker(ctl=tool(tmp_path, "rabbitmqctl", body),
                       server=(tool(tmp_path, "rabbitmq-server", "exit 0"), "-detached"),
                       kill=(tool(tmp_path, "kill-node", "exit 0"),),
                       deadline=5, startup_deadline=30)
    assert await slow.recover() == "hard restart"
    assert calls(tmp_path).count("rabbitmqctl await_startup") == 3
