"""Who may answer a command: the mapping's syntax, and the real orchestrator refusing a
reply from another service's user, or one naming another step than its command.

The in-memory broker stamps each connection's user on what it publishes, as RabbitMQ's
``user_id`` does; tests/security/test_forged_replies.py shows the same on the real broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from client.orders import request_message
from contracts.commands import Operation, Outcome, StepReply
from contracts.envelope import Envelope, WireMessage, encode, new_message_id, utcnow
from contracts.orders import OrderItem, OrderRequested
from contracts.registry import ORDER_REQUESTED, STEP_REPLY
from contracts.topology import REPLY_KEY, Topology, dead_letter_queue, service_user
from engine.state import OpStatus
from infra.adapters.memory_bus import InMemoryBroker
from infra.consumer import ERROR_KIND_HEADER, REASON_HEADER
from infra.settings import CommonSettings, SettingsError
from orchestrator.app import build, definitions
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.senders import ReplySenders
from orchestrator.service import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.store_memory import MemorySagaStore
from tests.contract.test_boundary import eventually
from tests.plan import PLAN

TOPOLOGY = Topology("senders")
SAGA = "order:o-1"
WAIT = 5.0


def test_the_default_expects_each_service_as_its_own_user() -> None:
    senders = ReplySenders.parse("service")
    assert senders.expected("payment") == "saga-payment"
    assert senders.problem("payment", "saga-payment") is None
    problem = senders.problem("payment", "saga-notification")
    assert problem is not None
    assert "'saga-payment'" in problem
    assert "'saga-notification'" in problem
    assert senders.problem("payment", None) is not None


def test_explicit_users_and_a_default_for_the_others() -> None:
    senders = ReplySenders.parse("payment=alice, *=guest")
    assert (senders.expected("payment"), senders.expected("order")) == ("alice", "guest")
    assert ReplySenders.parse("payment=alice").expected("order") == "saga-order"


def test_any_accepts_everyone_and_says_so() -> None:
    senders = ReplySenders.parse("any")
    assert senders.relaxed
    assert senders.problem("payment", None) is None
    assert "any broker user" in senders.describe()


@pytest.mark.parametrize("text", ["everyone", "payment=", "=alice", "payment=a b", "Pay=x"])
def test_a_malformed_mapping_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="SERVICE=USER"):
        ReplySenders.parse(text)


def test_a_malformed_mapping_stops_the_orchestrator_with_one_line() -> None:
    settings = OrchestratorSettings(common=CommonSettings(store="memory"), reply_users="x")
    registry = definitions(settings)
    with pytest.raises(SettingsError, match=r"^SAGA_REPLY_USERS: "):
        build(settings, InMemoryBroker().connect(), MemorySagaStore(registry), registry,
              OrchestratorMetrics(CollectorRegistry()))


@dataclass
class Running:
    """The orchestrator, its store and metrics, and the broker."""

    broker: InMemoryBroker
    store: MemorySagaStore
    metrics: OrchestratorMetrics

    async def answer(self, user: str, step: str, operation: Operation,
                     command_id: str) -> None:
        """Publish a "succeeded" reply as ``user``."""
        envelope = Envelope(message_id=new_message_id(), correlation_id=SAGA,
                            causation_id=command_id, message_type=STEP_REPLY, timestamp=utcnow())
        reply = StepReply(saga_id=SAGA, step=step, operation=operation,
                          outcome=Outcome.SUCCEEDED)
        await self.broker.connect(user).publish(TOPOLOGY.replies_exchange, REPLY_KEY,
                                                encode(envelope, reply))

    async def dead_reply(self) -> WireMessage:
        """The next dead-lettered reply."""
        queue = dead_letter_queue(TOPOLOGY.replies_queue)
        return await eventually(lambda: self.broker.connect().get(queue), WAIT)

    async def create_order_status(self) -> OpStatus:
        """Where the saga's first step stands."""
        record = await self.store.load(SAGA)
        assert record is not None
        return record.state.op("create_order", Operation.FORWARD).status


@pytest.fixture
async def running(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Running, str]]:
    """The order saga o-1 started, waiting for the order service; yields its command id."""
    reply_users = getattr(request, "param", "service")
    settings = OrchestratorSettings(common=CommonSettings(store="memory", namespace="senders"),
                                    reply_users=reply_users)
    registry = definitions(settings)
    store = MemorySagaStore(registry)
    metrics = OrchestratorMetrics(CollectorRegistry())
    broker = InMemoryBroker()
    await broker.connect().declare(TOPOLOGY, PLAN)
    orchestrator: Orchestrator = build(settings, broker.connect("saga-orchestrator"), store,
                                       registry, metrics)
    await orchestrator.start()
    order = OrderRequested(order_id="o-1", customer_id="c-1", items=(
        OrderItem(sku="SKU-A", quantity=1, unit_price=Decimal("5.00")),))
    await broker.connect("saga-client").publish(TOPOLOGY.orders_exchange, ORDER_REQUESTED,
                                                request_message(order))
    command = await eventually(lambda: broker.connect().get(TOPOLOGY.command_queue("order")),
                               WAIT)
    assert command.user_id == "saga-orchestrator"
    assert command.message_id is not None
    yield Running(broker, store, metrics), command.message_id
    await orchestrator.stop()


async def test_a_reply_from_another_services_user_is_refused_and_counted(
        running: tuple[Running, str]) -> None:
    system, command_id = running
    await system.answer(service_user("notification"), "create_order", Operation.FORWARD,
                        command_id)
    dead = await system.dead_reply()
    assert dead.headers[ERROR_KIND_HEADER] == "ReplyRefused"
    assert "must be published by broker user 'saga-order'" in str(dead.headers[REASON_HEADER])
    assert system.metrics.replies_refused.labels("order")._value.get() == 1
    assert await system.create_order_status() is OpStatus.WAITING

    await system.answer(service_user("order"), "create_order", Operation.FORWARD, command_id)

    async def advanced() -> bool | None:
        return await system.create_order_status() is OpStatus.SUCCEEDED or None

    assert await eventually(advanced, WAIT)


async def test_a_reply_naming_another_step_than_its_command_is_refused(
        running: tuple[Running, str]) -> None:
    system, command_id = running
    await system.answer(service_user("order"), "create_order", Operation.COMPENSATE,
                        command_id)
    dead = await system.dead_reply()
    assert "names create_order compensate, its command was create_order forward" in str(
        dead.headers[REASON_HEADER])
    assert await system.create_order_status() is OpStatus.WAITING


@pytest.mark.parametrize("running", ["any"], indirect=True)
async def test_without_the_check_any_user_may_answer(running: tuple[Running, str]) -> None:
    system, command_id = running
    assert system.metrics.replies_unchecked._value.get() == 1
    await system.answer("somebody", "create_order", Operation.FORWARD, command_id)

    async def advanced() -> bool | None:
        return await system.create_order_status() is OpStatus.SUCCEEDED or None

    assert await eventually(advanced, WAIT)
