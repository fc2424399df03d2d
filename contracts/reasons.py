"""Reason codes: why a saga, or one of its steps, failed.

An open set. The platform's own codes are defined here, once, for every definition; each
saga definition adds the business codes its participants answer with (``PAYMENT_DECLINED``
belongs to the order saga, ``INSUFFICIENT_FUNDS`` to the transfer).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

ReasonCode = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Z][A-Z0-9_]*$")]


class PlatformReason(StrEnum):
    """Failures the platform produces, whatever the definition."""

    INVALID_REQUEST = "INVALID_REQUEST"  # the start message failed validation
    TIMEOUT = "TIMEOUT"  # no reply in time, or the saga's deadline passed
    SERVICE_ERROR = "SERVICE_ERROR"  # a participant kept failing, or failed for good
    CANCELLED = "CANCELLED"  # a cancel arrived before the commit point
    COMPENSATION_FAILED = "COMPENSATION_FAILED"  # an undo failed permanently
    CONFIRMATION_FAILED = "CONFIRMATION_FAILED"  # a confirm after the commit point failed
    DEADLOCK = "DEADLOCK"  # chosen as the victim of a wait-for cycle
    LOCK_TIMEOUT = "LOCK_TIMEOUT"  # a step waited longer than its lock wait timeout


PLATFORM_REASONS: frozenset[str] = frozenset(PlatformReason)


def is_business(code: str) -> bool:
    """True for a business refusal (a definition's own code), False for a platform failure."""
    return code not in PLATFORM_REASONS
