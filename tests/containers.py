"""The containers the tests start where a Docker engine answers (testcontainers' core API).

Described as data first, so that what can go wrong without Docker (the URLs handed to the
tests, the broker's limit, a MongoDB without credentials) is tested without one. testcontainers
is imported only when a container is really started.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from contracts.envelope import MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One container: its image, the port the tests use, and when it is ready."""

    image: str
    port: int
    ready_log: str  # a regular expression the container logs once it serves
    command: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    setup: tuple[str, ...] = ()  # run inside the container once it is ready


RABBITMQ = ContainerSpec(
    "rabbitmq:3.13", 5672, r"Server startup complete",
    # The shipped broker's message size limit (deploy/rabbitmq/rabbitmq.conf).
    env={"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"-rabbit max_message_size {MAX_MESSAGE_BYTES}"})

# Transactions need a replica set. No MONGO_INITDB_ROOT_* variables: with a root user the
# image turns authentication on, which a replica set refuses without a key file.
MONGODB = ContainerSpec(
    "mongo:7", 27017, r"Waiting for connections", command="--replSet rs0 --bind_ip_all",
    setup=("mongosh", "--quiet", "--eval",
           "rs.initiate(); while (!db.hello().isWritablePrimary) { sleep(100) }"))


def amqp_url(host: str, port: int) -> str:
    """The URL of the container's broker (the image's guest user may log in remotely)."""
    return f"amqp://guest:guest@{host}:{port}/"


def mongo_url(host: str, port: int) -> str:
    """The URL of the container's single-node replica set. A direct connection: the member
    announces the container's own host name, which the host cannot resolve."""
    return f"mongodb://{host}:{port}/?directConnection=true"


@contextmanager
def running(spec: ContainerSpec) -> Iterator[tuple[str, int]]:
    """Start the container, wait until it serves, run its setup; yields (host, port)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = DockerContainer(spec.image).with_exposed_ports(spec.port).with_envs(**spec.env)
    if spec.command is not None:
        container = container.with_command(spec.command)
    container = container.waiting_for(LogMessageWaitStrategy(re.compile(spec.ready_log)))
    with container:
        if spec.setup:
            result = container.exec(list(spec.setup))
            if result.exit_code != 0:
                raise RuntimeError(f"{spec.image} setup failed: {result.output!r}")
        yield container.get_container_host_ip(), int(container.get_exposed_port(spec.port))
