"""A vhost of one test module, provisioned from the generated definitions as production is.

The vhost and every user carry a random suffix, so that runs never meet; passwords are set
with ``rabbitmqctl change_password``, as deploy/rabbitmq/entrypoint.sh does.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from catalog.rabbitmq import Json, definitions, render

RABBITMQCTL_ENV = "SAGA_TEST_RABBITMQCTL"


def rabbitmqctl(*args: str, check: bool = True, stdin: str | None = None
                ) -> subprocess.CompletedProcess[str]:
    """Run rabbitmqctl (or the command in $SAGA_TEST_RABBITMQCTL) against the test broker."""
    command = shlex.split(os.environ.get(RABBITMQCTL_ENV, "rabbitmqctl"))
    if shutil.which(command[0]) is None:
        raise RuntimeError(f"{command[0]} not found: these tests manage users of the test broker; "
                           f"set {RABBITMQCTL_ENV} (e.g. 'docker exec rabbit rabbitmqctl')")
    result = subprocess.run([*command, "--silent", *args], capture_output=True, text=True,
                            input=stdin, timeout=60, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class SecureVhost:
    """The vhost, its users (base name -> real name) and their passwords."""

    vhost: str
    host: str
    users: Mapping[str, str]
    passwords: Mapping[str, str]

    def url(self, base_user: str) -> str:
        """The AMQP URL with which a process logs in as one of the definition's users."""
        user = self.users[base_user]
        return f"amqp://{user}:{self.passwords[base_user]}@{self.host}/{quote(self.vhost, safe='')}"


def scoped(suffix: str) -> dict[str, Json]:
    """The generated definitions with the vhost and every user name made unique."""
    document: dict[str, Any] = definitions(vhost=f"saga-test-{suffix}")
    for user in document["users"]:
        user["name"] = f"{user['name']}-{suffix}"
    for grant in (*document["permissions"], *document["topic_permissions"]):
        grant["user"] = f"{grant['user']}-{suffix}"
    return document


def _wait_for_bindings(vhost: str, expected: int, timeout: float = 30.0) -> None:
    # import_definitions only starts the import; bindings are imported last.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = rabbitmqctl("list_bindings", "-p", vhost, "source_name", check=False).stdout
        # Bindings to the default exchange have an empty source and do not count.
        if sum(1 for line in listed.splitlines() if line.strip()) >= expected:
            return
        time.sleep(0.3)
    raise TimeoutError(f"the definitions of {vhost} were not imported in {timeout:.0f}s")


@contextmanager
def provisioned(amqp_url: str) -> Iterator[SecureVhost]:
    """Import the definitions into a fresh vhost, set passwords; remove it all afterwards."""
    suffix = secrets.token_hex(4)
    document: dict[str, Any] = scoped(suffix)
    vhost = document["vhosts"][0]["name"]
    users = {u["name"].removesuffix(f"-{suffix}"): u["name"] for u in document["users"]}
    # Distinctive, so that a test can search every output for them.
    passwords = {base: f"Pw{secrets.token_hex(12)}" for base in users}
    parts = urlsplit(amqp_url)
    host = f"{parts.hostname}:{parts.port or 5672}"
    try:
        # From standard input: the packaged rabbitmqctl runs as the rabbitmq user, who may
        # not read this process's temporary files.
        rabbitmqctl("import_definitions", stdin=render(document))
        _wait_for_bindings(vhost, len(document["bindings"]))
        for base, user in users.items():
            rabbitmqctl("change_password", user, passwords[base])
        yield SecureVhost(vhost, host, users, passwords)
    finally:
        rabbitmqctl("delete_vhost", vhost, check=False)
        for user in users.values():
            rabbitmqctl("delete_user", user, check=False)
