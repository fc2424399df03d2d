"""Payment: two-phase holds on customer balances.

Amounts are integer cents. A hold only raises ``held``; capture takes it from the
balance; release drops it. ``balance`` is committed money, never tentative.
"""

from __future__ import annotations

from typing import Literal

from contracts.order_steps import HoldFunds
from contracts.orders import OrderReason, to_cents
from workers.sdk import Impossible, Participant, Rejected, StepContext, TwoPhase
from workers.store import Change, Doc, Tx


class Account(Doc):
    """A customer's money in cents; ``deposited`` is everything ever added (for audits)."""

    collection = "accounts"
    balance: int
    held: int = 0
    deposited: int = 0


class Hold(Doc):
    """Money held for one order; ``id`` is the order id."""

    collection = "holds"
    customer_id: str
    amount: int
    state: Literal["held", "captured", "released"]
    updated_at: float


async def hold(tx: Tx, cmd: HoldFunds, step: StepContext) -> str:
    """Hold the order total if the customer can afford it."""
    amount = to_cents(cmd.amount)
    # One write: the holds grow only within the balance.
    if await tx.modify(Account, cmd.customer_id, Change(within={"held": "balance"},
                                                        add={"held": amount})) is None:
        account = await tx.get(Account, cmd.customer_id)
        if account is None:
            raise Rejected(OrderReason.UNKNOWN_CUSTOMER, f"unknown customer {cmd.customer_id}")
        available = account.balance - account.held
        raise Rejected(OrderReason.PAYMENT_DECLINED,
                       f"{amount / 100:.2f} needed, {available / 100:.2f} available")
    await tx.insert(Hold(id=cmd.order_id, customer_id=cmd.customer_id, amount=amount,
                         state="held", updated_at=step.now))
    return f"held {amount / 100:.2f}"


async def _settle(tx: Tx, order_id: str, now: float, capture: bool) -> str:
    # Two writes, no reads: the hold moves on only if it is still open, and the account
    # changes by the amount that hold carried.
    state = "captured" if capture else "released"
    held = await tx.modify(Hold, order_id, Change(when={"state": "held"},
                                                  assign={"state": state, "updated_at": now}))
    if held is None:
        raise Impossible(f"no open hold for order {order_id}")
    taken = held.amount if capture else 0
    if await tx.modify(Account, held.customer_id,
                       Change(add={"held": -held.amount, "balance": -taken})) is None:
        raise Impossible(f"account {held.customer_id} disappeared")
    return f"{state} {held.amount / 100:.2f}"


async def capture(tx: Tx, cmd: HoldFunds, step: StepContext) -> str:
    """Take the held amount."""
    return await _settle(tx, cmd.order_id, step.now, capture=True)


async def release(tx: Tx, cmd: HoldFunds, step: StepContext) -> str:
    """Drop the hold."""
    return await _settle(tx, cmd.order_id, step.now, capture=False)


SERVICE = Participant(
    metrics_port=9403,
    name="payment",
    description="Customer balances, held in two phases and captured after the commit point.",
    operations=(TwoPhase("hold", HoldFunds, prepare=hold, confirm=capture, cancel=release),),
    documents=(Account, Hold),
    rejection=OrderReason.PAYMENT_DECLINED,
    reasons=(OrderReason.PAYMENT_DECLINED, OrderReason.UNKNOWN_CUSTOMER),
)
