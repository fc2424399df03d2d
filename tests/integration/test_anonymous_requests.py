"""A request from a client that sets no message id and no order id starts nothing.

pika (like the Java and Go clients) sets no AMQP message_id unless asked. Such a request
has no idempotency key: a redelivery could not be told from a new order, so it is refused
with that reason, every time, instead of starting a second saga and charging twice.
"""

from __future__ import annotations

import asyncio
import json

import pika
import pytest

from contracts.registry import ORDER_REQUESTED
from contracts.topology import Topology, dead_letter_queue
from infra.adapters.rabbit import RabbitTransport
from infra.consumer import REASON_HEADER
from orchestrator.store_memory import MemorySagaStore

pytestmark = pytest.mark.timeout(60)


def _publish_without_ids(amqp_url: str, exchange: str, body: bytes) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(exchange, ORDER_REQUESTED, body,
                              pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


async def test_a_redelivered_request_without_any_id_is_refused_every_time(
        amqp_url: str, topology: Topology, rabbit: RabbitTransport,
        saga_store: MemorySagaStore) -> None:
    """Published twice by pika with message_id=None and no order_id: two dead letters with
    the reason, and no saga."""
    body = json.dumps({"customer_id": "c1", "items": [
        {"sku": "SKU-A", "quantity": 1, "unit_price": "3.50"}]}).encode()
    for _ in range(2):
        await asyncio.to_thread(_publish_without_ids, amqp_url, topology.orders_exchange, body)
    dead = []
    for _ in range(100):
        if (m := await rabbit.get(dead_letter_queue(topology.requests_queue))) is not None:
            dead.append(m)
        if len(dead) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(dead) == 2
    # The copies carry a message id: the client library of the dead-letter publisher sets one.
    assert all(m.body == body for m in dead)
    assert all("no idempotency key" in str(m.headers[REASON_HEADER]) for m in dead)
    assert await saga_store.find(None, 10) == []
