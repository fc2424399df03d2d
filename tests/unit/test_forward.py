"""Cancels and operator actions reach the instance that holds their saga's partition
(orchestrator.forward), on the in-memory broker."""

from __future__ import annotations

import json

import pytest

from contracts.admin import Action, AdminAction
from contracts.envelope import CodecError, WireMessage
from contracts.topology import Plan, Topology, partition_of
from infra.adapters.memory_bus import InMemoryBroker
from infra.errors import InvalidMessage
from orchestrator.forward import (
    ADMIN,
    FORWARDED_HEADER,
    Forwarder,
    admin_saga,
    cancel_kind,
)
from orchestrator.leases import MemoryLeases
from orchestrator.partitions import PartitionKeeper

P = 4
TOPOLOGY = Topology("fwd")
ORCHESTRATOR = "saga-orchestrator"
SAGA = "order:o-1"


def keeper(owned: set[int]) -> PartitionKeeper:
    kept = PartitionKeeper(MemoryLeases(), member="me", partitions=P, lease_seconds=10,
                           clock=lambda: 0.0)
    kept.owned = owned
    return kept


def action(saga_id: str = SAGA) -> WireMessage:
    body = AdminAction(saga_id=saga_id, action=Action.CANCEL, operator="ops").model_dump_json()
    return WireMessage(body.encode(), message_id="act-1", type="admin.action")


class Seen:
    """Records what a handler was given."""

    def __init__(self) -> None:
        self.messages: list[WireMessage] = []

    async def __call__(self, message: WireMessage) -> None:
        self.messages.append(message)


@pytest.fixture
async def broker() -> InMemoryBroker:
    broker = InMemoryBroker()
    await broker.connect().declare(TOPOLOGY, Plan((), (), P))
    return broker


async def test_an_action_on_a_saga_held_here_is_handled_here(broker: InMemoryBroker) -> None:
    """Nothing is published when this instance holds the saga's partition."""
    seen = Seen()
    forwarder = Forwarder(broker.connect(ORCHESTRATOR), TOPOLOGY,
                          keeper({partition_of(SAGA, P)}), ORCHESTRATOR)
    await forwarder.routed(ADMIN, admin_saga, seen)(action())
    assert [m.message_id for m in seen.messages] == ["act-1"]
    for partition in range(P):
        assert await broker.connect().depth(TOPOLOGY.partition_queue(partition)) == 0


async def test_an_action_on_another_instances_saga_goes_to_its_partition(
        broker: InMemoryBroker) -> None:
    """The copy lands in the saga's partition queue, marked, and the dispatcher there hands
    it to the operator-action handler, not to the replies."""
    seen, replies, cancels = Seen(), Seen(), Seen()
    forwarded: list[str] = []
    forwarder = Forwarder(broker.connect(ORCHESTRATOR), TOPOLOGY, keeper(set()), ORCHESTRATOR,
                          forwarded.append)
    await forwarder.routed(ADMIN, admin_saga, seen)(action())
    assert seen.messages == []
    assert forwarded == [ADMIN]
    copy = await broker.connect().get(TOPOLOGY.partition_queue(partition_of(SAGA, P)))
    assert copy is not None
    assert (copy.message_id, copy.headers[FORWARDED_HEADER], copy.user_id) == (
        "act-1", ADMIN, ORCHESTRATOR)
    await forwarder.dispatch(replies, seen, {"order": cancels})(copy)
    assert [m.message_id for m in seen.messages] == ["act-1"]
    assert replies.messages == cancels.messages == []


async def test_a_cancel_goes_to_its_definitions_cancel_handler(broker: InMemoryBroker) -> None:
    """A forwarded cancel names its definition; a reply (no mark) goes to the replies."""
    replies, admin, orders, transfers = Seen(), Seen(), Seen(), Seen()
    forwarder = Forwarder(broker.connect(ORCHESTRATOR), TOPOLOGY, keeper(set()), ORCHESTRATOR)
    body = json.dumps({"order_id": "o-1"}).encode()
    await forwarder.routed(cancel_kind("order"), lambda m: SAGA, Seen())(
        WireMessage(body, message_id="c-1"))
    copy = await broker.connect().get(TOPOLOGY.partition_queue(partition_of(SAGA, P)))
    assert copy is not None
    dispatch = forwarder.dispatch(replies, admin, {"order": orders, "transfer": transfers})
    await dispatch(copy)
    await dispatch(WireMessage(b"{}", message_id="r-1", user_id="saga-inventory"))
    assert [m.message_id for m in orders.messages] == ["c-1"]
    assert [m.message_id for m in replies.messages] == ["r-1"]
    assert admin.messages == transfers.messages == []


@pytest.mark.parametrize("kind", [ADMIN, cancel_kind("order")])
async def test_a_mark_from_anyone_but_the_orchestrators_is_refused(kind: str) -> None:
    """A participant may publish to the replies exchange, so its message marked as forwarded
    is invalid input (dead-lettered by the boundary), and no handler sees it."""
    seen = Seen()
    forwarder = Forwarder(InMemoryBroker().connect(ORCHESTRATOR), TOPOLOGY, keeper(set()),
                          ORCHESTRATOR)
    forged = WireMessage(action().body, message_id="f-1", user_id="saga-payment",
                         headers={FORWARDED_HEADER: kind})
    with pytest.raises(InvalidMessage, match="orchestrators' user"):
        await forwarder.dispatch(seen, seen, {"order": seen})(forged)
    assert seen.messages == []


async def test_an_unknown_mark_is_refused() -> None:
    """A mark naming no known kind or definition is invalid input too."""
    seen = Seen()
    forwarder = Forwarder(InMemoryBroker().connect(ORCHESTRATOR), TOPOLOGY, keeper(set()),
                          ORCHESTRATOR)
    for kind in ("cancel:nothing", "whatever"):
        with pytest.raises(InvalidMessage, match="no kind of forwarded message"):
            await forwarder.dispatch(seen, seen, {"order": seen})(WireMessage(
                b"{}", user_id=ORCHESTRATOR, headers={FORWARDED_HEADER: kind}))
    assert seen.messages == []


async def test_a_message_naming_no_saga_is_handled_here_to_be_refused() -> None:
    """What names no saga cannot be routed: the local handler refuses it as it would
    without partitions."""
    seen = Seen()
    forwarder = Forwarder(InMemoryBroker().connect(ORCHESTRATOR), TOPOLOGY, keeper(set()),
                          ORCHESTRATOR)
    unreadable = WireMessage(b"not json", message_id="u-1")
    with pytest.raises(CodecError):
        admin_saga(unreadable)
    await forwarder.routed(ADMIN, admin_saga, seen)(unreadable)
    assert [m.message_id for m in seen.messages] == ["u-1"]
