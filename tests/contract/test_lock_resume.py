"""A resumed lock wait whose answer the broker refuses owes that answer, durably, until it
is sent: the prepare is committed, and nothing else would tell the orchestrator before the
step timeout (a chaos run lost such answers on connection cuts and worker kills, and the
transfers waiting behind the step timed out with LOCK_TIMEOUT)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry
from pydantic import Field

from contracts.commands import Operation, Outcome, StepCommand, StepReply
from contracts.envelope import Envelope, Model, WireMessage, encode, read_payload, utcnow
from contracts.topology import REPLY_KEY, Plan, Topology
from infra.adapters.memory_bus import InMemoryBroker, InMemoryTransport
from infra.errors import PublishFailed
from infra.settings import FaultSettings
from workers.faults import InjectedFaults
from workers.locks import LockPolicy, Locks, Waiter
from workers.metrics import WorkerMetrics
from workers.runtime import WorkerRuntime
from workers.sdk import Participant, StepContext, TwoPhase
from workers.store import Tx
from workers.store_memory import MemoryDocumentStore

TOPOLOGY = Topology("resume")


def gate_runtime(store: MemoryDocumentStore, transport: InMemoryTransport) -> WorkerRuntime:
    """The gate's runtime, with fresh metrics and no faults."""
    metrics = WorkerMetrics(CollectorRegistry())
    return WorkerRuntime(spec=GATE, store=store, transport=transport, topology=TOPOLOGY,
                         metrics=metrics.service("gate", parks=True),
                         faults=InjectedFaults("gate", FaultSettings(), metrics.faults),
                         clock=time.time)


class Keys(Model):
    """The items one step holds."""

    items: tuple[str, ...] = Field(max_length=5)


async def noted(tx: Tx, p: Keys, step: StepContext) -> str:
    return f"{step.step} ran"


GATE = Participant(name="gate", operations=(
    TwoPhase("pass", Keys, prepare=noted, confirm=noted, cancel=noted,
             locks=Locks("item", lambda p: p.items, policy=LockPolicy.WAIT, wait_timeout=60)),))


class Refusing(InMemoryTransport):
    """The in-memory transport, refusing every publish while ``refusing`` is set (as a cut
    connection does)."""

    refusing = False

    async def publish(self, exchange: str, routing_key: str, message: WireMessage, *,
                      must_route: bool = True) -> bool:
        if self.refusing:
            raise PublishFailed("connection closed")
        return await super().publish(exchange, routing_key, message, must_route=must_route)


def command(saga: str, op: Operation, message_id: str) -> WireMessage:
    kind = {Operation.FORWARD: "gate.pass.prepare", Operation.CONFIRM: "gate.pass.confirm",
            Operation.COMPENSATE: "gate.pass.cancel"}[op]
    body = StepCommand(saga_id=saga, step="s", params={"items": ["x"]})
    return encode(Envelope(message_id=message_id, correlation_id=saga, message_type=kind,
                           timestamp=utcnow()), body)


async def test_an_answer_the_broker_refused_is_sent_on_the_next_look() -> None:
    broker = InMemoryBroker()
    transport = Refusing(broker)
    await transport.declare(TOPOLOGY, Plan((), ("gate",)))
    replies = await transport.temporary_queue(TOPOLOGY.replies_exchange, (REPLY_KEY,))
    store = MemoryDocumentStore()
    runtime = gate_runtime(store, transport)

    async def answers() -> list[tuple[object, StepReply]]:
        out: list[tuple[object, StepReply]] = []
        while (m := await transport.get(replies)) is not None:
            out.append((m.headers.get("x-causation-id"), read_payload(m, StepReply)))
        return out

    await runtime.handle(command("gate:a", Operation.FORWARD, "a-1"))
    await runtime.handle(command("gate:b", Operation.FORWARD, "b-1"))
    await runtime.handle(command("gate:a", Operation.CONFIRM, "a-2"))
    assert [(cause, r.outcome) for cause, r in await answers()] == [
        ("a-1", Outcome.SUCCEEDED), ("b-1", Outcome.WAITING), ("a-2", Outcome.SUCCEEDED)]

    transport.refusing = True  # the connection is cut as b's prepare is resumed
    assert await runtime.look_at_waits() == 1
    [owed] = await store.all(Waiter)  # b's prepare is committed, its answer owed
    assert (owed.id, owed.answered) == ("gate:b:s", True)
    transport.refusing = False
    assert await answers() == []

    # The process dies before it could send it; the next one, on the same database, does.
    restarted = gate_runtime(store, transport)
    assert await restarted.look_at_waits() == 1
    [(cause, reply)] = await answers()
    assert (cause, reply.outcome, reply.detail) == ("b-1", Outcome.SUCCEEDED, "s ran")
    assert await store.all(Waiter) == []
    assert await restarted.look_at_waits() == 0
    assert await answers() == []
