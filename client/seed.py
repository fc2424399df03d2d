"""Stock and balances for a demo or a test, added to whatever is there."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from contracts.envelope import Envelope, WireMessage, encode, new_message_id, utcnow
from contracts.orders import OrderItem, OrderRequested
from contracts.transfers import TRANSFER_REQUESTED, TransferRequested
from infra.errors import DuplicateKey, VersionConflict
from workers.account import LedgerAccount
from workers.inventory import StockItem
from workers.payment import Account
from workers.store import Doc, DocumentStore

DEFAULT_CURRENCY = "EUR"


@dataclass(frozen=True, slots=True)
class Catalog:
    """Units per SKU and cents per customer to add."""

    stock: Mapping[str, int]
    balances: Mapping[str, int]
    prices: Mapping[str, Decimal]


def demo_catalog(seed: int = 7, skus: int = 8, customers: int = 30) -> Catalog:
    """Scarce enough that some orders run out of stock and some customers out of money."""
    rng = random.Random(seed)
    names = [f"SKU-{i:03d}" for i in range(skus)]
    return Catalog(
        stock={s: rng.randint(80, 220) for s in names},
        balances={f"cust-{i:03d}": rng.randint(100, 3000) * 100 for i in range(customers)},
        prices={s: Decimal(rng.randint(500, 5000)) / 100 for s in names},
    )


def demo_orders(catalog: Catalog, count: int, seed: int = 11,
                prefix: str = "order") -> list[OrderRequested]:
    """Random orders over the catalog (a few lines each), with explicit order ids."""
    rng = random.Random(seed)
    skus, customers = list(catalog.prices), list(catalog.balances)
    orders = []
    for i in range(count):
        lines = rng.sample(skus, rng.randint(1, 3))
        items = tuple(OrderItem(sku=s, quantity=rng.randint(1, 4), unit_price=catalog.prices[s])
                      for s in lines)
        orders.append(OrderRequested(order_id=f"{prefix}-{i:05d}",
                                     customer_id=rng.choice(customers), items=items))
    return orders


async def _add[T: Doc](store: DocumentStore, kind: type[T], key: str, fresh: T,
                        grow: Callable[[T], T]) -> T:
    """Insert ``fresh`` or update the stored document with ``grow``, under the same
    optimistic lock as the sagas, retrying conflicts."""
    for _ in range(50):
        try:
            async with store.transaction() as tx:
                current = await tx.get(kind, key)
                if current is None:
                    await tx.insert(fresh)
                    return fresh
                return await tx.update(grow(current))
        except (VersionConflict, DuplicateKey):
            continue
    raise VersionConflict(f"could not update {kind.collection}/{key}: too many concurrent updates")


async def add_stock(store: DocumentStore, sku: str, units: int) -> StockItem:
    """Add units of a SKU (creating it)."""
    return await _add(store, StockItem, sku, StockItem(id=sku, on_hand=units, received=units),
                      lambda i: i.model_copy(update={"on_hand": i.on_hand + units,
                                                     "received": i.received + units}))


async def add_funds(store: DocumentStore, customer: str, cents: int) -> Account:
    """Deposit money for a customer (creating the account)."""
    return await _add(store, Account, customer,
                      Account(id=customer, balance=cents, deposited=cents),
                      lambda a: a.model_copy(update={"balance": a.balance + cents,
                                                     "deposited": a.deposited + cents}))


async def add_deposit(store: DocumentStore, account: str, cents: int,
                      currency: str = DEFAULT_CURRENCY) -> LedgerAccount:
    """Pay money into an account of the account service (creating it)."""
    return await _add(store, LedgerAccount, account,
                      LedgerAccount(id=account, currency=currency, balance=cents,
                                    deposited=cents),
                      lambda a: a.model_copy(update={"balance": a.balance + cents,
                                                     "deposited": a.deposited + cents}))


def demo_accounts(count: int = 12, seed: int = 7) -> dict[str, int]:
    """Accounts for transfers: cents per account, some too poor for every transfer."""
    rng = random.Random(seed)
    return {f"acct-{i:03d}": rng.randint(50, 2000) * 100 for i in range(count)}


def contention_accounts(count: int) -> dict[str, int]:
    """A few rich accounts: transfers among them wait for locks, never for money."""
    return {f"acct-{i:03d}": 1_000_000 * 100 for i in range(count)}


def demo_transfers(accounts: Mapping[str, int], count: int, seed: int = 13,
                   prefix: str = "transfer") -> list[TransferRequested]:
    """Random transfers between the accounts, in the demo currency."""
    rng = random.Random(seed)
    names = sorted(accounts)
    out = []
    for i in range(count):
        source, target = rng.sample(names, 2)
        out.append(TransferRequested(transfer_id=f"{prefix}-{i:05d}", from_account=source,
                                     to_account=target, currency=DEFAULT_CURRENCY,
                                     amount=Decimal(rng.randint(100, 40_000)) / 100))
    return out


async def seed(inventory: DocumentStore, payment: DocumentStore, catalog: Catalog) -> None:
    """Apply a whole catalog."""
    for sku, units in catalog.stock.items():
        await add_stock(inventory, sku, units)
    for customer, cents in catalog.balances.items():
        await add_funds(payment, customer, cents)


def transfer_message(transfer: TransferRequested) -> WireMessage:
    """A ``transfer.requested`` message with a full envelope."""
    envelope = Envelope(message_id=new_message_id(), correlation_id=transfer.transfer_id or "-",
                        message_type=TRANSFER_REQUESTED, timestamp=utcnow())
    return encode(envelope, transfer)
