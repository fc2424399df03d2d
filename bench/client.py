"""The load generator: submits orders through the public contract and times their outcomes.

It is the same for every system: an ``order.requested`` message published with a
confirm (``client.orders.submit``) and the outcome event read from a private queue bound
to the orders exchange. Latency runs from just before the publish to the arrival of the
outcome event. Its own CPU is not counted as the system's.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from client.orders import submit
from contracts.orders import OrderRequested
from contracts.registry import ORDER_COMPLETED, ORDER_FAILED
from contracts.topology import Topology
from infra.adapters.rabbit import RabbitTransport
from infra.transport import Delivery


@dataclass
class LoopResult:
    """One closed-loop run: each saga's latency and how long the whole run took."""

    inflight: int
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    lost: int = 0
    elapsed: float = 0.0

    @property
    def completed(self) -> int:
        """Sagas that ended in ``order.completed``."""
        return len(self.latencies)

    @property
    def rate(self) -> float:
        """Completed sagas per second."""
        return self.completed / self.elapsed if self.elapsed else 0.0


class Client:
    """Submits orders and waits for their outcomes on one connection."""

    def __init__(self, transport: RabbitTransport, topology: Topology, timeout: float) -> None:
        self._transport = transport
        self._topology = topology
        self._timeout = timeout
        self._waiting: dict[str, asyncio.Future[tuple[float, bool]]] = {}

    async def start(self) -> None:
        """Bind the private outcome queue before anything is submitted."""
        queue = await self._transport.temporary_queue(self._topology.orders_exchange,
                                                      (ORDER_COMPLETED, ORDER_FAILED))
        await self._transport.consume(queue, self._on_outcome, prefetch=2000)

    async def _on_outcome(self, delivery: Delivery) -> None:
        arrived = time.perf_counter()
        message = delivery.message
        await delivery.ack()
        order_id = json.loads(message.body).get("order_id")
        future = self._waiting.pop(order_id, None)
        if future is not None and not future.done():
            future.set_result((arrived, message.type == ORDER_COMPLETED))

    async def publish(self, order: OrderRequested) -> None:
        """Submit without waiting for the outcome."""
        await submit(self._transport, self._topology, order)

    async def one(self, order: OrderRequested, result: LoopResult) -> None:
        """Submit one order and wait for its outcome; record it in ``result``."""
        assert order.order_id is not None
        future: asyncio.Future[tuple[float, bool]] = asyncio.get_running_loop().create_future()
        self._waiting[order.order_id] = future
        began = time.perf_counter()
        await submit(self._transport, self._topology, order)
        try:
            arrived, completed = await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            self._waiting.pop(order.order_id, None)
            result.lost += 1
            return
        if completed:
            result.latencies.append(arrived - began)
        else:
            result.failed += 1

    async def closed_loop(self, orders: list[OrderRequested], inflight: int) -> LoopResult:
        """Keep ``inflight`` sagas running: each lane submits its next order when one ends."""
        result = LoopResult(inflight)
        pending = iter(orders)

        async def lane() -> None:
            for order in pending:
                await self.one(order, result)

        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(inflight)))
        result.elapsed = time.perf_counter() - began
        return result
