"""The funds transfer, version 1: a simplified two-phase commit across accounts.

    debit ─┐ (prepare: hold the amount)       ┌─ COMMIT (confirm both) ─► notify_sender
    credit ┘ (prepare: accept the posting)    ┘

Both prepares vote without changing committed balances: the debit holds the money, the
credit only records that it will arrive. When both vote yes, both are confirmed; when
either refuses, times out or fails, both are cancelled (an unprepared one by an empty
rollback). A cancel that fails for good leaves the transfer needing attention.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from contracts.envelope import Model
from contracts.notices import Notify
from contracts.orders import Money
from contracts.transfers import (
    TRANSFER_COMPLETED,
    TRANSFER_FAILED,
    TRANSFER_REQUESTED,
    AccountId,
    Currency,
    Posting,
    TransferCompleted,
    TransferFailed,
    TransferId,
    TransferReason,
    TransferRequested,
)
from engine.definition import (
    DEFAULT_TUNING,
    CommandContext,
    Failure,
    OutcomeContext,
    OutcomeEvent,
    ParamsBuilder,
    SagaDefinition,
    Tuning,
    notice,
    two_phase,
)
from orchestrator.start import InvalidRequest, StartMessage, is_key

if TYPE_CHECKING:
    from orchestrator.registry import Setup

NAME = "transfer"
COMPLETED_NOTICE = "transfer_completed"
FAILED_NOTICE = "transfer_failed"


class TransferSagaData(Model):
    """What the transfer saga knows."""

    transfer_id: TransferId
    from_account: AccountId
    to_account: AccountId
    amount: Money
    currency: Currency


Ctx = CommandContext[TransferSagaData]


def _debit(x: Ctx) -> Model:
    d = x.data
    return Posting(account_id=d.from_account, amount=d.amount, currency=d.currency,
                   reference=d.transfer_id)


def _credit(x: Ctx) -> Model:
    d = x.data
    return Posting(account_id=d.to_account, amount=d.amount, currency=d.currency,
                   reference=d.transfer_id)


def _notify(kind: str) -> ParamsBuilder[TransferSagaData]:
    def build(x: Ctx) -> Model:
        d = x.data
        text = (f"Transfer {d.transfer_id} of {d.amount} {d.currency} to {d.to_account} is done."
                if x.failure is None
                else f"Transfer {d.transfer_id} did not go through: {x.failure.reason}")
        return Notify(reference=d.transfer_id, recipient=d.from_account, kind=kind,
                      text=text[:500])
    return build


def _outcome(x: OutcomeContext[TransferSagaData]) -> OutcomeEvent:
    d = x.data
    if x.failure is None:
        return OutcomeEvent(TRANSFER_COMPLETED, TransferCompleted(**d.model_dump()))
    return OutcomeEvent(TRANSFER_FAILED, TransferFailed(
        **d.model_dump(), reason_code=x.failure.reason_code, reason=x.failure.reason[:500],
        needs_attention=x.needs_attention))


def _data(request: TransferRequested, key: str) -> TransferSagaData:
    if request.from_account == request.to_account:
        raise InvalidRequest("from_account and to_account are the same account")
    return TransferSagaData(transfer_id=key, from_account=request.from_account,
                            to_account=request.to_account, amount=request.amount,
                            currency=request.currency)


def _refusal(key: str, fields: Mapping[str, Any], failure: Failure) -> OutcomeEvent:
    readable = {name: value for name in ("from_account", "to_account", "currency")
                if isinstance(value := fields.get(name), str) and is_key(value)}
    return OutcomeEvent(TRANSFER_FAILED, TransferFailed(
        transfer_id=key, **readable, reason_code=failure.reason_code,
        reason=failure.reason[:500]))


START: StartMessage[TransferSagaData] = StartMessage(
    exchange="transfers", requested=TRANSFER_REQUESTED, model=TransferRequested,
    key_field="transfer_id", data=_data, completed=TRANSFER_COMPLETED, failed=TRANSFER_FAILED,
    refusal=_refusal, completed_model=TransferCompleted, failed_model=TransferFailed)


def transfer_saga(tuning: Tuning = DEFAULT_TUNING) -> SagaDefinition[TransferSagaData]:
    """Version 1 of the funds transfer."""
    policy, settle = tuning.policies()
    return SagaDefinition(
        name=NAME,
        version=1,
        description="A funds transfer: debit and credit prepared in parallel, then both "
                    "confirmed or both cancelled.",
        data_model=TransferSagaData,
        deadline=tuning.deadline,
        start=START,
        reasons=tuple(TransferReason),
        before_commit=(
            (two_phase("debit", "account", "debit", _debit, policy=policy,
                       settle_policy=settle),
             two_phase("credit", "account", "credit", _credit, policy=policy,
                       settle_policy=settle)),
        ),
        after_commit=(
            (notice("notify_sender", "notification", "send", _notify(COMPLETED_NOTICE),
                    policy=settle),),
        ),
        on_failure=(
            (notice("notify_failure", "notification", "send", _notify(FAILED_NOTICE),
                    policy=settle),),
        ),
        outcome=_outcome,
        # Two transfers in opposite directions deadlock on their account locks; the
        # younger gives way and tries again (at most 3 times a victim in all).
        deadlock_retries=2, deadlock_backoff=1.5,
    )


def definitions(setup: Setup) -> list[SagaDefinition[TransferSagaData]]:
    """Every registered version of the funds transfer (the registration entry point)."""
    return [transfer_saga(setup.tuning)]
