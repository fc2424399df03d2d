"""Playing every participant on the in-memory broker: answer a saga's pending commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contracts.commands import Outcome, StepReply
from contracts.envelope import Envelope, encode, new_message_id, utcnow
from contracts.registry import STEP_REPLY
from contracts.topology import REPLY_KEY, Topology, service_user
from engine.state import OpKey, SagaState
from infra.adapters.memory_bus import InMemoryBroker
from tests.plan import PLAN

Answer = Callable[[OpKey], Outcome | None]  # None: leave the command unanswered


async def answer_commands(broker: InMemoryBroker, topology: Topology, state: SagaState[Any],
                          answer: Answer) -> None:
    """Take every command queued for any service; answer those of ``state``'s saga as
    ``answer`` says, each as its service's broker user."""
    for service in PLAN.services:
        participant = broker.connect(service_user(service))
        while (command := await participant.get(topology.command_queue(service))):
            sent = state.sent(command.message_id or "")
            outcome = None if sent is None else answer(sent)
            if sent is None or outcome is None:
                continue
            envelope = Envelope(message_id=new_message_id(), correlation_id=state.saga_id,
                                causation_id=command.message_id, message_type=STEP_REPLY,
                                timestamp=utcnow())
            await participant.publish(topology.replies_exchange, REPLY_KEY, encode(
                envelope, StepReply(saga_id=state.saga_id, step=sent[0], operation=sent[1],
                                    outcome=outcome)))
