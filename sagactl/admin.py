"""``sagactl retry`` and ``sagactl resolve``: an operator's action, sent to the orchestrator
on the admin queue (contracts.admin) and decided by the engine like any other event; this
prints the orchestrator's answer."""

from __future__ import annotations

import getpass
from typing import TextIO

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
from infra.settings import CommonSettings, OrchestratorSettings
from infra.transport import Delivery
from orchestrator.app import definitions
from sagactl import connect, status
from sagactl.events import Collector


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
    topology = Topology(common.namespace)
    transport = await connect.transport(common)
    answers: Collector[AdminResult] = Collector()

    async def on_answer(delivery: Delivery) -> None:
        await delivery.ack()
        try:
            envelope = read_envelope(delivery.message)
            result = read_payload(delivery.message, AdminResult)
        except CodecError:
            return
        if envelope.causation_id is not None:
            answers.keep(envelope.causation_id, result)

    try:
        # Listening before asking, so that the answer cannot be missed.
        queue = await transport.temporary_queue(topology.admin_exchange, (ADMIN_RESULT,))
        await transport.consume(queue, on_answer, prefetch=64)
        envelope = Envelope(message_id=new_message_id(), correlation_id=request.saga_id,
                            message_type=ADMIN_ACTION, timestamp=utcnow())
        await transport.publish(topology.admin_exchange, ADMIN_ACTION, encode(envelope, request))
        if await answers.wait_for({envelope.message_id}, timeout):
            return None
        return answers.kept[envelope.message_id]
    finally:
        await transport.close()
