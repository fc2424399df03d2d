"""Cancelling a saga from outside: the request, and the answer when it comes too late.

Every definition with a start message ``<topic>.requested`` can be cancelled with
``<topic>.cancel`` on the same exchange, naming the saga by the business key field of its
start message (``{"order_id": "o-1", "reason": "customer changed their mind"}``).

- Before the commit point the saga undoes what it did and fails with ``CANCELLED``: the
  answer is the definition's ordinary failure outcome (``order.failed``).
- Otherwise the answer is ``<topic>.cancel_refused``, saying why (``CancelRefusal``).
- Cancelling a saga that is already cancelled changes nothing and is not answered again:
  its failure outcome is (or will be) the answer.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Annotated, Any

from pydantic import Field, create_model

from contracts.envelope import Model

BusinessKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Reason = Annotated[str, Field(max_length=500)]


class CancelRefusal(StrEnum):
    """Why a cancel was not honoured."""

    INVALID_REQUEST = "INVALID_REQUEST"  # the key reads, the rest of the request does not
    NOT_FOUND = "NOT_FOUND"  # no saga has this key (yet)
    COMMITTED = "COMMITTED"  # past the commit point: it can only move forward
    FAILED = "FAILED"  # already failed (or failing) for another reason
    NEEDS_ATTENTION = "NEEDS_ATTENTION"  # stopped, waiting for an operator


def topic(requested: str) -> str:
    """``order`` for ``order.requested``: the prefix of a definition's routing keys."""
    return requested.rpartition(".")[0] or requested


def cancel_key(requested: str) -> str:
    """The routing key (and message type) of the definition's cancel requests."""
    return f"{topic(requested)}.cancel"


def cancel_refused_key(requested: str) -> str:
    """The routing key (and message type) of the definition's cancel refusals."""
    return f"{topic(requested)}.cancel_refused"


@cache
def cancel_models(name: str, key_field: str) -> tuple[type[Model], type[Model]]:
    """The cancel request and the refusal bodies of one definition (``name`` is its
    CamelCase name, ``key_field`` the business key field of its start message)."""
    key: Any = (BusinessKey, ...)
    request = create_model(f"{name}Cancel", __base__=Model,
                           __doc__=f"Cancel the saga of {key_field}, if it has not committed.",
                           **{key_field: key, "reason": (Reason, "")})
    refused = create_model(
        f"{name}CancelRefused", __base__=Model,
        __doc__=f"A cancel of the saga of {key_field} was not honoured, and why.",
        **{key_field: key, "reason_code": (CancelRefusal, ...),
           "status": (str | None, None), "detail": (Reason, "")})
    return request, refused
