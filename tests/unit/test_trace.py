"""W3C trace context: one trace per saga, a deterministic span per message."""

from __future__ import annotations

from decimal import Decimal

from contracts.orders import OrderItem
from contracts.topology import Topology
from contracts.trace import child, new_trace_id, span_id, trace_id_of, traceparent
from engine.decide import start
from orchestrator.outbox import outbox_messages
from sagas.order import OrderSagaData, order_saga

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def test_trace_id_is_read_from_a_valid_traceparent_only() -> None:
    """Malformed or all-zero values start a new trace instead of failing (W3C rule)."""
    assert trace_id_of(PARENT) == TRACE
    assert trace_id_of(None) is None
    assert trace_id_of("00-aa-bb-01") is None
    assert trace_id_of(f"00-{'0' * 32}-00f067aa0ba902b7-01") is None
    assert trace_id_of(f"00-{TRACE}-{'0' * 16}-01") is None
    assert trace_id_of(PARENT.upper()) is None


def test_child_keeps_the_trace_and_names_a_deterministic_span() -> None:
    """A reply is in its command's trace; re-publishing it names the same span."""
    reply = child(PARENT, "m-1:reply")
    assert reply is not None
    assert trace_id_of(reply) == TRACE
    assert reply == child(PARENT, "m-1:reply") == traceparent(TRACE, "m-1:reply")
    assert reply.split("-")[2] == span_id("m-1:reply") != span_id("m-2:reply")
    assert child(None, "m-1:reply") is None
    assert trace_id_of(traceparent(new_trace_id(), "x")) is not None
    assert new_trace_id() != new_trace_id()


def test_every_message_of_a_saga_carries_the_saga_trace() -> None:
    """The first commands of a saga carry its trace id, each under its own span."""
    data = OrderSagaData(order_id="o-1", customer_id="c-1", total=Decimal("2.00"),
                         items=(OrderItem(sku="S", quantity=1, unit_price=Decimal("2.00")),))
    decision = start(order_saga(), "order:o-1", data, 100.0, TRACE)
    messages = outbox_messages(decision, Topology("t"), "req-1", 100.0, None, "t.orders")
    assert messages
    parents = [m.traceparent for m in messages]
    assert all(trace_id_of(p) == TRACE for p in parents)
    assert len(set(parents)) == len(parents)
