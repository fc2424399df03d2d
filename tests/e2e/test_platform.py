"""The platform on real processes: the funds transfer, ad-hoc transactions, a team's own
saga and participant, and definition versions across a deploy.

The team's saga (an escrow) and participant (a vault) live in ``tests/platform``, outside
the project's packages, and are registered only through configuration.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from client.events import EventWatcher
from client.seed import add_deposit, transfer_message
from contracts.envelope import Envelope, Model, encode, new_message_id, utcnow
from contracts.reasons import PlatformReason
from contracts.transactions import (
    TRANSACTION_ABORTED,
    TRANSACTION_COMMITTED,
    TRANSACTION_REQUESTED,
    TransactionRequested,
)
from contracts.transfers import (
    TRANSFER_COMPLETED,
    TRANSFER_FAILED,
    TransferReason,
    TransferRequested,
)
from engine.state import SagaStatus
from tests.e2e.conftest import Deploy
from tests.e2e.harness import Deployment
from tests.platform.sagas import DONE, FAILED, REQUESTED, EscrowRequested
from tests.platform.vault import STOCK, Item
from workers.account import Entry, LedgerAccount

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TEAM = {"SAGA_DEFINITIONS": "tests.platform.sagas",
        "SAGA_PARTICIPANTS": "tests.platform.vault:SERVICE"}
FAST = {"SAGA_STEP_TIMEOUT": "2", "SAGA_STEP_ATTEMPTS": "2"}


async def _watch(d: Deployment, exchange: str, keys: tuple[str, ...],
                 key_field: str) -> EventWatcher:
    watcher = EventWatcher(d.transport, d.topology.exchange(exchange), keys, key_field)
    await watcher.start()
    return watcher


async def _outcomes(d: Deployment, watcher: EventWatcher, keys: set[str],
                    timeout: float = 90.0) -> dict[str, dict[str, Any]]:
    missing = await watcher.wait_for(keys, timeout)
    assert not missing, f"no outcome for {sorted(missing)}\n{d.cluster.logs()}"
    return {k: {"type": watcher.events[k].type, **watcher.events[k].body} for k in keys}


async def _publish(d: Deployment, exchange: str, key: str, body: Model) -> None:
    envelope = Envelope(message_id=new_message_id(), correlation_id="client", message_type=key,
                        timestamp=utcnow())
    await d.transport.publish(d.topology.exchange(exchange), key, encode(envelope, body))


async def _balance(d: Deployment, account: str) -> tuple[int, int]:
    found = await d.stores.services["account"].get(LedgerAccount, account)
    assert found is not None
    return found.balance, found.held


# --- the funds transfer ----------------------------------------------------------------------


async def test_transfers_move_money_once_or_not_at_all(deploy: Deploy) -> None:
    """A transfer the sender can afford completes, one beyond the balance fails with
    INSUFFICIENT_FUNDS and moves nothing, and the books balance afterwards."""
    d = await deploy()
    await add_deposit(d.stores.services["account"], "alice", 10_000)
    await add_deposit(d.stores.services["account"], "bob", 500)
    watcher = await _watch(d, "transfers", (TRANSFER_COMPLETED, TRANSFER_FAILED), "transfer_id")
    for transfer_id, source, target, amount in (("t-ok", "alice", "bob", "25.00"),
                                                ("t-poor", "bob", "alice", "99.00")):
        await d.transport.publish(d.topology.exchange("transfers"), "transfer.requested",
                                  transfer_message(TransferRequested(
                                      transfer_id=transfer_id, from_account=source,
                                      to_account=target, amount=Decimal(amount),
                                      currency="EUR")))
    outcomes = await _outcomes(d, watcher, {"t-ok", "t-poor"})
    assert outcomes["t-ok"]["type"] == TRANSFER_COMPLETED
    assert outcomes["t-poor"]["type"] == TRANSFER_FAILED
    assert outcomes["t-poor"]["reason_code"] == TransferReason.INSUFFICIENT_FUNDS
    report = await d.settled()
    assert report.ok, report.violations
    assert await _balance(d, "alice") == (7_500, 0)
    assert await _balance(d, "bob") == (3_000, 0)


# --- ad-hoc transactions across three participants -------------------------------------------


def _debit(tid: str, account: str, amount: str) -> dict[str, Any]:
    return {"service": "account", "operation": "debit",
            "params": {"account_id": account, "amount": amount, "currency": "EUR",
                       "reference": tid}}


def _lock(item: str, **flags: bool) -> dict[str, Any]:
    return {"service": "vault", "operation": "lock",
            "params": {"item": item, "units": 1, **flags}}


def _notify(tid: str) -> dict[str, Any]:
    return {"service": "notification", "operation": "send",
            "params": {"reference": tid, "recipient": "alice", "kind": "receipt",
                       "text": "paid"}}


async def _transact(d: Deployment, tid: str, *operations: dict[str, Any],
                    timeout: float | None = None) -> None:
    await _publish(d, "transactions", TRANSACTION_REQUESTED, TransactionRequested.model_validate(
        {"transaction_id": tid, "operations": list(operations), "timeout": timeout}))


async def _item(d: Deployment, name: str) -> tuple[int, int]:
    found = await d.stores.services["vault"].get(Item, name)
    return (STOCK, 0) if found is None else (found.free, found.locked)


async def _transactions(deploy: Deploy, **env: str) -> tuple[Deployment, EventWatcher]:
    d = await deploy(common={**TEAM, **env})
    await add_deposit(d.stores.services["account"], "alice", 10_000)
    await add_deposit(d.stores.services["account"], "poor", 100)
    return d, await _watch(d, "transactions", (TRANSACTION_COMMITTED, TRANSACTION_ABORTED),
                           "transaction_id")


async def test_an_ad_hoc_transaction_commits_everywhere(deploy: Deploy) -> None:
    """Prepared in parallel, then confirmed everywhere: every result says committed."""
    d, watcher = await _transactions(deploy)
    await _transact(d, "t-all", _debit("t-all", "alice", "12.50"), _lock("gold"),
                    _notify("t-all"))
    outcome = (await _outcomes(d, watcher, {"t-all"}))["t-all"]
    assert outcome["type"] == TRANSACTION_COMMITTED
    assert [r["status"] for r in outcome["results"]] == ["committed"] * 3
    assert await _balance(d, "alice") == (8_750, 0)
    assert await _item(d, "gold") == (STOCK - 1, 0)
    report = await d.settled()
    assert report.ok, report.violations


async def test_one_vote_to_roll_back_rolls_everyone_back(deploy: Deploy) -> None:
    """The account votes rollback-required (too little money): the vault's lock is
    cancelled, the notification never sent, and the reason is the account's."""
    d, watcher = await _transactions(deploy)
    await _transact(d, "t-no", _debit("t-no", "poor", "50.00"), _lock("gold"), _notify("t-no"))
    outcome = (await _outcomes(d, watcher, {"t-no"}))["t-no"]
    assert outcome["type"] == TRANSACTION_ABORTED
    assert outcome["reason_code"] == TransferReason.INSUFFICIENT_FUNDS
    statuses = [r["status"] for r in outcome["results"]]
    assert statuses[0] == "refused"
    assert statuses[1] in ("rolled_back", "not_run")
    assert statuses[2] == "not_run"
    assert await _item(d, "gold") == (STOCK, 0)
    assert await _balance(d, "poor") == (100, 0)
    report = await d.settled()
    assert report.ok, report.violations


async def test_a_participant_that_never_answers_times_the_transaction_out(
        deploy: Deploy) -> None:
    """With the vault down, the transaction's deadline passes: it rolls back with TIMEOUT.
    Its cancels wait in the vault's queue; once the vault is back, its fence turns them
    (and the late prepare) into no effect at all."""
    d, watcher = await _transactions(deploy, **FAST)
    d.cluster.processes["vault"].stop()
    await _transact(d, "t-slow", _debit("t-slow", "alice", "5.00"), _lock("gold"),
                    timeout=3.0)
    await asyncio.sleep(6.0)
    saga = await d.saga("t-slow", "transaction")
    assert saga.state.failure is not None
    assert saga.state.failure.reason_code == PlatformReason.TIMEOUT
    assert await _balance(d, "alice") == (10_000, 0)  # the debit's hold is released already
    await d.cluster.restart("vault")
    outcome = (await _outcomes(d, watcher, {"t-slow"}))["t-slow"]
    assert outcome["type"] == TRANSACTION_ABORTED
    assert outcome["reason_code"] == PlatformReason.TIMEOUT
    report = await d.settled(timeout=60.0)
    assert report.ok, report.violations
    assert await _item(d, "gold") == (STOCK, 0)


async def test_a_rollback_that_fails_for_good_needs_attention(deploy: Deploy) -> None:
    """The vault cannot cancel its lock: the transaction ends needing attention, says so in
    its outcome, and is listed as such."""
    d, watcher = await _transactions(deploy, **FAST)
    await _transact(d, "t-stuck", _lock("gold", broken_cancel=True),
                    _debit("t-stuck", "poor", "50.00"))
    outcome = (await _outcomes(d, watcher, {"t-stuck"}, timeout=120.0))["t-stuck"]
    assert outcome["type"] == TRANSACTION_ABORTED
    assert outcome["needs_attention"] is True
    assert [r["status"] for r in outcome["results"]] == ["failed", "refused"]
    saga = await d.saga("t-stuck", "transaction")
    assert saga.state.status is SagaStatus.NEEDS_ATTENTION
    assert await _item(d, "gold") == (STOCK - 1, 1)  # still locked: a person must look


async def test_an_invalid_transaction_is_answered_not_dropped(deploy: Deploy) -> None:
    """An unknown service, or parameters that do not match the manifest, get
    transaction.aborted with INVALID_REQUEST and the reason."""
    d, watcher = await _transactions(deploy)
    await _transact(d, "t-who", {"service": "nobody", "operation": "x", "params": {}})
    await _transact(d, "t-bad", {"service": "account", "operation": "debit",
                                 "params": {"account_id": "alice", "amount": 5}})
    outcomes = await _outcomes(d, watcher, {"t-who", "t-bad"})
    assert {o["reason_code"] for o in outcomes.values()} == {PlatformReason.INVALID_REQUEST}
    assert "nobody" in outcomes["t-who"]["reason"]
    assert "operations[0].params" in outcomes["t-bad"]["reason"]


# --- a team's own saga and participant -------------------------------------------------------


async def test_a_teams_saga_and_participant_run_from_configuration(deploy: Deploy) -> None:
    """The escrow (tests/platform/sagas.py) calls the shipped account participant and the
    test-only vault, registered only through SAGA_DEFINITIONS and SAGA_PARTICIPANTS."""
    d = await deploy(common=TEAM)
    await add_deposit(d.stores.services["account"], "alice", 10_000)
    watcher = await _watch(d, "escrows", (DONE, FAILED), "escrow_id")
    await _publish(d, "escrows", REQUESTED, EscrowRequested(
        escrow_id="e-1", account="alice", amount=Decimal("40.00"), item="gold"))
    await _publish(d, "escrows", REQUESTED, EscrowRequested(
        escrow_id="e-2", account="nobody", amount=Decimal("1.00"), item="gold"))
    outcomes = await _outcomes(d, watcher, {"e-1", "e-2"})
    assert outcomes["e-1"]["type"] == DONE
    assert outcomes["e-2"]["reason_code"] == TransferReason.UNKNOWN_ACCOUNT
    assert await _balance(d, "alice") == (6_000, 0)
    assert await _item(d, "gold") == (STOCK - 1, 0)
    report = await d.settled()
    assert report.ok, report.violations


async def test_sagas_of_a_retired_version_finish_under_it_and_new_ones_start_on_the_new(
        deploy: Deploy) -> None:
    """Escrows start under v1 and wait (the vault is down); the orchestrator is stopped and
    restarted with v1 and v2 registered. The v1 escrows finish under v1 (holds first), new
    requests start under v2 (stamp first)."""
    d = await deploy(common=TEAM)
    await add_deposit(d.stores.services["account"], "alice", 10_000)
    watcher = await _watch(d, "escrows", (DONE, FAILED), "escrow_id")
    d.cluster.processes["vault"].stop()
    for key in ("v1-a", "v1-b"):
        await _publish(d, "escrows", REQUESTED, EscrowRequested(
            escrow_id=key, account="alice", amount=Decimal("1.00"), item="gold"))
    await asyncio.sleep(1.0)
    await d.reconfigure("orchestrator", {
        "SAGA_DEFINITIONS": "tests.platform.sagas:both_versions"})
    await d.cluster.restart("vault")
    for key in ("v2-a", "v2-b"):
        await _publish(d, "escrows", REQUESTED, EscrowRequested(
            escrow_id=key, account="alice", amount=Decimal("1.00"), item="gold"))
    outcomes = await _outcomes(d, watcher, {"v1-a", "v1-b", "v2-a", "v2-b"})
    assert {o["type"] for o in outcomes.values()} == {DONE}
    for key in ("v1-a", "v1-b", "v2-a", "v2-b"):
        state = (await d.saga(key, "escrow")).state
        assert state.definition_version == int(key[1]), key
        stamped_first = next(k[0] for k in state.ops) == "stamp"
        assert stamped_first is (state.definition_version == 2), (key, list(state.ops))
    entries = await d.stores.services["account"].all(Entry)
    assert len([e for e in entries if e.state == "applied"]) == 4
