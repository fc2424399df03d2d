"""The root of the one error tree every part of the system raises from.

It lives here, in the bottom layer, so that the contracts' own errors join it too; the
infrastructure's subtree (transient, store, broker, invalid message) is in infra.errors.
"""

from __future__ import annotations

from typing import ClassVar


class SagaSystemError(Exception):
    """Base of every error this system raises on purpose. ``retryable`` says whether
    trying again may help."""

    retryable: ClassVar[bool] = False
