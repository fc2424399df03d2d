"""How a saga is started from outside: its public start message and its idempotency key.

A definition's ``StartMessage`` names the public topic exchange, the start routing key and
its payload model, the field that carries the business key, how the saga's data is built
from a valid request, and the outcome routing keys. The orchestrator consumes every
registered start message the same way (``orchestrator.handlers``).

The idempotency key is the rule every start message gets: the request's business key when
it carries one, else a key derived from the AMQP ``message_id`` (so a redelivered request
maps to the same saga and cannot start a second one). A request with neither cannot be
deduplicated and is refused: it goes to the dead-letter queue with that reason, because
there is no id to answer to. Inside the store a saga's id is ``<definition>:<key>``, so a
transfer id can never collide with an order id; public messages carry the business key.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic

from pydantic import ValidationError

from contracts.admin import resolved_key, resolved_model
from contracts.cancels import cancel_key, cancel_models, cancel_refused_key
from contracts.envelope import CodecError, Model, WireMessage, check_size, describe, is_identifier
from contracts.errors import SagaSystemError
from engine.definition import D, Failure, OutcomeEvent

# The business keys the platform accepts: what fits in a saga id and a routing header.
KEY_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class InvalidRequest(SagaSystemError, ValueError):
    """A request that reads but cannot be served (a total too large, an unknown service);
    it is answered with INVALID_REQUEST and this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Refusal = Callable[[str, Mapping[str, Any], Failure], OutcomeEvent]


@dataclass(frozen=True, slots=True)
class StartMessage(Generic[D]):
    """The public side of a definition."""

    exchange: str  # public topic exchange (the namespace is added to it)
    requested: str  # routing key (and message type) of the start message
    model: type[Model]  # its body
    key_field: str  # the body field carrying the business key
    data: Callable[[Any, str], D]  # a valid request and its key -> the saga's data
    completed: str  # outcome routing keys
    failed: str
    # The failure outcome of a request that could not start a saga: the key and whatever
    # fields of the body could be read.
    refusal: Refusal
    # The reason a request gets when its key is taken by a saga of other data.
    duplicate_reason: str = "DUPLICATE_ID"
    # The outcome bodies, for the published contract (the AsyncAPI document).
    completed_model: type[Model] | None = None
    failed_model: type[Model] | None = None

    @property
    def cancel(self) -> str:
        """The routing key of cancel requests (contracts.cancels)."""
        return cancel_key(self.requested)

    @property
    def cancel_refused(self) -> str:
        """The routing key of the answer to a cancel that came too late."""
        return cancel_refused_key(self.requested)

    @property
    def cancel_models(self) -> tuple[type[Model], type[Model]]:
        """The cancel request and refusal bodies, keyed like the start message."""
        return cancel_models(self.model.__name__.removesuffix("Requested"), self.key_field)

    @property
    def resolved(self) -> str:
        """The routing key of the follow-up to an outcome that said "needs attention"."""
        return resolved_key(self.requested)

    @property
    def resolved_model(self) -> type[Model]:
        """The body of the follow-up event (contracts.admin)."""
        return resolved_model(self.model.__name__.removesuffix("Requested"), self.key_field)

    def resolved_event(self, saga: str, status: str, reason_code: str | None,
                       detail: str) -> OutcomeEvent:
        """The follow-up event of the saga ``saga`` (its full id), ended as ``status``."""
        body = self.resolved_model.model_validate({
            self.key_field: split_saga_id(saga)[1], "status": status,
            "reason_code": reason_code, "detail": detail[:500]})
        return OutcomeEvent(self.resolved, body)


@dataclass(frozen=True, slots=True)
class Request:
    """A start message as read: its key, its fields, and either the saga's data or what is
    wrong with it."""

    key: str
    fields: dict[str, Any]
    data: Model | None
    problem: str | None = None


def read_request(start: StartMessage[Any], message: WireMessage) -> Request:
    """Read and validate a start message. Raises CodecError when it cannot even be answered
    (not a JSON object, no idempotency key, a bad message id); otherwise any problem is in
    ``Request.problem``, to be answered with INVALID_REQUEST."""
    if message.type not in (None, "", start.requested):
        raise CodecError(f"unexpected message type {message.type!r} for {start.requested}")
    if message.message_id is not None and not is_identifier(message.message_id):
        # It becomes the causation id of every command the saga sends.
        raise CodecError("message_id must be 1-200 printable ASCII characters without spaces")
    check_size(message)
    try:
        fields = json.loads(message.body)
    except (ValueError, UnicodeDecodeError) as e:
        raise CodecError(f"body is not JSON: {e}") from e
    if not isinstance(fields, dict):
        raise CodecError("body is not a JSON object")
    key = business_key(fields, message.message_id, start.key_field)
    if key is None:
        raise CodecError(f"no idempotency key: the request has no valid {start.key_field} "
                         "and no message_id")
    try:
        return Request(key, fields, start.data(start.model.model_validate(fields), key))
    except ValidationError as e:
        return Request(key, fields, None, describe(e))
    except InvalidRequest as e:
        return Request(key, fields, None, e.reason)


@dataclass(frozen=True, slots=True)
class Cancel:
    """A cancel request as read: the saga's business key, and the reason or the problem."""

    key: str
    reason: str
    problem: str | None = None


def read_cancel(start: StartMessage[Any], message: WireMessage) -> Cancel:
    """Read a cancel request. Raises CodecError when it names no saga (it cannot be
    answered); a request that names one but is otherwise invalid has a ``problem``."""
    if message.type not in (None, "", start.cancel):
        raise CodecError(f"unexpected message type {message.type!r} for {start.cancel}")
    check_size(message)
    try:
        fields = json.loads(message.body)
    except (ValueError, UnicodeDecodeError) as e:
        raise CodecError(f"body is not JSON: {e}") from e
    key = fields.get(start.key_field) if isinstance(fields, dict) else None
    if not isinstance(key, str) or not is_key(key):
        raise CodecError(f"a cancel must name its saga with a valid {start.key_field}")
    try:
        body = start.cancel_models[0].model_validate(fields)
    except ValidationError as e:
        return Cancel(key, "", describe(e))
    return Cancel(key, str(getattr(body, "reason", "")))


def business_key(fields: Mapping[str, Any], message_id: str | None, key_field: str) -> str | None:
    """The idempotency key of a start message, or None when it has none (see the module)."""
    key = fields.get(key_field)
    if isinstance(key, str) and is_key(key):
        return key
    if key is None and message_id and is_identifier(message_id):
        return uuid.uuid5(uuid.NAMESPACE_URL, f"request:{message_id}").hex
    return None


def is_key(value: str) -> bool:
    """True for a usable business key."""
    return re.fullmatch(KEY_PATTERN, value) is not None


def saga_id(definition: str, key: str) -> str:
    """The store's id of the saga of ``definition`` for business key ``key``."""
    return f"{definition}:{key}"


def split_saga_id(value: str) -> tuple[str, str]:
    """(definition, business key) of a saga id."""
    definition, _, key = value.partition(":")
    return definition, key
