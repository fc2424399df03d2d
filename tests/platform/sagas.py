"""A saga definition that lives outside the project's packages: an escrow.

Registered only through configuration (``SAGA_DEFINITIONS=tests.platform.sagas``). An
escrow debits an account of the shipped account participant and locks an item of the
test-only vault, in two phases, then stamps the deal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from contracts.envelope import Model
from contracts.orders import Money
from contracts.transfers import AccountId, Posting
from engine.definition import (
    CommandContext,
    Failure,
    OutcomeContext,
    OutcomeEvent,
    SagaDefinition,
    action,
    two_phase,
)
from orchestrator.registry import Setup
from orchestrator.start import StartMessage
from tests.platform.vault import Key, Lock, Stamp

REQUESTED, DONE, FAILED = "escrow.requested", "escrow.done", "escrow.failed"


class EscrowRequested(Model):
    """Body of ``escrow.requested``."""

    escrow_id: Key | None = None
    account: AccountId
    amount: Money
    item: Key


class EscrowData(Model):
    """The saga's data."""

    escrow_id: Key
    account: AccountId
    amount: Money
    item: Key


class EscrowOutcome(Model):
    """Body of both outcomes."""

    escrow_id: Key
    reason_code: str | None = None
    needs_attention: bool = False


Ctx = CommandContext[EscrowData]


def _debit(x: Ctx) -> BaseModel:
    return Posting(account_id=x.data.account, amount=x.data.amount, currency="EUR",
                   reference=x.data.escrow_id)


def _lock(x: Ctx) -> BaseModel:
    return Lock(item=x.data.item, units=1)


def _stamp(x: Ctx) -> BaseModel:
    return Stamp(document=x.data.escrow_id)


def _outcome(x: OutcomeContext[EscrowData]) -> OutcomeEvent:
    if x.failure is None:
        return OutcomeEvent(DONE, EscrowOutcome(escrow_id=x.data.escrow_id))
    return OutcomeEvent(FAILED, EscrowOutcome(escrow_id=x.data.escrow_id,
                                              reason_code=x.failure.reason_code,
                                              needs_attention=x.needs_attention))


def _refusal(key: str, fields: Mapping[str, Any], failure: Failure) -> OutcomeEvent:
    return OutcomeEvent(FAILED, EscrowOutcome(escrow_id=key, reason_code=failure.reason_code))


def escrow(version: int, setup: Setup) -> SagaDefinition[EscrowData]:
    """The escrow; version 2 stamps the deal before anything else."""
    policy, settle = setup.tuning.policies()
    holds = (two_phase("debit", "account", "debit", _debit, policy=policy, settle_policy=settle),
             two_phase("lock", "vault", "lock", _lock, policy=policy, settle_policy=settle))
    stamp = (action("stamp", "vault", "stamp", _stamp, policy=policy, settle_policy=settle),)
    return SagaDefinition(
        name="escrow", version=version, data_model=EscrowData, deadline=setup.tuning.deadline,
        start=StartMessage(exchange="escrows", requested=REQUESTED, model=EscrowRequested,
                           key_field="escrow_id",
                           data=lambda r, key: EscrowData(escrow_id=key, account=r.account,
                                                          amount=r.amount, item=r.item),
                           completed=DONE, failed=FAILED, refusal=_refusal,
                           completed_model=EscrowOutcome, failed_model=EscrowOutcome),
        before_commit=(holds, stamp) if version == 1 else (stamp, holds),
        outcome=_outcome, reasons=("VAULT_REFUSED", "VAULT_EMPTY"))


def definitions(setup: Setup) -> list[SagaDefinition[EscrowData]]:
    """Version 1 only."""
    return [escrow(1, setup)]


def both_versions(setup: Setup) -> list[SagaDefinition[EscrowData]]:
    """Versions 1 and 2, as after a deploy that adds version 2."""
    return [escrow(1, setup), escrow(2, setup)]
