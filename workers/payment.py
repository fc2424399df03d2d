"""Payment: two-phase holds on customer balances. ``python -m workers.payment``.

Amounts are integer cents. A hold only raises ``held``; capture takes it from the
balance; release drops it. ``balance`` is committed money, never tentative.
"""

from __future__ import annotations

from typing import Literal

from contracts.commands import CaptureFunds, HoldFunds, Operation, ReleaseFunds
from contracts.orders import ReasonCode, to_cents
from workers.runtime import CommandHandler, Impossible, Rejected, ServiceSpec
from workers.store import Doc, Tx


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


async def hold(tx: Tx, cmd: HoldFunds, now: float) -> str:
    """Hold the order total if the customer can afford it."""
    amount = to_cents(cmd.amount)
    account = await tx.get(Account, cmd.customer_id)
    if account is None:
        raise Rejected(ReasonCode.UNKNOWN_CUSTOMER, f"unknown customer {cmd.customer_id}")
    available = account.balance - account.held
    if available < amount:
        raise Rejected(ReasonCode.PAYMENT_DECLINED,
                       f"{amount / 100:.2f} needed, {available / 100:.2f} available")
    await tx.update(account.model_copy(update={"held": account.held + amount}))
    await tx.insert(Hold(id=cmd.order_id, customer_id=cmd.customer_id, amount=amount,
                         state="held", updated_at=now))
    return f"held {amount / 100:.2f}"


async def _settle(tx: Tx, order_id: str, now: float, capture: bool) -> str:
    held = await tx.get(Hold, order_id)
    if held is None or held.state != "held":
        raise Impossible(f"no open hold for order {order_id}")
    account = await tx.get(Account, held.customer_id)
    if account is None:
        raise Impossible(f"account {held.customer_id} disappeared")
    balance = account.balance - held.amount if capture else account.balance
    await tx.update(account.model_copy(update={"held": account.held - held.amount,
                                               "balance": balance}))
    state = "captured" if capture else "released"
    await tx.update(held.model_copy(update={"state": state, "updated_at": now}))
    return f"{state} {held.amount / 100:.2f}"


async def capture(tx: Tx, cmd: CaptureFunds, now: float) -> str:
    """Take the held amount."""
    return await _settle(tx, cmd.order_id, now, capture=True)


async def release(tx: Tx, cmd: ReleaseFunds, now: float) -> str:
    """Drop the hold."""
    return await _settle(tx, cmd.order_id, now, capture=False)


SPEC = ServiceSpec(
    name="payment",
    handlers=(
        CommandHandler("payment.prepare", HoldFunds, Operation.FORWARD, hold, rejectable=True),
        CommandHandler("payment.confirm", CaptureFunds, Operation.CONFIRM, capture),
        CommandHandler("payment.cancel", ReleaseFunds, Operation.COMPENSATE, release),
    ),
    rejection=ReasonCode.PAYMENT_DECLINED,
    documents=(Account, Hold),
)

if __name__ == "__main__":
    from workers.app import main

    main("payment")
