"""The error tree shared by every process. ``retryable`` says whether trying again may help."""

from __future__ import annotations

from contracts.errors import SagaSystemError

__all__ = ["SagaSystemError"]  # the root, defined with the contracts; the rest is below


class InvalidMessage(SagaSystemError):
    """A message that can never be processed; it goes to the dead-letter queue."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownSaga(InvalidMessage):
    """A reply or command names a saga that does not exist."""


class SagaQuarantined(InvalidMessage):
    """The message's saga cannot be decoded and was set aside; nothing applies to it."""


class ReplyRefused(InvalidMessage):
    """A reply from a broker user that may not answer its command, or one that names another
    step or operation than its command."""


class TransientError(SagaSystemError):
    """Infrastructure trouble (a dropped connection, a conflict) that a retry may fix."""

    retryable = True


class StoreUnavailable(TransientError):
    """The database did not answer."""


class VersionConflict(TransientError):
    """An optimistic-lock check failed: someone else changed the document first."""


class BrokerUnavailable(TransientError):
    """The broker did not answer a query."""


class PublishFailed(TransientError):
    """The broker did not confirm a publish."""


class StoreFailed(SagaSystemError):
    """The database refused an operation for a reason we do not recognise."""


class DuplicateKey(SagaSystemError):
    """An insert found its key already taken."""
