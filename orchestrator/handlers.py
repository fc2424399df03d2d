"""Decode incoming messages and hand them to the runner. Bad input raises; the boundary
dead-letters it.

Every registered start message is handled the same way. A request whose idempotency key
can be read but which fails validation is answered with the definition's failure outcome
(``INVALID_REQUEST`` and the reason), and a copy goes to the dead-letter queue for
operators; only a request with no key at all goes to the dead-letter queue alone.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, NoReturn

from contracts.admin import ADMIN_ACTION, ADMIN_RESULT, Action, AdminAction, AdminResult
from contracts.cancels import CancelRefusal
from contracts.commands import Outcome, StepReply, saga_of
from contracts.envelope import CodecError, WireMessage, read_envelope, read_payload
from contracts.reasons import PlatformReason
from contracts.registry import STEP_REPLY
from engine.decide import CancelRequested, Event, NoteKind, OperatorAction, ReplyReceived
from engine.definition import Failure, OutcomeEvent
from engine.state import SagaState, SagaStatus
from infra.errors import InvalidMessage, ReplyRefused, SagaQuarantined, UnknownSaga
from orchestrator.outbox import OutboxPublisher, outcome_message
from orchestrator.registry import AnyDefinition
from orchestrator.runner import Check, SagaRunner, Started
from orchestrator.senders import ReplySenders
from orchestrator.start import StartMessage, read_cancel, read_request, saga_id

log = logging.getLogger(__name__)
# The default: every service answers as its own broker user.
CHECKED = ReplySenders()


class Refused(InvalidMessage):
    """A start message answered with a failure outcome; its copy is dead-lettered too."""


class OrchestratorHandlers:
    """The orchestrator's consumers: start messages of each definition, and replies."""

    def __init__(self, runner: SagaRunner, outbox: OutboxPublisher,
                 exchange_of: dict[str, str], senders: ReplySenders = CHECKED,
                 on_refused: Callable[[str], None] = lambda service: None,
                 on_cancel: Callable[[str, str], None] = lambda definition, result: None,
                 admin_exchange: str = "",
                 on_action: Callable[[str, str, str], None] = lambda definition, action, result:
                 None, on_wait: Callable[[], None] = lambda: None) -> None:
        self._runner = runner
        self._outbox = outbox
        self._exchange_of = exchange_of  # definition -> its public exchange (namespaced)
        self._senders = senders
        self._on_refused = on_refused
        self._on_cancel = on_cancel
        self._admin_exchange = admin_exchange
        self._on_action = on_action
        self._on_wait = on_wait  # a step began to wait for a lock: look for deadlocks

    async def on_start(self, definition: AnyDefinition, message: WireMessage) -> None:
        """Start a saga of ``definition``. Only the body is required from outside publishers."""
        start = definition.start
        assert start is not None, f"{definition.name} has no start message"
        request = read_request(start, message)
        if request.data is None:
            await self._refuse(definition.name, start, request.key, request.fields,
                               request.problem or "invalid request")
        causation = message.message_id or request.key
        traceparent = _text(message.headers.get("traceparent"))
        started = await self._runner.start(definition.name, saga_id(definition.name, request.key),
                                           request.data, causation, traceparent)
        if started is Started.CONFLICT:
            # A valid request for a taken id: answered, and not a dead letter.
            await self._answer(definition.name, start, request.key, request.fields, Failure(
                start.duplicate_reason,
                f"{start.key_field} {request.key} already belongs to another request"),
                "duplicate")

    async def on_cancel(self, definition: AnyDefinition, message: WireMessage) -> None:
        """Cancel a saga of ``definition`` if it has not committed; otherwise say why not.

        Honoured, the saga compensates and its failure outcome (``CANCELLED``) is the
        answer; a saga already cancelled is left alone, its outcome answers again.
        """
        start = definition.start
        assert start is not None, f"{definition.name} has no start message"
        cancel = read_cancel(start, message)
        sid = saga_id(definition.name, cancel.key)
        causation = message.message_id or f"{sid}:cancel"
        if cancel.problem is not None:
            await self._refuse_cancel(definition.name, start, cancel.key,
                                      CancelRefusal.INVALID_REQUEST, None, cancel.problem,
                                      causation)
            return
        reason = cancel.reason or "cancelled on request"
        try:
            decision = await self._runner.apply(
                sid, lambda now: CancelRequested(reason, now), causation,
                _text(message.headers.get("traceparent")))
        except UnknownSaga:
            await self._refuse_cancel(definition.name, start, cancel.key,
                                      CancelRefusal.NOT_FOUND, None,
                                      f"no saga with {start.key_field} {cancel.key}", causation)
            return
        state = decision.state
        if state.failure is not None and state.failure.reason_code == PlatformReason.CANCELLED:
            self._on_cancel(definition.name, "honoured" if decision.changed else "repeated")
            return
        refusal = (CancelRefusal.NEEDS_ATTENTION if state.status is SagaStatus.NEEDS_ATTENTION
                   else CancelRefusal.FAILED if state.failure is not None
                   else CancelRefusal.COMMITTED)
        await self._refuse_cancel(definition.name, start, cancel.key, refusal, state.status,
                                  f"the saga is {state.status.value}", causation)

    async def _refuse_cancel(self, name: str, start: StartMessage[Any], key: str,
                             refusal: CancelRefusal, status: SagaStatus | None, detail: str,
                             causation: str) -> None:
        """Publish ``<topic>.cancel_refused``; its id follows from the cancel's, so a
        redelivered cancel is refused with the same message."""
        self._on_cancel(name, "refused")
        body = start.cancel_models[1].model_validate({
            start.key_field: key, "reason_code": refusal,
            "status": None if status is None else status.value, "detail": detail[:500]})
        suffix = f"cancel-refused:{uuid.uuid5(uuid.NAMESPACE_URL, causation).hex[:16]}"
        await self._outbox.publish_now(outcome_message(
            saga_id(name, key), self._exchange_of[name], OutcomeEvent(start.cancel_refused, body),
            datetime.now(UTC).timestamp(), suffix=suffix, causation_id=causation))

    async def _refuse(self, name: str, start: StartMessage[Any], key: str,
                      fields: dict[str, Any], reason: str) -> NoReturn:
        """Answer the client, then raise so that the boundary keeps a copy for operators."""
        await self._answer(name, start, key, fields,
                           Failure(PlatformReason.INVALID_REQUEST, reason), "refused")
        raise Refused(f"{PlatformReason.INVALID_REQUEST}: {reason}")

    async def _answer(self, name: str, start: StartMessage[Any], key: str,
                      fields: dict[str, Any], failure: Failure, suffix: str) -> None:
        """Publish the failure outcome of a request that started no saga."""
        event = start.refusal(key, fields, failure)
        await self._outbox.publish_now(outcome_message(
            saga_id(name, key), self._exchange_of[name], event, datetime.now(UTC).timestamp(),
            suffix=suffix))

    async def on_admin(self, message: WireMessage) -> None:
        """Apply an operator's action through the engine, and answer ``admin.result``.

        The broker lets only the operator user publish here. The answer's id follows from
        the action's, and an action delivered again is recognised by its message id (kept
        in the saga's history), so a redelivery is answered the same way.
        """
        envelope = read_envelope(message)
        if envelope.message_type != ADMIN_ACTION:
            raise CodecError(f"unexpected message type {envelope.message_type!r} on the admin "
                             "queue")
        action = read_payload(message, AdminAction)
        # A metric label: bounded to the registered definitions.
        definition = action.saga_id.partition(":")[0]
        definition = definition if definition in self._exchange_of else "unknown"
        event = partial(OperatorAction, action.action, action.operator, action.note,
                        action_id=envelope.message_id)
        try:
            decision = await self._runner.apply(action.saga_id, lambda now: event(now=now),
                                                envelope.message_id, envelope.traceparent)
        except UnknownSaga:
            self._on_action(definition, action.action, "not_found")
            await self._answer_action(action, envelope.message_id, False, None,
                                      f"no saga with id {action.saga_id}")
            return
        except SagaQuarantined as e:
            self._on_action(definition, action.action, "refused")
            await self._answer_action(action, envelope.message_id, False, "quarantined", str(e))
            return
        kinds = {n.kind: n.detail for n in decision.notes}
        state = decision.state
        status = state.status.value
        cancelled = state.failure is not None and state.failure.reason_code == (
            PlatformReason.CANCELLED)
        if action.action is Action.CANCEL and cancelled and not decision.changed:
            result, detail = "repeated", f"already cancelled; the saga is {status}"
        elif NoteKind.ACTION_REFUSED in kinds:
            result, detail = "refused", kinds[NoteKind.ACTION_REFUSED]
        elif NoteKind.ACTION_REPEATED in kinds:
            result, detail = "repeated", f"already done; the saga is {status}"
        else:
            result, detail = "accepted", f"the saga is {status}"
        self._on_action(definition, action.action, result)
        log.info("operator action %s by %s: %s (%s)", action.action.value, action.operator,
                 result, detail, extra={"saga_id": action.saga_id,
                                        "message_id": envelope.message_id})
        await self._answer_action(action, envelope.message_id, result != "refused", status,
                                  detail)

    async def _answer_action(self, action: AdminAction, action_id: str, accepted: bool,
                             status: str | None, detail: str) -> None:
        body = AdminResult(saga_id=action.saga_id, action=action.action, accepted=accepted,
                           status=status, detail=detail[:500])
        suffix = f"admin-result:{uuid.uuid5(uuid.NAMESPACE_URL, action_id).hex[:16]}"
        await self._outbox.publish_now(outcome_message(
            action.saga_id, self._admin_exchange, OutcomeEvent(ADMIN_RESULT, body),
            datetime.now(UTC).timestamp(), suffix=suffix, causation_id=action_id))

    def _authorizer(self, reply: StepReply, command_id: str, user_id: str | None,
                    refused_by: list[str]) -> Check:
        """The check of a reply against its stored saga: it must name its command's step and
        operation, and come from the broker user of that step's service. A refusal raises
        and appends the service to ``refused_by``."""

        def authorized(state: SagaState[Any], definition: AnyDefinition) -> None:
            sent = state.sent(command_id)
            if sent is None:
                return  # answers no command of this saga: the engine ignores it as stale
            step, operation = sent
            service = definition.for_data(state.data).steps[step].service
            problem: str | None
            if (reply.step, reply.operation) != sent:
                problem = (f"the reply names {reply.step} {reply.operation}, its command was "
                           f"{step} {operation}")
            else:
                problem = self._senders.problem(service, user_id)
            if problem is not None:
                refused_by.append(service)
                raise ReplyRefused(problem)

        return authorized

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
            return ReplyReceived(command_id, reply.outcome, now, reply.reason_code, reply.detail,
                                 reply.waiting)

        refused_by: list[str] = []
        try:
            # A retried round's participants answer under its run id (contracts.commands).
            await self._runner.apply(saga_of(reply.saga_id), event, envelope.message_id,
                                     envelope.traceparent,
                                     self._authorizer(reply, command_id, message.user_id,
                                                      refused_by))
        except ReplyRefused as e:
            # Counted here, once: a refusal on a cached state is checked again on the stored.
            self._on_refused(refused_by[-1])
            log.error("reply refused: %s", e, extra={
                "saga_id": reply.saga_id, "message_id": envelope.message_id})
            raise
        if reply.outcome is Outcome.WAITING:
            self._on_wait()


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) and len(value) <= 55 else None
