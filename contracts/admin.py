"""Operator actions: what an operator asks of one saga, the orchestrator's answer, and the
follow-up event a client gets when a saga it was told needs attention is settled at last.

Actions travel on the admin exchange (``saga.admin``) with the routing key
``admin.action``, which only the operator user may write; the orchestrator answers each one
with ``admin.result`` on the same exchange, its causation id being the action's message id.

- ``cancel``: as ``<topic>.cancel`` from a client, with the operator's name in the history.
- ``retry``: a saga that needs attention gets a fresh attempt budget for each confirm,
  undo or notice that failed for good, and runs them again.
- ``resolve``: a person repaired a saga that needs attention by hand; it ends ``resolved``.

A saga that published a failure with ``needs_attention: true`` and then ends through a
retry or a resolve publishes ``<topic>.resolved`` with its final status.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Annotated, Any

from pydantic import Field, create_model

from contracts.cancels import BusinessKey, topic
from contracts.envelope import Identifier, Model
from contracts.reasons import ReasonCode

ADMIN_ACTION = "admin.action"  # routing key and message type of an action
ADMIN_RESULT = "admin.result"  # routing key and message type of its answer

Note = Annotated[str, Field(max_length=500)]
Operator = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]


class Action(StrEnum):
    """What an operator can ask of a saga."""

    CANCEL = "cancel"
    RETRY = "retry"
    RESOLVE = "resolve"


class AdminAction(Model):
    """One operator action on one saga (named by its full id, ``<definition>:<key>``)."""

    saga_id: Identifier
    action: Action
    operator: Operator
    note: Note = ""


class AdminResult(Model):
    """The orchestrator's answer to one action: done, or refused and why."""

    saga_id: Identifier
    action: Action
    accepted: bool
    status: str | None = None  # the saga's status after the action (None: no such saga)
    detail: Note = ""


def resolved_key(requested: str) -> str:
    """The routing key of the follow-up event of a definition whose start is ``requested``."""
    return f"{topic(requested)}.resolved"


@cache
def resolved_model(name: str, key_field: str) -> type[Model]:
    """The body of ``<topic>.resolved`` for one definition, keyed like its start message."""
    key: Any = (BusinessKey, ...)
    return create_model(
        f"{name}Resolved", __base__=Model,
        __doc__=f"The saga of {key_field}, announced as needing attention, ended at last.",
        **{key_field: key, "status": (str, ...), "reason_code": (ReasonCode | None, None),
           "detail": (Note, "")})
