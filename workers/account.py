"""Account: balances moved in two phases, for funds transfers and ad-hoc transactions.

Amounts are integer cents. A debit's prepare only raises ``held`` (money still there, no
longer promised); a credit's prepare only records the posting (nothing arrives yet). So
a prepare votes "commit-ok" or refuses without changing committed state: ``balance`` is
never tentative. Confirm applies the posting; cancel releases it.

Both prepares lock their account (exclusive, policy ``wait``) until the confirm or the
cancel: an account moves for one saga at a time, and a saga that finds it taken waits its
turn rather than failing. Two transfers in opposite directions can then wait for each
other; the orchestrator finds that cycle and aborts one of them (orchestrator.deadlock).
"""

from __future__ import annotations

from typing import Literal

from contracts.orders import to_cents
from contracts.transfers import Posting, TransferReason
from workers.locks import Lock, LockPolicy, Locks, Waiter
from workers.sdk import Impossible, Participant, Rejected, StepContext, TwoPhase
from workers.store import Doc, Tx


class LedgerAccount(Doc):
    """One account; ``deposited`` is everything ever paid in from outside (for audits)."""

    collection = "accounts"
    currency: str
    balance: int
    held: int = 0
    deposited: int = 0


class Entry(Doc):
    """One posting of one saga step; ``id`` is ``<saga id>:<step>``."""

    collection = "postings"
    account_id: str
    side: Literal["debit", "credit"]
    amount: int
    reference: str
    state: Literal["held", "applied", "released"]
    updated_at: float


async def _account(tx: Tx, p: Posting) -> LedgerAccount:
    account = await tx.get(LedgerAccount, p.account_id)
    if account is None:
        raise Rejected(TransferReason.UNKNOWN_ACCOUNT, f"unknown account {p.account_id}")
    if account.currency != p.currency:
        raise Rejected(TransferReason.CURRENCY_MISMATCH,
                       f"{p.account_id} holds {account.currency}, not {p.currency}")
    return account


def _entry(p: Posting, step: StepContext, side: Literal["debit", "credit"]) -> Entry:
    return Entry(id=f"{step.saga_id}:{step.step}", account_id=p.account_id, side=side,
                 amount=to_cents(p.amount), reference=p.reference, state="held",
                 updated_at=step.now)


async def _existing(tx: Tx, account_id: str) -> LedgerAccount:
    account = await tx.get(LedgerAccount, account_id)
    if account is None:
        raise Impossible(f"account {account_id} disappeared")
    return account


async def _held(tx: Tx, step: StepContext) -> Entry:
    entry = await tx.get(Entry, f"{step.saga_id}:{step.step}")
    if entry is None or entry.state != "held":
        raise Impossible(f"no held posting for {step.saga_id}:{step.step}")
    return entry


async def hold_debit(tx: Tx, p: Posting, step: StepContext) -> str:
    """Hold the amount if the account can spare it."""
    account = await _account(tx, p)
    entry = _entry(p, step, "debit")
    available = account.balance - account.held
    if available < entry.amount:
        raise Rejected(TransferReason.INSUFFICIENT_FUNDS,
                       f"{entry.amount / 100:.2f} needed, {available / 100:.2f} available")
    await tx.update(account.model_copy(update={"held": account.held + entry.amount}))
    await tx.insert(entry)
    return f"held {entry.amount / 100:.2f}"


async def apply_debit(tx: Tx, p: Posting, step: StepContext) -> str:
    """Take the held amount from the balance."""
    entry = await _held(tx, step)
    account = await _existing(tx, entry.account_id)
    await tx.update(account.model_copy(update={"held": account.held - entry.amount,
                                               "balance": account.balance - entry.amount}))
    await tx.update(entry.model_copy(update={"state": "applied", "updated_at": step.now}))
    return f"debited {entry.amount / 100:.2f}"


async def release_debit(tx: Tx, p: Posting, step: StepContext) -> str:
    """Drop the hold."""
    entry = await _held(tx, step)
    account = await _existing(tx, entry.account_id)
    await tx.update(account.model_copy(update={"held": account.held - entry.amount}))
    await tx.update(entry.model_copy(update={"state": "released", "updated_at": step.now}))
    return f"released {entry.amount / 100:.2f}"


async def announce_credit(tx: Tx, p: Posting, step: StepContext) -> str:
    """Accept an incoming amount, to be applied at confirm."""
    await _account(tx, p)
    entry = _entry(p, step, "credit")
    await tx.insert(entry)
    return f"credit of {entry.amount / 100:.2f} accepted"


async def apply_credit(tx: Tx, p: Posting, step: StepContext) -> str:
    """Add the amount to the balance."""
    entry = await _held(tx, step)
    account = await _existing(tx, entry.account_id)
    await tx.update(account.model_copy(update={"balance": account.balance + entry.amount}))
    await tx.update(entry.model_copy(update={"state": "applied", "updated_at": step.now}))
    return f"credited {entry.amount / 100:.2f}"


async def cancel_credit(tx: Tx, p: Posting, step: StepContext) -> str:
    """Forget the incoming amount."""
    entry = await _held(tx, step)
    await tx.update(entry.model_copy(update={"state": "released", "updated_at": step.now}))
    return "credit cancelled"


def _account_id(p: Posting) -> tuple[str]:
    return (p.account_id,)


# Long enough to outlast a few other sagas' whole two-phase commits (waits form queues:
# a transfer holds one account while it waits for the other), short of a transfer's
# deadline.
LOCK_WAIT = 60.0
ACCOUNT_LOCK: Locks[Posting] = Locks("account", _account_id, policy=LockPolicy.WAIT,
                                     wait_timeout=LOCK_WAIT)

SERVICE = Participant(
    metrics_port=9406,
    name="account",
    description="Account balances: debits held and credits announced in two phases.",
    operations=(
        TwoPhase("debit", Posting, prepare=hold_debit, confirm=apply_debit,
                 cancel=release_debit, locks=ACCOUNT_LOCK),
        TwoPhase("credit", Posting, prepare=announce_credit, confirm=apply_credit,
                 cancel=cancel_credit, locks=ACCOUNT_LOCK),
    ),
    documents=(LedgerAccount, Entry, Lock, Waiter),
    rejection=TransferReason.ACCOUNT_REFUSED,
    reasons=tuple(TransferReason),
)
