"""Decode incoming messages and hand them to the runner. Bad input raises; the boundary
dead-letters it."""

from __future__ import annotations

import uuid
from typing import Any

from contracts.commands import StepReply
from contracts.envelope import CodecError, WireMessage, is_identifier, read_envelope, read_payload
from contracts.orders import OrderRequested, order_total
from contracts.registry import ORDER_REQUESTED, STEP_REPLY
from infra.errors import InvalidMessage
from orchestrator.engine import Event, ReplyReceived
from orchestrator.runner import SagaRunner
from orchestrator.sagas.order import NAME as ORDER_SAGA
from orchestrator.sagas.order import OrderSagaData

MAX_ORDER_TOTAL = 1_000_000_000


class OrchestratorHandlers:
    """The orchestrator's two consumers: order requests and participant replies."""

    def __init__(self, runner: SagaRunner) -> None:
        self._runner = runner

    async def on_order_request(self, message: WireMessage) -> None:
        """Start an order saga. Only the body is required from outside publishers."""
        if message.type not in (None, "", ORDER_REQUESTED):
            raise CodecError(f"unexpected message type {message.type!r} on the order request queue")
        request = read_payload(message, OrderRequested)
        if message.message_id is not None and not is_identifier(message.message_id):
            # It becomes the causation id of every command this saga sends.
            raise CodecError("message_id must be 1-200 printable ASCII characters without spaces")
        order_id = request.order_id or _order_id_for(message.message_id)
        total = order_total(request.items)
        if total > MAX_ORDER_TOTAL:
            raise InvalidMessage(f"order total {total} exceeds {MAX_ORDER_TOTAL}")
        data = OrderSagaData(order_id=order_id, customer_id=request.customer_id,
                             items=request.items, total=total)
        causation = message.message_id or order_id
        traceparent = _text(message.headers.get("traceparent"))
        await self._runner.start(ORDER_SAGA, order_id, data, causation, traceparent)

    async def on_reply(self, message: WireMessage) -> None:
        """Feed a participant's reply to its saga."""
        envelope = read_envelope(message)
        if envelope.message_type != STEP_REPLY:
            raise CodecError(f"unexpected message type {envelope.message_type!r} on the reply queue")
        if envelope.causation_id is None:
            raise CodecError("a reply must carry the id of its command in x-causation-id")
        reply = read_payload(message, StepReply)
        if reply.saga_id != envelope.correlation_id:
            raise CodecError("reply saga_id does not match its correlation_id")
        command_id = envelope.causation_id

        def event(now: float) -> Event:
            return ReplyReceived(command_id, reply.outcome, now, reply.reason_code, reply.detail)

        await self._runner.apply(reply.saga_id, event, envelope.message_id, envelope.traceparent)


def _order_id_for(message_id: str | None) -> str:
    # Derived from the message id, so a redelivered request maps to the same order id
    # and cannot start a second saga.
    if message_id:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"order-request:{message_id}").hex
    return uuid.uuid4().hex


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) and len(value) <= 55 else None
