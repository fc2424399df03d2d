"""Broker-side facts: RabbitMQ's own message counters and the depth of our queues.

Message counts come from the broker's global counters (``rabbit_global_counters``, read
with ``rabbitmqctl eval``; the management plugin is not enabled on this broker). They are
global, so they are exact only while nothing else uses the broker: the benchmark also
measures their growth over an idle interval and reports it as background traffic.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import aio_pika

_EXPR = (
    "M = rabbit_global_counters:overview(), "
    "P = maps:get([{protocol,amqp091}], M), "
    "Q = maps:get([{protocol,amqp091},{queue_type,rabbit_quorum_queue}], M), "
    "C = maps:get([{protocol,amqp091},{queue_type,rabbit_classic_queue}], M), "
    "D = fun(K) -> maps:get(K, Q) + maps:get(K, C) end, "
    "io:format(\"counters ~b ~b ~b ~b~n\", [maps:get(messages_received_total, P), "
    "maps:get(messages_confirmed_total, P), D(messages_delivered_total), "
    "D(messages_acknowledged_total)])."
)


@dataclass(frozen=True, slots=True)
class BrokerCounters:
    """Cumulative AMQP 0-9-1 message counters of the whole broker."""

    published: int
    confirmed: int
    delivered: int
    acknowledged: int

    def __sub__(self, other: BrokerCounters) -> BrokerCounters:
        return BrokerCounters(self.published - other.published, self.confirmed - other.confirmed,
                              self.delivered - other.delivered, self.acknowledged - other.acknowledged)


async def counters() -> BrokerCounters:
    """Read the broker's counters now (about half a second: it runs rabbitmqctl)."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "eval", _EXPR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    found = re.search(rb"counters (\d+) (\d+) (\d+) (\d+)", out)
    if found is None:
        raise RuntimeError(f"rabbitmqctl eval gave no counters: {out[-300:]!r} {err[-300:]!r}")
    return BrokerCounters(*(int(g) for g in found.groups()))


async def queue_depth(url: str, queue: str) -> int:
    """Messages ready in one of our queues (a passive declare, which changes nothing)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()
