"""The worker runtime on the real broker, with each participant store.

Commands are published to the commands exchange as the orchestrator would; replies are
read from a private queue bound to the replies exchange next to the orchestrator's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from client.seed import add_funds, add_stock
from contracts.commands import Outcome, StepCommand, StepReply
from contracts.envelope import Envelope, WireMessage, encode, read_envelope, read_payload, utcnow
from contracts.order_steps import HoldFunds, ReserveStock, ScheduleShipment, StockLine
from contracts.orders import OrderReason
from contracts.reasons import PlatformReason
from contracts.registry import STEP_REPLY
from contracts.topology import REPLY_KEY, Topology, dead_letter_queue, partition_key
from infra.adapters.rabbit import RabbitTransport
from infra.consumer import REASON_HEADER
from infra.errors import StoreUnavailable
from infra.settings import CommonSettings
from workers import inventory, payment, shipping
from workers.app import Worker
from workers.fence import Fence, FenceState, fence_id
from workers.inventory import Reservation, StockItem
from workers.metrics import WorkerMetrics
from workers.payment import Account, Hold
from workers.settings import WorkerSettings
from workers.shipping import Shipment
from workers.store import Doc, DocumentStore, Tx
from workers.store_memory import MemoryDocumentStore
from workers.store_mongo import MongoDocumentStore

StoreKind = Literal["memory", "mongo"]
WAIT = 20.0  # seconds to wait for a reply or a dead letter
POLL = 0.02
SPECS = {"inventory": inventory.SERVICE, "payment": payment.SERVICE,
         "shipping": shipping.SERVICE}
SKU = "SKU-1"
RESERVE = "reserve_stock"
HOLD = "hold_funds"


@dataclass(frozen=True, slots=True)
class Backend:
    """Which participant store the workers use, and where MongoDB is when they use it."""

    kind: StoreKind
    mongo_urls: dict[str, str] = field(default_factory=dict)
    standin: bool = False


@dataclass
class Participant:
    """One running worker, its store and its metrics."""

    worker: Worker
    store: DocumentStore
    registry: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float:
        """The current value of a counter sample (0 when never incremented)."""
        return self.registry.get_sample_value(name, labels) or 0.0


@dataclass
class Rig:
    """The test's side of the broker: publishes commands, collects replies by causation id."""

    rabbit: RabbitTransport
    topology: Topology
    reply_queue: str
    participants: dict[str, Participant]
    replies: dict[str, list[tuple[Envelope, StepReply]]] = field(default_factory=dict)

    @property
    def inventory(self) -> DocumentStore:
        """The inventory worker's store."""
        return self.participants["inventory"].store

    @property
    def payment(self) -> DocumentStore:
        """The payment worker's store."""
        return self.participants["payment"].store

    async def send(self, message_type: str, command: StepCommand, message_id: str, *,
                   correlation_id: str | None = None, service: str | None = None,
                   reply_to: str | None = None) -> None:
        """Publish a command to its service (by default the one its type names)."""
        envelope = Envelope(message_id=message_id, message_type=message_type,
                            correlation_id=correlation_id or command.saga_id, timestamp=utcnow())
        routing_key = service or message_type.split(".")[0]
        await self.rabbit.publish(self.topology.commands_exchange, routing_key,
                                  replace(encode(envelope, command), reply_to=reply_to))

    async def replies_to(self, message_id: str, count: int = 1) -> list[tuple[Envelope, StepReply]]:
        """Wait for ``count`` replies caused by one command."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            await self._drain()
            got = self.replies.get(message_id, [])
            if len(got) >= count:
                return got
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(got)} of {count} replies to {message_id} arrived")
            await asyncio.sleep(POLL)

    async def call(self, message_type: str, command: StepCommand, message_id: str) -> StepReply:
        """Send a command and wait for its reply."""
        await self.send(message_type, command, message_id)
        (_, reply), = await self.replies_to(message_id)
        return reply

    async def _drain(self) -> None:
        while (message := await self.rabbit.get(self.reply_queue)) is not None:
            envelope = read_envelope(message)
            assert envelope.causation_id is not None
            self.replies.setdefault(envelope.causation_id, []).append(
                (envelope, read_payload(message, StepReply)))

    async def dead_letters(self, service: str, count: int) -> list[WireMessage]:
        """Wait for ``count`` messages on a service's dead-letter queue."""
        queue = dead_letter_queue(self.topology.command_queue(service))
        found: list[WireMessage] = []
        deadline = asyncio.get_running_loop().time() + WAIT
        while len(found) < count:
            message = await self.rabbit.get(queue)
            if message is not None:
                found.append(message)
            elif asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(found)} of {count} dead letters arrived")
            else:
                await asyncio.sleep(POLL)
        return found

    async def stock(self, sku: str = SKU) -> StockItem:
        """Committed stock of one SKU."""
        item = await self.inventory.get(StockItem, sku)
        assert item is not None
        return item

    async def account(self, customer: str) -> Account:
        """Committed balance of one customer."""
        found = await self.payment.get(Account, customer)
        assert found is not None
        return found


@pytest.fixture(params=["memory", "mongo"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each participant store; MongoDB is only started for the mongo case."""
    if request.param == "memory":
        return Backend("memory")
    urls: dict[str, str] = request.getfixturevalue("mongo_urls")
    return Backend("mongo", urls, bool(request.getfixturevalue("uses_standin")))


class Reads(CommandListener):
    """The collections the workers' MongoDB clients read, in order (command monitoring)."""

    def __init__(self) -> None:
        self.collections: list[str] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.collections.append(str(event.command["find"]))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


@pytest.fixture
def reads() -> Reads:
    """What the workers read from MongoDB (nothing is recorded for the in-memory store)."""
    return Reads()


@pytest.fixture
async def stores(backend: Backend, tag: str,
                 reads: Reads) -> AsyncIterator[dict[str, DocumentStore]]:
    """A store per service; in MongoDB, databases of this test alone, dropped afterwards."""
    if backend.kind == "memory":
        yield {service: MemoryDocumentStore() for service in SPECS}
        return
    clients: dict[str, AsyncMongoClient[Any]] = {
        service: AsyncMongoClient(backend.mongo_urls[service], serverSelectionTimeoutMS=5000,
                                  event_listeners=[reads])
        for service in SPECS}
    try:
        yield {service: MongoDocumentStore(client, f"test_{tag}_{service}")
               for service, client in clients.items()}
    finally:
        for service, client in clients.items():
            await client.drop_database(f"test_{tag}_{service}")
            await client.close()


async def start_worker(service: str, store: DocumentStore, backend: Backend, amqp_url: str,
                       topology: Topology) -> Participant:
    """A worker with its own connection, wired as the worker process wires it."""
    common = CommonSettings(amqp_url=SecretStr(amqp_url), namespace=topology.namespace,
                            store=backend.kind)
    # The stand-in detects write conflicts server-wide: one transaction at a time.
    settings = WorkerSettings(common=common, service=service,
                              tx_concurrency=1 if backend.standin else 16)
    transport = RabbitTransport(amqp_url, connection_name=f"pytest-{service}", connect_timeout=10)
    await transport.connect()
    registry = CollectorRegistry()
    worker = Worker(settings=settings, spec=SPECS[service], transport=transport, store=store,
                    metrics=WorkerMetrics(registry))
    try:
        await worker.start()
    except BaseException:
        await worker.stop()
        raise
    return Participant(worker, store, registry)


@pytest.fixture
async def rig(rabbit: RabbitTransport, topology: Topology, amqp_url: str, backend: Backend,
              stores: dict[str, DocumentStore]) -> AsyncIterator[Rig]:
    """Inventory and payment workers running on the test topology, and a reply listener."""
    reply_queue = await rabbit.temporary_queue(topology.replies_exchange, (REPLY_KEY,))
    participants: dict[str, Participant] = {}
    try:
        for service, store in stores.items():
            participants[service] = await start_worker(service, store, backend, amqp_url, topology)
        yield Rig(rabbit, topology, reply_queue, participants)
    finally:
        for participant in participants.values():
            await participant.worker.stop()


def reserve(saga_id: str, quantity: int, sku: str = SKU) -> StepCommand:
    """A command of the inventory's reserve operation for one line (every phase takes the
    same parameters)."""
    params = ReserveStock(order_id=saga_id, lines=(StockLine(sku=sku, quantity=quantity),))
    return StepCommand(saga_id=saga_id, step=RESERVE, params=params.model_dump(mode="json"))


def commit(saga_id: str) -> StepCommand:
    """inventory.reserve.confirm."""
    return reserve(saga_id, 1)


def release(saga_id: str) -> StepCommand:
    """inventory.reserve.cancel."""
    return reserve(saga_id, 1)


def hold(saga_id: str, customer: str, amount: str) -> StepCommand:
    """A command of the payment's hold operation."""
    params = HoldFunds(order_id=saga_id, customer_id=customer, amount=Decimal(amount))
    return StepCommand(saga_id=saga_id, step=HOLD, params=params.model_dump(mode="json"))


# --- two-phase stock -------------------------------------------------------------------------


async def test_prepare_reserves_without_touching_stock_on_hand(rig: Rig) -> None:
    """A prepare succeeds, answers its own command, and only raises ``reserved``."""
    await add_stock(rig.inventory, SKU, 10)
    await rig.send("inventory.reserve.prepare", reserve("o-1", 3), "cmd-1")
    [(envelope, reply)] = await rig.replies_to("cmd-1")
    assert envelope.causation_id == "cmd-1"
    assert envelope.correlation_id == "o-1"
    assert envelope.message_type == STEP_REPLY
    assert reply.outcome is Outcome.SUCCEEDED
    assert (reply.saga_id, reply.step) == ("o-1", RESERVE)
    stock = await rig.stock()
    assert (stock.on_hand, stock.reserved) == (10, 3)
    held = await rig.inventory.get(Reservation, "o-1")
    assert held is not None
    assert held.state == "held"
    fence = await rig.inventory.get(Fence, fence_id("o-1", RESERVE))
    assert fence is not None
    assert fence.state is FenceState.TRIED


async def test_confirm_after_prepare_deducts_stock(rig: Rig) -> None:
    """Confirming a reservation moves it out of stock on hand and clears ``reserved``."""
    await add_stock(rig.inventory, SKU, 10)
    prepared = await rig.call("inventory.reserve.prepare", reserve("o-1", 3), "p-1")
    assert prepared.outcome is Outcome.SUCCEEDED
    confirmed = await rig.call("inventory.reserve.confirm", commit("o-1"), "c-1")
    assert confirmed.outcome is Outcome.SUCCEEDED
    stock = await rig.stock()
    assert (stock.on_hand, stock.reserved) == (7, 0)
    held = await rig.inventory.get(Reservation, "o-1")
    assert held is not None
    assert held.state == "committed"


async def test_cancel_after_prepare_releases_the_reservation(rig: Rig) -> None:
    """Cancelling a reservation gives the units back and leaves stock on hand as it was."""
    await add_stock(rig.inventory, SKU, 10)
    await rig.call("inventory.reserve.prepare", reserve("o-1", 4), "p-1")
    reply = await rig.call("inventory.reserve.cancel", release("o-1"), "x-1")
    assert reply.outcome is Outcome.SUCCEEDED
    stock = await rig.stock()
    assert (stock.on_hand, stock.reserved) == (10, 0)
    held = await rig.inventory.get(Reservation, "o-1")
    assert held is not None
    assert held.state == "released"


# --- idempotency -----------------------------------------------------------------------------


async def test_same_command_twice_gets_recorded_reply_and_applies_once(rig: Rig) -> None:
    """A redelivered command (same message id) is answered identically and reserves once."""
    await add_stock(rig.inventory, SKU, 10)
    await rig.send("inventory.reserve.prepare", reserve("o-1", 2), "cmd-1")
    await rig.send("inventory.reserve.prepare", reserve("o-1", 2), "cmd-1")
    (first_env, first), (second_env, second) = await rig.replies_to("cmd-1", 2)
    assert first == second
    assert first.outcome is Outcome.SUCCEEDED
    assert first_env.message_id == second_env.message_id == "cmd-1:reply"
    assert (await rig.stock()).reserved == 2
    worker = rig.participants["inventory"]
    assert worker.metric("saga_worker_duplicate_commands_total", service="inventory") == 1


async def test_retried_prepare_with_new_message_id_reserves_once(rig: Rig) -> None:
    """A second attempt of the same step (new message id) replays the fence, not the handler."""
    await add_stock(rig.inventory, SKU, 10)
    first = await rig.call("inventory.reserve.prepare", reserve("o-1", 2), "attempt-1")
    again = await rig.call("inventory.reserve.prepare", reserve("o-1", 2), "attempt-2")
    assert first.outcome is again.outcome is Outcome.SUCCEEDED
    assert again.detail == "already tried"
    stock = await rig.stock()
    assert (stock.on_hand, stock.reserved) == (10, 2)
    worker = rig.participants["inventory"]
    assert worker.metric("saga_worker_duplicate_commands_total", service="inventory") == 0


async def test_first_attempts_write_their_fence_without_reading_it(
        rig: Rig, backend: Backend, reads: Reads) -> None:
    """A command nearly always finds its step where the saga left it, so its first attempt
    reads nothing: a prepare reserves with one conditional write and inserts its fence, a
    confirm moves its documents and its fence on with conditional writes. A later attempt
    of a step runs its handler in vain, finds a write refused, rolls back and reads the
    fence. None of this counts as a version conflict."""
    if backend.kind != "mongo":
        pytest.skip("counts MongoDB commands")
    await add_stock(rig.inventory, SKU, 10)
    reads.collections.clear()
    first = await rig.call("inventory.reserve.prepare", reserve("o-1", 2), "attempt-1")
    assert first.outcome is Outcome.SUCCEEDED
    assert reads.collections == []
    again = await rig.call("inventory.reserve.prepare", reserve("o-1", 2), "attempt-2")
    assert again.detail == "already tried"
    assert reads.collections == ["fences"]
    reads.collections.clear()
    confirmed = await rig.call("inventory.reserve.confirm", commit("o-1"), "confirm-1")
    assert confirmed.detail == "committed 2 units"
    assert reads.collections == []
    replayed = await rig.call("inventory.reserve.confirm", commit("o-1"), "confirm-2")
    assert replayed.detail == "already confirmed"
    assert reads.collections == ["fences"]
    stock = await rig.stock()
    assert (stock.on_hand, stock.reserved) == (8, 0)
    worker = rig.participants["inventory"]
    assert worker.metric("saga_worker_version_conflicts_total", service="inventory") == 0


# --- the fence -------------------------------------------------------------------------------


async def test_cancel_before_prepare_is_an_empty_rollback(rig: Rig) -> None:
    """A cancel with nothing to undo succeeds and leaves a COMPENSATED fence behind."""
    await add_stock(rig.inventory, SKU, 10)
    reply = await rig.call("inventory.reserve.cancel", release("o-1"), "x-1")
    assert reply.outcome is Outcome.SUCCEEDED
    assert reply.detail == "nothing to undo"
    fence = await rig.inventory.get(Fence, fence_id("o-1", RESERVE))
    assert fence is not None
    assert fence.state is FenceState.COMPENSATED
    stock = await rig.stock()
    assert (stock.on_hand, stock.reserved) == (10, 0)
    worker = rig.participants["inventory"]
    assert worker.metric("saga_worker_fence_events_total", service="inventory",
                         kind="empty_rollback") == 1


async def test_prepare_after_cancel_is_suspended(rig: Rig) -> None:
    """A prepare arriving after its step was cancelled is refused and reserves nothing."""
    await add_stock(rig.inventory, SKU, 10)
    await rig.call("inventory.reserve.cancel", release("o-1"), "x-1")
    late = await rig.call("inventory.reserve.prepare", reserve("o-1", 2), "p-1")
    assert late.outcome is Outcome.REJECTED
    assert late.reason_code == PlatformReason.CANCELLED
    assert (await rig.stock()).reserved == 0
    assert await rig.inventory.get(Reservation, "o-1") is None
    fence = await rig.inventory.get(Fence, fence_id("o-1", RESERVE))
    assert fence is not None
    assert fence.state is FenceState.COMPENSATED


async def test_confirm_without_prepare_is_a_permanent_error(rig: Rig) -> None:
    """Confirming a step that never ran cannot succeed, and changes nothing."""
    await add_stock(rig.inventory, SKU, 10)
    reply = await rig.call("inventory.reserve.confirm", commit("o-1"), "c-1")
    assert reply.outcome is Outcome.PERMANENT_ERROR
    stock = await rig.stock()
    assert (stock.on_hand, stock.reserved) == (10, 0)
    assert await rig.inventory.get(Fence, fence_id("o-1", RESERVE)) is None


# --- business rejections ---------------------------------------------------------------------


async def test_insufficient_stock_is_rejected_and_stays_rejected(rig: Rig) -> None:
    """A prepare beyond free stock is refused, and a retry of that step is refused the same way
    even after stock arrives, so a saga never sees two different answers for one step."""
    await add_stock(rig.inventory, SKU, 3)
    first = await rig.call("inventory.reserve.prepare", reserve("o-1", 5), "p-1")
    assert first.outcome is Outcome.REJECTED
    assert first.reason_code == OrderReason.INSUFFICIENT_STOCK
    assert (await rig.stock()).reserved == 0
    assert await rig.inventory.get(Reservation, "o-1") is None

    await add_stock(rig.inventory, SKU, 10)
    retry = await rig.call("inventory.reserve.prepare", reserve("o-1", 5), "p-2")
    assert retry == first
    stock = await rig.stock()
    assert (stock.on_hand, stock.reserved) == (13, 0)
    fence = await rig.inventory.get(Fence, fence_id("o-1", RESERVE))
    assert fence is not None
    assert fence.state is FenceState.REJECTED


async def test_payment_hold_beyond_balance_is_declined(rig: Rig) -> None:
    """A hold the customer cannot afford is declined; one they can is held and then captured."""
    await add_funds(rig.payment, "cust-1", 1_000)
    declined = await rig.call("payment.hold.prepare", hold("o-1", "cust-1", "10.01"), "h-1")
    assert declined.outcome is Outcome.REJECTED
    assert declined.reason_code == OrderReason.PAYMENT_DECLINED
    account = await rig.account("cust-1")
    assert (account.balance, account.held) == (1_000, 0)
    assert await rig.payment.get(Hold, "o-1") is None

    assert (await rig.call("payment.hold.prepare", hold("o-2", "cust-1", "10.00"),
                           "h-2")).outcome is Outcome.SUCCEEDED
    account = await rig.account("cust-1")
    assert (account.balance, account.held) == (1_000, 1_000)
    capture = hold("o-2", "cust-1", "10.00")
    assert (await rig.call("payment.hold.confirm", capture, "cap-2")).outcome is Outcome.SUCCEEDED
    account = await rig.account("cust-1")
    assert (account.balance, account.held) == (0, 0)


# --- concurrency -----------------------------------------------------------------------------


async def test_concurrent_prepares_on_a_hot_sku_never_oversell(rig: Rig) -> None:
    """Many sagas racing for scarce stock: reservations add up and never exceed stock on hand."""
    on_hand, quantity, sagas = 11, 2, 12
    await add_stock(rig.inventory, SKU, on_hand)
    await asyncio.gather(*(rig.send("inventory.reserve.prepare", reserve(f"o-{i}", quantity), f"p-{i}")
                           for i in range(sagas)))
    replies = [reply for i in range(sagas) for _, reply in await rig.replies_to(f"p-{i}")]
    succeeded = [r for r in replies if r.outcome is Outcome.SUCCEEDED]
    rejected = [r for r in replies if r.outcome is Outcome.REJECTED]
    assert all(r.reason_code == OrderReason.INSUFFICIENT_STOCK for r in rejected)
    assert len(succeeded) + len(rejected) == sagas, [r.detail for r in replies]
    stock = await rig.stock()
    assert stock.on_hand == on_hand
    assert stock.reserved == len(succeeded) * quantity <= on_hand
    # No false refusal: stock ran out before anyone was turned away.
    assert len(succeeded) == on_hand // quantity
    held = await rig.inventory.all(Reservation)
    assert sorted(r.id for r in held) == sorted(r.saga_id for r in succeeded)


# --- invalid commands ------------------------------------------------------------------------


async def test_misrouted_or_mismatched_commands_are_dead_lettered(rig: Rig) -> None:
    """A command of another service, or one whose saga id is not its correlation id, goes to the
    dead-letter queue with a reason, gets no reply and changes nothing."""
    await add_stock(rig.inventory, SKU, 10)
    await rig.send("payment.hold.prepare", hold("o-1", "cust-1", "1.00"), "wrong-service",
                   service="inventory")
    await rig.send("inventory.reserve.prepare", reserve("o-2", 1), "wrong-saga", correlation_id="o-3")
    dead = await rig.dead_letters("inventory", 2)
    assert sorted(m.message_id or "" for m in dead) == ["wrong-saga", "wrong-service"]
    reasons = {m.message_id: str(m.headers[REASON_HEADER]) for m in dead}
    assert "not a command of the inventory service" in reasons["wrong-service"]
    assert "correlation_id" in reasons["wrong-saga"]

    # A valid command after them is answered, and the dead letters never were.
    assert (await rig.call("inventory.reserve.prepare", reserve("o-4", 1), "ok")).outcome is Outcome.SUCCEEDED
    assert "wrong-service" not in rig.replies
    assert "wrong-saga" not in rig.replies
    assert (await rig.stock()).reserved == 1
    worker = rig.participants["inventory"]
    assert worker.metric("saga_messages_dead_lettered_total",
                         queue=rig.topology.command_queue("inventory"), error="InvalidMessage") == 2


async def test_a_reply_goes_where_its_command_asked_and_a_foreign_address_is_refused(
        rig: Rig) -> None:
    """A command of partitioned work names its partition's reply key (AMQP reply_to): the
    reply is routed there, not to the shared key. A reply_to that is no reply key of the
    platform is refused: dead-lettered with the reason, unanswered, nothing changed."""
    await add_stock(rig.inventory, SKU, 10)
    partition = await rig.rabbit.temporary_queue(rig.topology.replies_exchange,
                                                 (partition_key(5),))
    await rig.send("inventory.reserve.prepare", reserve("o-1", 1), "routed",
                   reply_to=partition_key(5))
    await rig.send("inventory.reserve.prepare", reserve("o-2", 1), "foreign",
                   reply_to="orders.completed")
    [dead] = await rig.dead_letters("inventory", 1)
    assert dead.message_id == "foreign"
    assert "reply_to 'orders.completed'" in str(dead.headers[REASON_HEADER])
    deadline = asyncio.get_running_loop().time() + WAIT
    while (reply := await rig.rabbit.get(partition)) is None:
        assert asyncio.get_running_loop().time() < deadline, "no reply on the partition's key"
        await asyncio.sleep(POLL)
    assert read_envelope(reply).causation_id == "routed"
    assert read_payload(reply, StepReply).outcome is Outcome.SUCCEEDED
    await rig.call("inventory.reserve.prepare", reserve("o-3", 1), "shared")  # the default key
    assert "routed" not in rig.replies
    assert "foreign" not in rig.replies
    assert (await rig.stock()).reserved == 2


# --- state left behind by a manual repair ---------------------------------------------------


async def test_an_effect_without_its_fence_fails_the_step_visibly(rig: Rig) -> None:
    """A reservation that exists although the fence says the step never ran here (a manual
    repair, a write from outside) is neither applied again nor retried forever: the step
    fails permanently with a reason an operator can act on, and it is counted."""
    await add_stock(rig.inventory, SKU, 10)
    await rig.inventory.put(Reservation(id="o-1", lines=(StockLine(sku=SKU, quantity=2),),
                                        state="held", updated_at=0.0))
    reply = await rig.call("inventory.reserve.prepare", reserve("o-1", 2), "p-1")
    assert reply.outcome is Outcome.PERMANENT_ERROR, reply.detail
    assert "already exists" in reply.detail
    assert (await rig.stock()).reserved == 0
    assert await rig.inventory.get(Fence, fence_id("o-1", RESERVE)) is None
    worker = rig.participants["inventory"]
    assert worker.metric("saga_worker_orphaned_effects_total", service="inventory") == 1


# --- an unreachable database ------------------------------------------------------------------


class Unreachable:
    """A participant store whose first ``failures`` transactions find no database."""

    def __init__(self, inner: DocumentStore, failures: float) -> None:
        self._inner = inner
        self.failures = failures

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """Fail while failures remain, then behave as the wrapped store."""
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("database unreachable: ServerSelectionTimeoutError")
        return self._inner.transaction()

    async def get[T: Doc](self, kind: type[T], id: str) -> T | None:
        """Delegate."""
        return await self._inner.get(kind, id)

    async def all[T: Doc](self, kind: type[T], limit: int = 100_000) -> list[T]:
        """Delegate."""
        return await self._inner.all(kind, limit)

    async def put(self, doc: Doc) -> None:
        """Delegate."""
        await self._inner.put(doc)

    async def ensure_indexes(self, expiring: tuple[str, ...]) -> None:
        """Delegate."""
        await self._inner.ensure_indexes(expiring)


async def _unreachable_rig(rabbit: RabbitTransport, topology: Topology, amqp_url: str,
                           store: Unreachable, patience: float) -> tuple[Rig, Worker]:
    common = CommonSettings(amqp_url=SecretStr(amqp_url), namespace=topology.namespace,
                            store="memory")
    settings = WorkerSettings(common=common, service="inventory", store_patience=patience)
    transport = RabbitTransport(amqp_url, connection_name="pytest-inventory", connect_timeout=10)
    await transport.connect()
    worker = Worker(settings=settings, spec=inventory.SERVICE, transport=transport, store=store,
                    metrics=WorkerMetrics(CollectorRegistry()))
    await worker.start()
    reply_queue = await rabbit.temporary_queue(topology.replies_exchange, (REPLY_KEY,))
    return Rig(rabbit, topology, reply_queue, {}), worker


async def test_a_database_blip_is_waited_out(rabbit: RabbitTransport, topology: Topology,
                                             amqp_url: str) -> None:
    """A database that fails three times and then answers costs a command nothing."""
    inner = MemoryDocumentStore()
    await add_stock(inner, SKU, 10)
    store = Unreachable(inner, failures=3)
    rig, worker = await _unreachable_rig(rabbit, topology, amqp_url, store, patience=20)
    try:
        reply = await rig.call("inventory.reserve.prepare", reserve("o-1", 2), "p-1")
        assert reply.outcome is Outcome.SUCCEEDED
        assert store.failures == 0
    finally:
        await worker.stop()


async def test_a_database_down_for_good_gets_a_retryable_answer(
        rabbit: RabbitTransport, topology: Topology, amqp_url: str) -> None:
    """A command is not held while the database stays away: after the patience it is
    answered "try again later" (the orchestrator's policy retries it), acknowledged, and
    never dead-lettered, so broker reconnects cannot push it to the delivery limit."""
    store = Unreachable(MemoryDocumentStore(), failures=float("inf"))
    rig, worker = await _unreachable_rig(rabbit, topology, amqp_url, store, patience=0.5)
    try:
        reply = await rig.call("inventory.reserve.prepare", reserve("o-1", 2), "p-1")
        assert reply.outcome is Outcome.RETRYABLE_ERROR
        assert "database unavailable" in reply.detail
        dlq = dead_letter_queue(topology.command_queue("inventory"))
        assert await rabbit.get(dlq) is None
        assert await rabbit.depth(topology.command_queue("inventory")) == 0
    finally:
        await worker.stop()


# --- the shipment: tentative until the commit point ------------------------------------------


def booking(saga_id: str) -> StepCommand:
    """A command of shipping's book (or, for version 1, schedule) operation."""
    params = ScheduleShipment(order_id=saga_id, customer_id="cust-1",
                              lines=(StockLine(sku=SKU, quantity=1),))
    return StepCommand(saga_id=saga_id, step="schedule_shipment",
                       params=params.model_dump(mode="json"))


async def test_a_booking_is_tentative_until_confirmed_or_cancelled(rig: Rig) -> None:
    store = rig.participants["shipping"].store
    prepared = await rig.call("shipping.book.prepare", booking("o-1"), "b-1")
    assert (prepared.outcome, prepared.detail) == (Outcome.SUCCEEDED, "shipment TENTATIVE")
    shipment = await store.get(Shipment, "o-1")
    assert shipment is not None
    assert shipment.status == "TENTATIVE"  # nobody reading scheduled shipments sees it
    confirmed = await rig.call("shipping.book.confirm", booking("o-1"), "b-2")
    assert confirmed.detail == "shipment SCHEDULED"
    await rig.call("shipping.book.prepare", booking("o-2"), "b-3")
    cancelled = await rig.call("shipping.book.cancel", booking("o-2"), "b-4")
    assert cancelled.detail == "shipment CANCELLED"
    statuses = {i: (await store.get(Shipment, i)) for i in ("o-1", "o-2")}
    assert {i: s.status for i, s in statuses.items() if s} == {"o-1": "SCHEDULED",
                                                               "o-2": "CANCELLED"}


async def test_a_late_booking_after_its_cancel_books_nothing(rig: Rig) -> None:
    """The cancel overtook the prepare (a timeout): an empty rollback, then the late
    prepare is refused by the fence; no tentative booking is left behind."""
    cancelled = await rig.call("shipping.book.cancel", booking("o-3"), "l-1")
    assert (cancelled.outcome, cancelled.detail) == (Outcome.SUCCEEDED, "nothing to undo")
    late = await rig.call("shipping.book.prepare", booking("o-3"), "l-2")
    assert late.outcome is not Outcome.SUCCEEDED
    assert await rig.participants["shipping"].store.get(Shipment, "o-3") is None


async def test_version_1_sagas_still_book_at_once(rig: Rig) -> None:
    scheduled = await rig.call("shipping.schedule", booking("o-4"), "v-1")
    assert scheduled.detail == "shipment SCHEDULED"
    undone = await rig.call("shipping.schedule.undo", booking("o-4"), "v-2")
    assert undone.detail == "shipment CANCELLED"
