"""The broker's definitions file: vhost, users, least-privilege permissions and the topology.

Derived from ``layout()`` over what is registered (the definitions' start messages and the
participant services), so that deploy/rabbitmq/definitions.json (which RabbitMQ loads at
boot) cannot drift from the names the processes use; a test compares them.

    python -m catalog.rabbitmq [--vhost saga] [--namespace N] [--out PATH]

Users get an empty password hash, which cannot log in: passwords are set from the environment
at deploy time (deploy/rabbitmq/entrypoint.sh), never committed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from catalog.plan import registered_plan
from contracts.admin import ADMIN_ACTION, ADMIN_RESULT
from contracts.topology import Plan, Topology, layout, queue_arguments, service_user

type Json = str | int | bool | list[Json] | dict[str, Json]

DEFAULT_VHOST = "saga"
ORCHESTRATOR_USER = "saga-orchestrator"
CLIENT_USER = "saga-client"
# Operators (sagactl, the console) send actions to the orchestrator and read its answers.
OPERATOR_USER = "saga-operator"
# The names RabbitMQ gives server-named queues (queue.declare with an empty name).
SERVER_NAMED = r"amq\.gen-.*"
# Widened on purpose: aio-pika's robust channel (sagactl, the tests) names a temporary queue
# itself, amq_<uuid4 hex>, so that it can declare it again after a reconnect (a server-named
# queue cannot be re-declared by name). Only such names match; no system queue does.
ROBUST_NAMED = r"amq_[0-9a-f]{32}"
TEMPORARY = (SERVER_NAMED, ROBUST_NAMED)
NOTHING = "^$"


@dataclass(frozen=True, slots=True)
class Grant:
    """A user's permissions in the vhost, as anchored regular expressions.

    RabbitMQ's rules: publishing needs ``write`` on the exchange; consuming (and basic.get)
    needs ``read`` on the queue; binding a queue needs ``write`` on the queue and ``read`` on
    the exchange; declaring or deleting anything needs ``configure`` on it.
    """

    user: str
    configure: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class TopicGrant:
    """Routing keys a user may publish (``write``) and bind (``read``) on one topic exchange."""

    user: str
    exchange: str
    write: str
    read: str


def literal(name: str) -> str:
    """A regular expression matching exactly this name (names use letters, digits, . _ -)."""
    return "".join(f"\\{c}" if c in r".^$*+?()[]{}|\\" else c for c in name)


def anchored(*patterns: str) -> str:
    """One pattern matching the whole of a resource name, or nothing at all."""
    if not patterns:
        return NOTHING
    return f"^{patterns[0]}$" if len(patterns) == 1 else f"^({'|'.join(patterns)})$"


def grants(t: Topology, plan: Plan) -> tuple[Grant, ...]:
    """What each process may do: nobody configures, except the client's temporary queues."""
    public = sorted({t.exchange(e.exchange) for e in plan.entries})
    admin = [t.admin_exchange] if plan.entries else []
    # Partitioned, the orchestrators read every partition's queue and forward cancels and
    # operator actions to a partition through the replies exchange (orchestrator.forward).
    partitions = literal(t.partition_queue(0)).removesuffix("0") + "[0-9]+"
    orchestrator = Grant(
        ORCHESTRATOR_USER, NOTHING,
        write=anchored(*map(literal, (*public, t.commands_exchange, t.replies_exchange,
                                      t.dead_letter_exchange, *admin))),
        read=anchored(*(literal(t.requests_queue_of(e.definition)) for e in plan.entries),
                      *(literal(t.cancels_queue_of(e.definition)) for e in plan.entries
                        if e.cancel is not None),
                      literal(t.replies_queue), partitions,
                      *(literal(t.admin_queue) for _ in admin)))
    services = [
        Grant(service_user(s), NOTHING,
              write=anchored(literal(t.replies_exchange), literal(t.dead_letter_exchange)),
              read=anchored(literal(t.command_queue(s))))
        for s in plan.services
    ]
    # The client publishes requests and reads outcomes through temporary queues it
    # declares and binds itself (bind: write on the queue, read on the exchange).
    client = Grant(
        CLIENT_USER, anchored(*TEMPORARY),
        write=anchored(*map(literal, public), *TEMPORARY),
        read=anchored(*map(literal, public), *TEMPORARY))
    # Only the operator may act on sagas: the admin queue is the one way in.
    operator = Grant(
        OPERATOR_USER, anchored(*TEMPORARY),
        write=anchored(*map(literal, admin), *TEMPORARY),
        read=anchored(*map(literal, admin), *TEMPORARY))
    return orchestrator, *services, client, *((operator,) if admin else ())


def topic_grants(t: Topology, plan: Plan) -> tuple[TopicGrant, ...]:
    """Routing keys on each public exchange: only the orchestrator announces outcomes, and a
    client can only request, cancel, and bind to outcomes."""
    out: list[TopicGrant] = []
    for exchange in sorted({e.exchange for e in plan.entries}):
        entries = [e for e in plan.entries if e.exchange == exchange]
        outcomes = anchored(*(literal(k) for e in entries for k in e.outcomes))
        requests = anchored(*(literal(k) for e in entries
                              for k in (e.requested, e.cancel) if k is not None))
        out += [TopicGrant(ORCHESTRATOR_USER, t.exchange(exchange), write=outcomes, read=NOTHING),
                TopicGrant(CLIENT_USER, t.exchange(exchange), write=requests, read=outcomes)]
    if plan.entries:
        out += [TopicGrant(ORCHESTRATOR_USER, t.admin_exchange, write=anchored(
                    literal(ADMIN_RESULT)), read=NOTHING),
                TopicGrant(OPERATOR_USER, t.admin_exchange, write=anchored(literal(ADMIN_ACTION)),
                           read=anchored(literal(ADMIN_RESULT)))]
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Limit:
    """A length limit for some queues, set by policy: quorum queue arguments cannot change
    on an existing queue, a policy can. A full queue refuses publishes (every consumer queue
    is declared with x-overflow reject-publish, which at-least-once dead-lettering needs), so
    the publisher is pushed back and nothing is dropped."""

    name: str
    queues: tuple[str, ...]
    max_length: int
    max_bytes: int
    # Dead-letter queues are declared without x-overflow: the policy makes them refuse too,
    # instead of dropping their oldest message.
    overflow: str | None = None


def limits(t: Topology, plan: Plan) -> tuple[Limit, ...]:
    """Requests and cancels are what clients can flood; commands and replies follow the
    sagas in flight; dead letters wait for an operator."""
    queues = layout(t, plan)[1]
    public = {name for e in plan.entries
              for name in (t.requests_queue_of(e.definition), t.cancels_queue_of(e.definition))}
    return (
        Limit("saga-requests", tuple(q.name for q in queues if q.name in public),
              max_length=100_000, max_bytes=256 * 2**20),
        Limit("saga-work", tuple(q.name for q in queues
                                 if not q.dead_letter_queue and q.name not in public),
              max_length=1_000_000, max_bytes=2**30),
        Limit("saga-dead-letters", tuple(q.name for q in queues if q.dead_letter_queue),
              max_length=100_000, max_bytes=256 * 2**20, overflow="reject-publish"),
    )


def policies(vhost: str, t: Topology, plan: Plan) -> list[Json]:
    """The limits as RabbitMQ policies (exact queue names, so nothing else is caught)."""
    out: list[Json] = []
    for limit in limits(t, plan):
        definition: dict[str, Json] = {"max-length": limit.max_length,
                                       "max-length-bytes": limit.max_bytes}
        if limit.overflow is not None:
            definition["overflow"] = limit.overflow
        out.append({"vhost": vhost, "name": limit.name, "apply-to": "queues", "priority": 10,
                    "pattern": anchored(*map(literal, limit.queues)), "definition": definition})
    return out


def definitions(vhost: str = DEFAULT_VHOST, namespace: str = "",
                plan: Plan | None = None) -> dict[str, Json]:
    """The document ``rabbitmqctl import_definitions`` and ``load_definitions`` accept
    (for what is registered, unless a plan is given)."""
    t = Topology(namespace)
    plan = registered_plan() if plan is None else plan
    exchanges, queues = layout(t, plan)
    users: list[Json] = [{"name": g.user, "password_hash": "",
                          "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}
                         for g in grants(t, plan)]
    permissions: list[Json] = [{"user": g.user, "vhost": vhost, "configure": g.configure,
                                "write": g.write, "read": g.read} for g in grants(t, plan)]
    topic_permissions: list[Json] = [{"user": g.user, "vhost": vhost, "exchange": g.exchange,
                                      "write": g.write, "read": g.read}
                                     for g in topic_grants(t, plan)]
    return {
        "vhosts": [{"name": vhost}],
        "users": users,
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        "exchanges": [{"name": e.name, "vhost": vhost, "type": e.kind, "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}
                      for e in exchanges],
        "queues": [{"name": q.name, "vhost": vhost, "durable": True, "auto_delete": False,
                    "arguments": dict(queue_arguments(q, t))} for q in queues],
        "bindings": [{"source": exchange, "vhost": vhost, "destination": q.name,
                      "destination_type": "queue", "routing_key": key, "arguments": {}}
                     for q in queues for exchange, key in q.bindings],
        "policies": policies(vhost, t, plan),
    }


def render(document: dict[str, Json]) -> str:
    """Stable JSON text, as committed."""
    return json.dumps(document, indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the definitions, or write them to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m catalog.rabbitmq",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vhost", default=DEFAULT_VHOST)
    parser.add_argument("--namespace", default="")
    parser.add_argument("--out", type=Path, help="write here instead of standard output")
    args = parser.parse_args(argv)
    text = render(definitions(args.vhost, args.namespace))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
