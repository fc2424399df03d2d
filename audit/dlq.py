"""Dead-letter queues hold only messages that really are invalid, each with its reason.

Every message of every ``<queue>.dlq`` of the namespace is read and validated again with
the real codec, the way its consumer validated it. One that passes now was a valid order,
command or reply dead-lettered by mistake (a handler that kept failing, a consumer that
crashed 20 times): an order or a step lost, unless an operator replays it.

The queues are read without losing anything (``client.dlq``).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from aiormq.exceptions import AMQPError, ChannelNotFoundEntity

from audit.snapshot import DeadLetterQueue, Snapshot, SubjectKind, Violation
from client.dlq import (
    DeadLetterReader,
    PortDeadLetters,
    TooManyDeadLetters,
    action_saga,
    command_saga,
    consumer_kind,
)
from contracts.commands import StepReply, saga_of
from contracts.envelope import (
    CodecError,
    WireMessage,
    read_envelope,
    read_payload,
)
from contracts.registry import STEP_REPLY
from contracts.topology import Plan, Topology, layout
from infra.consumer import BROKER_REASON_HEADER, REASON_HEADER
from infra.errors import PublishFailed
from infra.transport import Transport
from orchestrator.registry import DefinitionRegistry
from orchestrator.start import read_cancel, read_request
from workers.catalog import registered

DEAD_LETTERS_EXPLAINED = "dead letters carry a reason"
DEAD_LETTERS_INVALID = "dead letters are invalid"

DESCRIPTIONS = {
    DEAD_LETTERS_EXPLAINED: "each dead letter says why (x-dead-letter-reason, or RabbitMQ's "
                            "x-first-death-reason)",
    DEAD_LETTERS_INVALID: "no dead letter passes its consumer's validation now",
}


async def read_all(source: Transport | DeadLetterReader, topology: Topology,
                   definitions: DefinitionRegistry) -> tuple[DeadLetterQueue, ...]:
    """Every dead-letter queue of the namespace, read without losing anything."""
    reader = source if isinstance(source, DeadLetterReader) else PortDeadLetters(source)
    plan = definitions.plan().merged(Plan((), tuple(registered())))
    starts = {queue: definitions.latest(e.definition).start for e in plan.entries
              for queue in (topology.requests_queue_of(e.definition),
                            topology.cancels_queue_of(e.definition))}
    found = []
    for spec in layout(topology, plan)[1]:
        if not spec.dead_letter_queue:
            continue
        exchange, queue = spec.bindings[0]
        kind = consumer_kind(topology, queue, plan)
        start = starts.get(queue)
        try:
            messages = await reader.read(spec.name, exchange, queue)
        except TooManyDeadLetters as e:
            found.append(DeadLetterQueue(spec.name, kind, (), f"not read: {e}", start))
        except ChannelNotFoundEntity:
            found.append(DeadLetterQueue(spec.name, kind, (),
                                         "not read: no such queue or exchange", start))
        except (AMQPError, PublishFailed) as e:
            # Whatever was not copied back yet is still unacknowledged: it returns to the
            # queue when the channel closes. Nothing is lost, but this queue is unaudited.
            found.append(DeadLetterQueue(spec.name, kind, (), f"not read: {e!r}"[:300], start))
        else:
            found.append(DeadLetterQueue(spec.name, kind, messages, start=start))
    return tuple(found)


def check(s: Snapshot) -> list[Violation]:
    """Every dead letter has a reason and is still invalid."""
    out = []
    for q in s.dead_letters or ():
        for m in q.messages:
            out += _judge(q, m, s)
    return out


def _judge(q: DeadLetterQueue, m: WireMessage, s: Snapshot) -> list[Violation]:
    reason = _reason(m)
    valid = _still_valid(q, m, s)
    subject = valid or m.message_id or "(no message id)"
    kind: SubjectKind = "order" if valid else "message"
    out = []
    if reason is None:
        out.append(Violation(DEAD_LETTERS_EXPLAINED, subject,
                             f"{q.name}: message {m.message_id} has no reason header", kind))
    if valid:
        out.append(Violation(DEAD_LETTERS_INVALID, subject,
                             f"valid message dead-lettered: {m.type or 'untyped'} "
                             f"{m.message_id} in {q.name} (reason given: {reason or 'none'})",
                             kind))
    return out


def _reason(m: WireMessage) -> str | None:
    for name in (REASON_HEADER, BROKER_REASON_HEADER):
        value = m.headers.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _still_valid(q: DeadLetterQueue, m: WireMessage, s: Snapshot) -> str | None:
    """The saga or business key of a message its consumer would accept now, or None."""
    try:
        if q.source == "requests":
            return _request(q, m)
        if q.source == "cancels":
            # As on_cancel: a cancel that names its saga is answered, never dead-lettered.
            return None if q.start is None else read_cancel(q.start, m).key
        if q.source == "replies":
            return _reply(m, s.sagas.keys())
        if q.source == "admin":
            return action_saga(m)
        return command_saga(q.source, m)
    except CodecError:
        return None


def _request(q: DeadLetterQueue, m: WireMessage) -> str | None:
    # As orchestrator/handlers.py on_start: a request that reads and validates is valid.
    if q.start is None:
        return None
    request = read_request(q.start, m)
    return request.key if request.data is not None else None


def _reply(m: WireMessage, sagas: AbstractSet[str]) -> str | None:
    envelope = read_envelope(m)
    if envelope.message_type != STEP_REPLY or envelope.causation_id is None:
        return None
    reply = read_payload(m, StepReply)
    if reply.saga_id != envelope.correlation_id:
        return None
    # A reply for a saga that does not exist is rightly dead-lettered.
    return reply.saga_id if saga_of(reply.saga_id) in sagas else None
