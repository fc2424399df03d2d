"""Oversized messages on the real broker: refused at the door, or read and dead-lettered
truncated, and the orchestrator carries on.

The broker runs with the shipped limit (``max_message_size``, MAX_MESSAGE_BYTES;
scripts/ensure-services gives the local test broker the same one at run time).
"""

from __future__ import annotations

import json

import pytest

from contracts.envelope import MAX_BODY_BYTES, MAX_MESSAGE_BYTES, WireMessage, new_message_id
from contracts.registry import ORDER_REQUESTED
from contracts.topology import Topology, dead_letter_queue
from infra.adapters.rabbit import RabbitTransport
from infra.consumer import ORIGINAL_SIZE_HEADER, REASON_HEADER, TRUNCATED_BODY_BYTES
from infra.errors import PublishFailed
from orchestrator.start import saga_id
from orchestrator.store_memory import MemorySagaStore
from tests.contract.test_boundary import eventually

pytestmark = pytest.mark.timeout(60)

LINE = {"sku": "SKU-A", "quantity": 1, "unit_price": "3.50"}


def request(body: bytes) -> WireMessage:
    """An order request as a client publishes it."""
    return WireMessage(body, message_id=new_message_id(), type=ORDER_REQUESTED)


async def test_a_ten_mebibyte_request_is_refused_by_the_broker(
        rabbit: RabbitTransport, topology: Topology, saga_store: MemorySagaStore) -> None:
    """The publisher learns at once (its publish fails with the broker's reason); nothing
    reaches the orchestrator, which then starts the next order as usual."""
    huge = json.dumps({"order_id": "o-huge", "customer_id": "c1", "items": [LINE],
                       "note": "x" * 10 * 2**20}).encode()
    with pytest.raises(PublishFailed, match=f"larger than configured max size {MAX_MESSAGE_BYTES}"):
        await rabbit.publish(topology.orders_exchange, ORDER_REQUESTED, request(huge))

    await rabbit.publish(topology.orders_exchange, ORDER_REQUESTED, request(json.dumps(
        {"order_id": "o-next", "customer_id": "c1", "items": [LINE]}).encode()))
    started = await eventually(lambda: saga_store.load(saga_id("order", "o-next")), 10.0)
    assert started.state.saga_id == "order:o-next"
    assert await saga_store.load(saga_id("order", "o-huge")) is None


async def test_a_body_over_the_consumers_limit_is_dead_lettered_truncated(
        rabbit: RabbitTransport, topology: Topology, saga_store: MemorySagaStore) -> None:
    """Under the broker's limit but over the consumers': read, refused with the reason, and
    copied to the dead-letter queue with only its start and its original size."""
    body = json.dumps({"order_id": "o-big", "customer_id": "c1", "items": [LINE],
                       "note": "x" * (MAX_BODY_BYTES * 2)}).encode()
    assert MAX_BODY_BYTES < len(body) < MAX_MESSAGE_BYTES
    await rabbit.publish(topology.orders_exchange, ORDER_REQUESTED, request(body))

    dead = await eventually(lambda: rabbit.get(dead_letter_queue(topology.requests_queue)), 10.0)
    assert dead.body == body[:TRUNCATED_BODY_BYTES]
    assert dead.headers[ORIGINAL_SIZE_HEADER] == len(body)
    assert "exceeds" in str(dead.headers[REASON_HEADER])
    assert await saga_store.load(saga_id("order", "o-big")) is None
