"""W3C trace context on messages: one trace per saga, one span per message.

The order request may carry a ``traceparent``; its trace id becomes the saga's, and every
command, reply and outcome event of the saga carries the same trace id, so a tracing
backend joins one saga's work across processes. A message's span id is derived from its
message id, so a message re-published by the outbox relay names the same span.
"""

from __future__ import annotations

import hashlib
import re
import secrets

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a version-00 traceparent, or None if absent or malformed (the W3C
    rule: a receiver that cannot parse it starts a new trace rather than failing)."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.match(traceparent)
    if match is None or match[1] == _INVALID_TRACE or match[2] == _INVALID_SPAN:
        return None
    return match[1]


def new_trace_id() -> str:
    """A random trace id, for a saga whose request came without trace context."""
    return secrets.token_hex(16)


def span_id(message_id: str) -> str:
    """The span id of the message with this id (never the all-zero invalid id)."""
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:16]
    return digest if digest != _INVALID_SPAN else "0" * 15 + "1"


def traceparent(trace_id: str, message_id: str) -> str:
    """The traceparent header of one message of a trace (sampled)."""
    return f"00-{trace_id}-{span_id(message_id)}-01"


def child(parent: str | None, message_id: str) -> str | None:
    """The traceparent of a message sent because of ``parent`` (a reply to a command)."""
    trace_id = trace_id_of(parent)
    return None if trace_id is None else traceparent(trace_id, message_id)
