"""``sagactl retry`` and ``sagactl resolve``: an operator's action, sent to the orchestrator
on the admin queue (contracts.admin) and decided by the engine like any other event; this
prints the orchestrator's answer."""

from __future__ import annotations

import getpass
from typing import TextIO

from client import connect, status
from client.events import Collector
from contracts.admin import ADMIN_ACTION, ADMIN_RESULT, Action, AdminAction, AdminResult
from contracts.envelope import (
    CodecError,
    Envelope,
    encode,
    new_message_id,
    read_envelope,
    read_payload,
    utcnow,
)
from contracts.topology import Topology
from infra.adapters.rabbit import RabbitTransport
from infra.settings import CommonSettings
from infra.transport import Delivery
from orchestrator.app import definitions
from orchestrator.settings import OrchestratorSettings


def default_operator() -> str:
    """Who acts, unless ``--operator`` says: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no such user in the password database (containers)
        return "unknown"


async def act(common: CommonSettings, ident: str, action: Action, operator: str, note: str,
              timeout: float, out: TextIO) -> bool:
    """Ask for ``action`` on the saga ``ident`` (an id or a business key) and print the
    answer; True when it was done. Raises status.NotFound for an unknown saga."""
    stores = await connect.stores(common, definitions(OrchestratorSettings(common=common)))
    try:
        saga = (await status.lookup(stores.sagas, ident)).state.saga_id
    finally:
        await stores.close()
    request = AdminAction(saga_id=saga, action=action, operator=operator, note=note[:500])
    result = await _ask(common, request, timeout)
    if result is None:
        out.write(f"{saga}: no answer within {timeout:.0f}s (is the orchestrator running?)\n")
        return False
    verb = "done" if result.accepted else "refused"
    out.write(f"{saga}: {action.value} {verb}: {result.detail}\n")
    return result.accepted


async def _ask(common: CommonSettings, request: AdminAction, timeout: float,
               ) -> AdminResult | None:
    client = await AdminClient.open(common)
    try:
        return await client.ask(request, timeout)
    finally:
        await client.close()


class AdminClient:
    """One connection that sends actions and waits for their answers (sagactl, console)."""

    def __init__(self, transport: RabbitTransport, topology: Topology) -> None:
        self._transport = transport
        self._topology = topology
        self._answers: Collector[AdminResult] = Collector()

    @classmethod
    async def open(cls, common: CommonSettings, name: str = "sagactl") -> AdminClient:
        """Connect and listen for answers (raises connect.Unreachable)."""
        client = cls(await connect.transport(common, name), Topology(common.namespace))
        try:
            # Listening before asking, so that no answer can be missed.
            queue = await client._transport.temporary_queue(client._topology.admin_exchange,
                                                            (ADMIN_RESULT,))
            await client._transport.consume(queue, client._on_answer, prefetch=64)
        except BaseException:
            await client.close()
            raise
        return client

    async def _on_answer(self, delivery: Delivery) -> None:
        await delivery.ack()
        try:
            envelope = read_envelope(delivery.message)
            result = read_payload(delivery.message, AdminResult)
        except CodecError:
            return
        if envelope.causation_id is not None:
            self._answers.keep(envelope.causation_id, result)

    async def ask(self, request: AdminAction, timeout: float) -> AdminResult | None:
        """Send one action; its answer, or None when none came within ``timeout``."""
        envelope = Envelope(message_id=new_message_id(), correlation_id=request.saga_id,
                            message_type=ADMIN_ACTION, timestamp=utcnow())
        await self._transport.publish(self._topology.admin_exchange, ADMIN_ACTION,
                                      encode(envelope, request))
        if await self._answers.wait_for({envelope.message_id}, timeout):
            return None
        return self._answers.kept.pop(envelope.message_id)

    async def close(self) -> None:
        """Close the connection."""
        await self._transport.close()
