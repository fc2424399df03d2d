"""The envelope every message carries, and the codec between models and wire messages.

The envelope travels in AMQP properties and headers, so the body of every message is
exactly its payload model as JSON. Any AMQP client can read and write it:

    message_id      -> property ``message_id``
    correlation_id  -> property ``correlation_id`` (the saga id, ``<definition>:<key>``)
    causation_id    -> header ``x-causation-id`` (the message this one answers)
    message_type    -> property ``type``
    schema_version  -> header ``x-schema-version``
    timestamp       -> property ``timestamp``
    traceparent     -> header ``traceparent`` (W3C trace context, optional)
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.errors import SagaSystemError

SCHEMA_VERSION = 1
MAX_BODY_BYTES = 64 * 1024
# What the broker accepts at all (rabbitmq.conf max_message_size): a publisher of anything
# larger gets its channel closed, and no consumer ever reads it whole. Above MAX_BODY_BYTES,
# so that a body a little too large still reaches a consumer and is refused with a reason.
MAX_MESSAGE_BYTES = 4 * MAX_BODY_BYTES

CAUSATION_HEADER = "x-causation-id"
SCHEMA_VERSION_HEADER = "x-schema-version"
TRACEPARENT_HEADER = "traceparent"

# Header values are text or integers: the AMQP codec loses float precision and cannot carry bytes.
HeaderValue = str | int | bool | None
MAX_ID_LENGTH = 200
_ID_PATTERN = r"^[\x21-\x7e]+$"
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_PATTERN)]


class Model(BaseModel):
    """Base of every message payload: immutable, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Model):
    """Identity and lineage of one message."""

    message_id: Identifier
    correlation_id: Identifier
    causation_id: Identifier | None = None
    message_type: Identifier
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    timestamp: datetime
    traceparent: str | None = Field(default=None, max_length=55)


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A transport-neutral message: body bytes plus AMQP-style properties."""

    body: bytes
    message_id: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    timestamp: datetime | None = None
    headers: Mapping[str, HeaderValue] = field(default_factory=dict)
    # The broker user that published it. The transport sets it on every publish, and
    # RabbitMQ refuses a user_id that is not the connection's user: it cannot be forged.
    user_id: str | None = None
    # Where a command's reply goes: a routing key of the replies exchange (the partition of
    # the command's saga, contracts.topology.partition_key); none means the shared one.
    reply_to: str | None = None


class CodecError(SagaSystemError, ValueError):
    """A message that cannot be decoded; ``reason`` is one readable line for the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_identifier(value: str) -> bool:
    """True for 1-200 printable ASCII characters without spaces (message ids and the like)."""
    return 0 < len(value) <= MAX_ID_LENGTH and re.fullmatch(_ID_PATTERN, value) is not None


def derived_id(base: str, suffix: str) -> str:
    """``<base>:<suffix>``, hashed down when that would exceed the identifier limit, so that
    it is deterministic and always valid."""
    candidate = f"{base}:{suffix}"
    if len(candidate) <= MAX_ID_LENGTH:
        return candidate
    return f"{hashlib.sha256(base.encode()).hexdigest()}:{suffix}"


def new_message_id() -> str:
    """A fresh random message id."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def encode(envelope: Envelope, payload: Model) -> WireMessage:
    """Serialise a payload under its envelope."""
    return to_wire(envelope, payload.model_dump_json().encode())


def envelope_headers(causation_id: str | None, traceparent: str | None,
                     schema_version: int = SCHEMA_VERSION) -> dict[str, HeaderValue]:
    """The headers that carry an envelope's fields which have no AMQP property."""
    headers: dict[str, HeaderValue] = {SCHEMA_VERSION_HEADER: schema_version}
    if causation_id is not None:
        headers[CAUSATION_HEADER] = causation_id
    if traceparent is not None:
        headers[TRACEPARENT_HEADER] = traceparent
    return headers


def to_wire(envelope: Envelope, body: bytes) -> WireMessage:
    """Put an already serialised body under its envelope."""
    return WireMessage(
        body=body,
        message_id=envelope.message_id,
        correlation_id=envelope.correlation_id,
        type=envelope.message_type,
        timestamp=envelope.timestamp,
        headers=envelope_headers(envelope.causation_id, envelope.traceparent,
                                 envelope.schema_version),
    )


def read_envelope(message: WireMessage) -> Envelope:
    """Validate the envelope of an internal message; every field is required."""
    headers = message.headers
    try:
        return Envelope(
            message_id=_require(message.message_id, "message_id"),
            correlation_id=_require(message.correlation_id, "correlation_id"),
            causation_id=_text_header(headers, CAUSATION_HEADER),
            message_type=_require(message.type, "type"),
            schema_version=_int_header(headers, SCHEMA_VERSION_HEADER),
            timestamp=_require(message.timestamp, "timestamp"),
            traceparent=_text_header(headers, TRACEPARENT_HEADER),
        )
    except ValidationError as e:
        raise CodecError(f"invalid envelope: {describe(e)}") from e


def read_payload[M: Model](message: WireMessage, model: type[M]) -> M:
    """Validate a body against a payload model, with a size limit checked first."""
    check_size(message)
    try:
        return model.model_validate_json(message.body)
    except ValidationError as e:
        raise CodecError(f"invalid {model.__name__}: {describe(e)}") from e


def check_size(message: WireMessage) -> None:
    """Refuse bodies above the limit before parsing them."""
    if len(message.body) > MAX_BODY_BYTES:
        raise CodecError(f"body of {len(message.body)} bytes exceeds the {MAX_BODY_BYTES} limit")


def describe(error: ValidationError) -> str:
    """A one-line summary of a pydantic validation error (at most three problems)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(parts)
    suffix = f" (+{more} more)" if more > 0 else ""
    return "; ".join(parts) + suffix


def _require[T](value: T | None, name: str) -> T:
    if value is None:
        raise CodecError(f"invalid envelope: property {name} is missing")
    return value


def _text_header(headers: Mapping[str, HeaderValue], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise CodecError(f"invalid envelope: header {name} must be a string")
    return value


def _int_header(headers: Mapping[str, HeaderValue], name: str) -> int:
    value = headers.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"invalid envelope: header {name} must be an integer")
    return value
