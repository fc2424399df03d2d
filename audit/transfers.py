"""Money between accounts is conserved, holds end with their sagas, and every transfer
moved its amount exactly once on both sides.

Checked over the account participant's documents: the accounts (balance, held, and what
was ever deposited from outside) and the postings each saga step wrote.
"""

from __future__ import annotations

from collections import defaultdict

from audit.snapshot import Scope, Snapshot, TransferSaga, Violation
from contracts.commands import round_of, run_id, saga_of
from contracts.orders import to_cents
from orchestrator.start import split_saga_id

ACCOUNTS_BALANCE = "account books balance"
ACCOUNT_HOLDS_MATCH = "account holds match"
HOLD_ENDS_WITH_SAGA = "no hold outlives its saga"
TRANSFERRED_ONCE = "transfer applied once on both sides"

DESCRIPTIONS = {
    ACCOUNTS_BALANCE: "per account: deposited + applied credits - applied debits = balance; "
                      "so the total of all balances changes only by deposits",
    ACCOUNT_HOLDS_MATCH: "per account: amount held = its held debit postings",
    HOLD_ENDS_WITH_SAGA: "no posting is still held once its saga has finished (sagas "
                         "needing attention are listed apart), and every posting belongs to a "
                         "saga",
    TRANSFERRED_ONCE: "a completed transfer debited and credited its amount exactly once; a "
                      "failed one moved nothing",
}


def check(s: Snapshot, scope: Scope) -> list[Violation]:
    """Every account and transfer invariant."""
    return [*_books(s), *_holds(s, scope), *(v for saga_id, t in sorted(scope.transfers.items())
                                            for v in _transfer(s, saga_id, t))]


def _books(s: Snapshot) -> list[Violation]:
    moved: dict[str, int] = defaultdict(int)
    held: dict[str, int] = defaultdict(int)
    for p in s.postings.values():
        if p.state == "applied":
            moved[p.account_id] += p.amount if p.side == "credit" else -p.amount
        elif p.state == "held" and p.side == "debit":
            held[p.account_id] += p.amount
    out = []
    for a in s.ledger:
        off = a.deposited + moved[a.id] - a.balance
        if off or a.balance < 0:
            out.append(Violation(ACCOUNTS_BALANCE, a.id,
                                 f"deposited {a.deposited} + moved {moved[a.id]} != balance "
                                 f"{a.balance} (cents)", "customer", off))
        off = a.held - held[a.id]
        if off or a.held < 0:
            out.append(Violation(ACCOUNT_HOLDS_MATCH, a.id,
                                 f"held {a.held}, held debit postings {held[a.id]} (cents)",
                                 "customer", off))
    known = {a.id for a in s.ledger}
    for account in sorted((set(moved) | set(held)) - known):
        out.append(Violation(ACCOUNTS_BALANCE, account, "postings, but no such account",
                             "customer"))
    return out


def _holds(s: Snapshot, scope: Scope) -> list[Violation]:
    out = []
    for posting_id, p in sorted(s.postings.items()):
        run = posting_id.rpartition(":")[0]
        saga_id = saga_of(run)  # a retried round's postings name its run id
        if saga_id not in s.sagas:
            out.append(Violation(HOLD_ENDS_WITH_SAGA, split_saga_id(saga_id)[1] or saga_id,
                                 f"posting {posting_id} without any saga"))
        elif p.state == "held" and saga_id in scope.ended and saga_id not in (
                scope.attention.keys() | scope.resolved):
            # A saga needing attention is listed on its own, leftovers and all.
            out.append(Violation(HOLD_ENDS_WITH_SAGA, split_saga_id(saga_id)[1],
                                 f"{p.side} of {p.amount} on {p.account_id} still held"))
        elif p.state == "held" and round_of(run) < s.sagas[saga_id].state.round:
            out.append(Violation(HOLD_ENDS_WITH_SAGA, split_saga_id(saga_id)[1],
                                 f"{p.side} of {p.amount} on {p.account_id} still held by "
                                 f"round {round_of(run)}, which was undone"))
    return out


def _transfer(s: Snapshot, saga_id: str, t: TransferSaga) -> list[Violation]:
    last = t.record.state.round
    run = run_id(saga_id, last)
    debit, credit = s.postings.get(f"{run}:debit"), s.postings.get(f"{run}:credit")
    applied = [p for p in (debit, credit) if p is not None and p.state == "applied"]
    key, amount = t.data.transfer_id, to_cents(t.data.amount)
    # Rounds undone after a deadlock moved nothing, whatever the last one did.
    problems = [f"round {r} was undone, yet its {side} was applied"
                for r in range(last) for side in ("debit", "credit")
                if (p := s.postings.get(f"{run_id(saga_id, r)}:{side}")) is not None
                and p.state == "applied"]
    if not t.completed:
        return [Violation(TRANSFERRED_ONCE, key, p)
                for p in (["failed, yet money moved"] if applied else []) + problems]
    for side, posting, account in (("debit", debit, t.data.from_account),
                                   ("credit", credit, t.data.to_account)):
        if posting is None or posting.state != "applied":
            problems.append(f"completed, but its {side} is "
                            f"{'missing' if posting is None else posting.state}")
        elif (posting.account_id, posting.amount) != (account, amount):
            problems.append(f"{side} of {posting.amount} on {posting.account_id}, expected "
                            f"{amount} on {account}")
    return [Violation(TRANSFERRED_ONCE, key, p) for p in problems]
