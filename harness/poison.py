"""Poison messages for every queue the system consumes, for the chaos run.

Each kind is something a real producer gets wrong: bytes that are not JSON, JSON of the
wrong shape, an unknown message type, a missing or wrong envelope field, a body over the
size limit, negative or absurd quantities and prices.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from contracts.envelope import (
    MAX_BODY_BYTES,
    SCHEMA_VERSION_HEADER,
    WireMessage,
    new_message_id,
    utcnow,
)
from contracts.registry import ORDER_REQUESTED, STEP_REPLY
from contracts.topology import REPLY_KEY, Topology
from workers.catalog import registered

_ITEM = {"sku": "SKU-000", "quantity": 1, "unit_price": "1.00"}


@dataclass(frozen=True, slots=True)
class Target:
    """Where a poison message goes: an exchange and routing key feeding one queue."""

    queue: str
    exchange: str
    routing_key: str
    message_type: str


def targets(t: Topology) -> list[Target]:
    """Every consumer queue, with a message type it expects."""
    found = [Target(t.requests_queue, t.orders_exchange, ORDER_REQUESTED, ORDER_REQUESTED),
             Target(t.replies_queue, t.replies_exchange, REPLY_KEY, STEP_REPLY)]
    for service, participant in registered().items():
        found.append(Target(t.command_queue(service), t.commands_exchange, service,
                            next(iter(participant.routes))))
    return found


def _envelope(kind: str, body: bytes) -> WireMessage:
    return WireMessage(body=body, message_id=f"poison-{new_message_id()}",
                       correlation_id="poison-saga", type=kind, timestamp=utcnow(),
                       headers={SCHEMA_VERSION_HEADER: 1, "x-chaos-poison": "1"})


def _order(**changes: object) -> bytes:
    body: dict[str, object] = {"customer_id": "cust-000", "items": [dict(_ITEM)]}
    body.update(changes)
    return json.dumps(body).encode()


Maker = Callable[[Target], WireMessage]

KINDS: dict[str, Maker] = {
    "not-json": lambda t: _envelope(t.message_type, b"\xff\xfe not json {"),
    "wrong-shape": lambda t: _envelope(t.message_type, b'{"hello": "world"}'),
    "unknown-type": lambda t: _envelope("saga.nonsense", _order()),
    "no-correlation-id": lambda t: replace(_envelope(t.message_type, _order()),
                                           correlation_id=None),
    "bad-schema-version": lambda t: replace(_envelope(t.message_type, _order()),
                                            headers={SCHEMA_VERSION_HEADER: 99}),
    "oversized": lambda t: _envelope(t.message_type, b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}'),
    "negative-quantity": lambda t: _envelope(
        t.message_type, _order(items=[{**_ITEM, "quantity": -5}])),
    "absurd-price": lambda t: _envelope(
        t.message_type, _order(items=[{**_ITEM, "unit_price": "1e30"}])),
    "zero-price": lambda t: _envelope(t.message_type, _order(items=[{**_ITEM, "unit_price": "0"}])),
}


# Order requests come from outside and need no envelope, so envelope faults are not poison
# there: only internal queues get them.
ENVELOPE_KINDS = frozenset({"no-correlation-id", "bad-schema-version"})


def random_poison(rng: random.Random, topology: Topology) -> tuple[Target, str, WireMessage]:
    """One poison message for a random queue."""
    target = rng.choice(targets(topology))
    kinds = sorted(KINDS if target.queue != topology.requests_queue
                   else set(KINDS) - ENVELOPE_KINDS)
    kind = rng.choice(kinds)
    message = KINDS[kind](target)
    return target, kind, replace(message, headers={**message.headers, "x-chaos-poison": kind})
