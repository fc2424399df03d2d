"""The whole system as separate OS processes, driven only through the public contract."""

from __future__ import annotations

import asyncio
import io

import pytest

from client.admin import act
from contracts.admin import Action
from contracts.commands import Operation
from contracts.orders import OrderReason
from contracts.reasons import PlatformReason
from engine.state import OpStatus, SagaStatus
from tests.contract.test_boundary import eventually
from tests.e2e.conftest import Deploy
from tests.e2e.harness import Deployment
from tests.e2e.test_cancel import _cancel
from workers.inventory import StockItem
from workers.order import OrderRecord
from workers.payment import Account

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

STOCK = {"apple": 50, "pear": 5}
FUNDS = {"alice": 100_000, "bob": 1_000}  # cents


async def test_orders_complete_and_every_store_agrees(deploy: Deploy) -> None:
    """With no faults every order completes, and stock and money move exactly once."""
    d = await deploy()
    await d.seed(STOCK, FUNDS)
    ids = {await d.order(f"ok-{i}", "alice", ("apple", 2, "1.50"), ("pear", 1, "4.00"))
           for i in range(3)}
    outcomes = await d.outcomes(ids)
    assert {o.label for o in outcomes.values()} == {"completed"}
    report = await d.settled()
    assert report.ok, report.violations
    apple = await d.stores.services["inventory"].get(StockItem, "apple")
    alice = await d.stores.services["payment"].get(Account, "alice")
    assert apple is not None
    assert (apple.on_hand, apple.reserved) == (44, 0)
    assert alice is not None
    assert alice.balance == 100_000 - 3 * 700
    saga = await d.saga("ok-0")
    assert saga.state.status is SagaStatus.COMPLETED
    assert not saga.outbox


async def test_business_rejections_undo_everything_done_before(deploy: Deploy) -> None:
    """Insufficient stock, a declined payment and an unknown SKU each fail their order with
    the right reason, and whatever the other steps did is undone."""
    d = await deploy()
    await d.seed(STOCK, FUNDS)
    await d.order("no-stock", "alice", ("pear", 6, "4.00"))
    await d.order("no-money", "bob", ("apple", 1, "20.00"))
    await d.order("no-sku", "alice", ("plum", 1, "1.00"))
    outcomes = await d.outcomes({"no-stock", "no-money", "no-sku"})
    assert outcomes["no-stock"].label == OrderReason.INSUFFICIENT_STOCK
    assert outcomes["no-money"].label == OrderReason.PAYMENT_DECLINED
    assert outcomes["no-sku"].label == OrderReason.UNKNOWN_SKU
    report = await d.settled()
    assert report.ok, report.violations
    order = await d.stores.services["order"].get(OrderRecord, "no-money")
    assert order is not None
    assert order.status == "REJECTED"
    assert order.reason_code == OrderReason.PAYMENT_DECLINED
    bob = await d.stores.services["payment"].get(Account, "bob")
    assert bob is not None
    assert (bob.balance, bob.held) == (1_000, 0)


@pytest.mark.parametrize(("service", "reason"), [
    ("order", OrderReason.ORDER_REFUSED),
    ("shipping", OrderReason.SHIPPING_UNAVAILABLE),
])
async def test_rejection_by_the_first_and_the_last_step_before_commit(
        deploy: Deploy, service: str, reason: str) -> None:
    """A service that refuses every order (injected) fails it; stock and funds are released."""
    d = await deploy()
    await d.reconfigure(service, {"SAGA_FAULT_REJECT": "1"})
    await d.seed(STOCK, FUNDS)
    await d.order("refused", "alice", ("apple", 1, "1.00"))
    outcomes = await d.outcomes({"refused"})
    assert outcomes["refused"].label == reason
    report = await d.settled()
    assert report.ok, report.violations
    apple = await d.stores.services["inventory"].get(StockItem, "apple")
    assert apple is not None
    assert (apple.on_hand, apple.reserved) == (50, 0)


async def test_transient_failures_are_retried_until_they_succeed(deploy: Deploy) -> None:
    """With a third of all commands failing transiently, every order still completes."""
    d = await deploy(orchestrator={"SAGA_STEP_ATTEMPTS": "10", "SAGA_BACKOFF": "0.05"},
                     workers={"SAGA_FAULT_TRANSIENT": "0.3", "SAGA_FAULT_SEED": "3"})
    await d.seed(STOCK, FUNDS)
    ids = {await d.order(f"flaky-{i}", "alice", ("apple", 1, "1.00")) for i in range(6)}
    outcomes = await d.outcomes(ids)
    assert {o.label for o in outcomes.values()} == {"completed"}
    assert await d.metric("orchestrator", "saga_step_retries_total") > 0
    report = await d.settled()
    assert report.ok, report.violations


async def test_a_step_that_never_answers_in_time_fails_the_order_with_timeout(
        deploy: Deploy) -> None:
    """Payment answers only after every attempt has timed out: the order fails with
    TIMEOUT, the late holds are refused or released, and no money stays held. (An answer
    that arrives while a later attempt is still awaited settles the step instead.)"""
    d = await deploy(orchestrator={"SAGA_STEP_TIMEOUT": "0.5", "SAGA_STEP_ATTEMPTS": "2",
                                   "SAGA_BACKOFF": "0.05"})
    await d.reconfigure("payment", {"SAGA_FAULT_LATENCY_MS": "8000"})
    await d.seed(STOCK, FUNDS)
    await d.order("slow", "alice", ("apple", 1, "1.00"))
    outcomes = await d.outcomes({"slow"}, timeout=60)
    assert outcomes["slow"].label == PlatformReason.TIMEOUT
    assert await d.metric("orchestrator", "saga_step_timeouts_total", step="hold_funds") >= 2
    report = await d.settled(timeout=45)
    assert report.ok, report.violations
    alice = await d.stores.services["payment"].get(Account, "alice")
    assert alice is not None
    assert (alice.balance, alice.held) == (100_000, 0)


async def test_duplicated_commands_and_replies_are_applied_once(deploy: Deploy) -> None:
    """Every command and every reply is published twice; each effect still happens once."""
    d = await deploy(orchestrator={"SAGA_FAULT_DUPLICATE": "1"},
                     workers={"SAGA_FAULT_DUPLICATE": "1"})
    await d.seed(STOCK, FUNDS)
    ids = {await d.order(f"dup-{i}", "alice", ("apple", 1, "2.00")) for i in range(4)}
    outcomes = await d.outcomes(ids)
    assert {o.label for o in outcomes.values()} == {"completed"}
    report = await d.settled()
    assert report.ok, report.violations
    assert await d.metric("inventory", "saga_worker_duplicate_commands_total") > 0
    assert await d.metric("orchestrator", "saga_stale_replies_total") > 0
    apple = await d.stores.services["inventory"].get(StockItem, "apple")
    assert apple is not None
    assert apple.on_hand == 50 - 4


async def test_a_repeated_order_id_does_not_start_a_second_saga(deploy: Deploy) -> None:
    """Publishing the same order request twice charges the customer once."""
    d = await deploy()
    await d.seed(STOCK, FUNDS)
    await d.order("twice", "alice", ("apple", 1, "3.00"))
    await d.order("twice", "alice", ("apple", 1, "3.00"))
    await d.outcomes({"twice"})
    report = await d.settled()
    assert report.ok, report.violations
    alice = await d.stores.services["payment"].get(Account, "alice")
    assert alice is not None
    assert alice.balance == 100_000 - 300
    assert await d.metric("orchestrator", "saga_duplicate_requests_total") == 1


async def test_orchestrator_killed_mid_saga_resumes_every_saga(deploy: Deploy) -> None:
    """SIGKILL of the orchestrator while sagas are in flight, then a restart: every saga
    still finishes, and nothing is applied twice."""
    d = await deploy(workers={"SAGA_FAULT_LATENCY_MS": "150"})
    await d.seed({"apple": 100}, {"alice": 1_000_000})
    ids = {await d.order(f"crash-{i}", "alice", ("apple", 1, "1.00")) for i in range(12)}
    await d.watcher.wait_for_count(2, 30)
    d.cluster.processes["orchestrator"].kill()
    await asyncio.sleep(1.0)
    await d.cluster.restart("orchestrator")
    outcomes = await d.outcomes(ids, timeout=90)
    assert {o.label for o in outcomes.values()} == {"completed"}
    report = await d.settled()
    assert report.ok, report.violations
    apple = await d.stores.services["inventory"].get(StockItem, "apple")
    assert apple is not None
    assert (apple.on_hand, apple.reserved) == (88, 0)


async def test_two_orchestrators_share_the_work_without_double_processing(deploy: Deploy) -> None:
    """Two orchestrator instances consume the same queues; the version check of every save
    means no saga is advanced twice, and every order still completes exactly once."""
    d = await deploy(orchestrators=2, workers={"SAGA_FAULT_DUPLICATE": "0.5"})
    await d.seed({"apple": 100}, {"alice": 1_000_000})
    ids = {await d.order(f"pair-{i}", "alice", ("apple", 1, "1.00")) for i in range(16)}
    outcomes = await d.outcomes(ids, timeout=90)
    assert {o.label for o in outcomes.values()} == {"completed"}
    report = await d.settled()
    assert report.ok, report.violations
    apple = await d.stores.services["inventory"].get(StockItem, "apple")
    assert apple is not None
    assert apple.on_hand == 100 - 16
    started = [await d.metric(p, "saga_started_total") for p in ("orchestrator", "orchestrator-2")]
    assert sum(started) == 16
    assert min(started) > 0, "both instances should have taken order requests"


async def _owned(d: Deployment, *instances: str) -> list[float]:
    return [await d.metric(i, "saga_partitions_owned") for i in instances]


async def _until_owned(d: Deployment, want: list[float], *instances: str) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while (owned := await _owned(d, *instances)) != want:
        assert asyncio.get_running_loop().time() < deadline, f"partitions owned: {owned}"
        await asyncio.sleep(0.2)


async def test_partitioned_instances_split_the_work_and_take_over_from_a_dead_one(
        deploy: Deploy) -> None:
    """With SAGA_PARTITIONS, two instances hold half of the partitions each, every saga's
    replies and timers are handled by one instance, so no save ever loses a version check
    (duplicated replies included); when one instance is killed, the other takes its
    partitions over once their leases expire, and the sagas go on."""
    d = await deploy(orchestrators=2, workers={"SAGA_FAULT_DUPLICATE": "0.5"},
                     orchestrator={"SAGA_PARTITIONS": "4", "SAGA_PARTITION_LEASE": "3"})
    both = ("orchestrator", "orchestrator-2")
    await _until_owned(d, [2, 2], *both)
    await d.seed({"apple": 100}, {"alice": 1_000_000})
    ids = {await d.order(f"part-{i}", "alice", ("apple", 1, "1.00")) for i in range(16)}
    outcomes = await d.outcomes(ids, timeout=90)
    assert {o.label for o in outcomes.values()} == {"completed"}
    assert [await d.metric(i, "saga_version_conflicts_total") for i in both] == [0, 0]
    handled = [await d.metric(i, "saga_state_cache_total", result="hit") for i in both]
    assert min(handled) > 0, f"each instance should have handled replies: {handled}"

    d.cluster.processes["orchestrator-2"].kill()
    await _until_owned(d, [4], "orchestrator")
    more = {await d.order(f"after-{i}", "alice", ("apple", 1, "1.00")) for i in range(8)}
    outcomes = await d.outcomes(more, timeout=90)
    assert {o.label for o in outcomes.values()} == {"completed"}
    report = await d.settled()
    assert report.ok, report.violations
    apple = await d.stores.services["inventory"].get(StockItem, "apple")
    assert apple is not None
    assert apple.on_hand == 100 - 24


async def test_partitioned_instances_forward_cancels_and_operator_actions_to_the_holder(
        deploy: Deploy) -> None:
    """Cancels and operator actions arrive on queues both instances consume; the one that
    takes a saga it does not hold forwards it to the saga's partition, so the holder handles
    it in order with the saga's replies: every saga is cancelled, undone, and no save loses
    a version check."""
    d = await deploy(orchestrators=2,
                     orchestrator={"SAGA_PARTITIONS": "4", "SAGA_PARTITION_LEASE": "3",
                                   "SAGA_STEP_TIMEOUT": "30"})
    both = ("orchestrator", "orchestrator-2")
    await _until_owned(d, [2, 2], *both)
    await d.seed({"apple": 100}, {"alice": 1_000_000})
    await d.reconfigure("shipping", {"SAGA_FAULT_LATENCY_MS": "20000"})
    by_cancel = [f"fwd-c{i}" for i in range(8)]
    by_operator = [f"fwd-o{i}" for i in range(8)]
    for order_id in by_cancel + by_operator:
        await d.order(order_id, "alice", ("apple", 1, "1.00"))

    async def all_waiting() -> bool | None:
        for order_id in by_cancel + by_operator:
            record = await d.stores.sagas.load(f"order:{order_id}")
            op = None if record is None else record.state.op("schedule_shipment",
                                                              Operation.FORWARD)
            if op is None or op.status is not OpStatus.WAITING:
                return None
        return True

    assert await eventually(all_waiting, 60.0)
    for order_id in by_cancel:
        await _cancel(d, order_id, "forwarded")
    accepted = await asyncio.gather(*(
        act(d.settings, order_id, Action.CANCEL, "ops", "forwarded", 60, io.StringIO())
        for order_id in by_operator))
    assert all(accepted)
    outcomes = await d.outcomes(set(by_cancel + by_operator), timeout=90)
    assert {o.label for o in outcomes.values()} == {PlatformReason.CANCELLED}
    for order_id in by_cancel + by_operator:
        failure = (await d.saga(order_id)).state.failure
        assert failure is not None
        assert failure.reason_code == PlatformReason.CANCELLED
    forwarded = [await d.metric(i, "saga_forwarded_total") for i in both]
    assert sum(forwarded) > 0, "a cancel or an action taken by the other instance"
    assert [await d.metric(i, "saga_version_conflicts_total") for i in both] == [0, 0]
    await d.reconfigure("shipping", {"SAGA_FAULT_LATENCY_MS": "0"})
    report = await d.settled(timeout=60)
    assert report.ok, report.violations
