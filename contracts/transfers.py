"""The public contract of the funds transfer: requests in, outcomes out (exchange
``transfers``), and the parameters of the account participant's operations."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from contracts.envelope import Model
from contracts.orders import Money
from contracts.reasons import ReasonCode

TransferId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
AccountId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]

TRANSFER_REQUESTED = "transfer.requested"
TRANSFER_COMPLETED = "transfer.completed"
TRANSFER_FAILED = "transfer.failed"


class TransferReason(StrEnum):
    """The transfer's business reasons, next to the platform's (``contracts.reasons``)."""

    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    ACCOUNT_REFUSED = "ACCOUNT_REFUSED"


class TransferRequested(Model):
    """Body of ``transfer.requested``: move an amount from one account to another."""

    transfer_id: TransferId | None = None
    from_account: AccountId
    to_account: AccountId
    amount: Money
    currency: Currency


class TransferCompleted(Model):
    """Body of ``transfer.completed``: debited and credited, each exactly once."""

    transfer_id: TransferId
    from_account: AccountId
    to_account: AccountId
    amount: Money
    currency: Currency


class TransferFailed(Model):
    """Body of ``transfer.failed``: nothing moved (or, with ``needs_attention``, an undo
    failed and an operator must look). Fields the request did not carry readably are
    absent (``INVALID_REQUEST``)."""

    transfer_id: TransferId
    from_account: AccountId | None = None
    to_account: AccountId | None = None
    amount: Money | None = None
    currency: Currency | None = None
    reason_code: ReasonCode
    reason: str = Field(max_length=500)
    needs_attention: bool = False


class Posting(Model):
    """account.debit and account.credit: one side of a transfer. Prepare holds (a debit)
    or announces (a credit) without changing the balance; confirm applies it; cancel
    releases it."""

    account_id: AccountId
    amount: Money
    currency: Currency
    reference: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
