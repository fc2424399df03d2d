"""``sagactl cancel``: ask the orchestrator to cancel a saga, through the public contract,
and report its answer (contracts.cancels)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from client import connect, status
from client.events import EventWatcher
from contracts.envelope import Envelope, Model, encode, new_message_id, utcnow
from contracts.reasons import PlatformReason
from contracts.topology import Topology
from infra.settings import CommonSettings
from orchestrator.app import definitions
from orchestrator.settings import OrchestratorSettings
from orchestrator.start import split_saga_id


@dataclass(frozen=True, slots=True)
class Answer:
    """What came of a cancel: honoured, or not and why."""

    cancelled: bool
    text: str


async def cancel(common: CommonSettings, ident: str, reason: str, timeout: float,
                 out: TextIO) -> bool:
    """Cancel the saga ``ident`` (a saga id or a business key); True when it is cancelled.

    A saga already cancelled is reported as such without asking again: its answer was
    published before anyone here listened.
    """
    registry = definitions(OrchestratorSettings(common=common))
    stores = await connect.stores(common, registry)
    try:
        record = await status.lookup(stores.sagas, ident)
    finally:
        await stores.close()
    state = record.state
    failure = state.failure
    if failure is not None and failure.reason_code == PlatformReason.CANCELLED:
        out.write(f"{state.saga_id}: already cancelled ({state.status.value})\n")
        return True
    name, key = split_saga_id(state.saga_id)
    start = registry.latest(name).start
    if start is None:
        out.write(f"{state.saga_id}: the {name} definition has no public contract to cancel "
                  "through\n")
        return False
    request = start.cancel_models[0].model_validate({start.key_field: key,
                                                     "reason": reason[:500]})
    answer = await _ask(common, start.exchange, start.cancel, start.key_field, key, request,
                        (start.failed, start.cancel_refused), timeout)
    out.write(f"{state.saga_id}: {answer.text}\n")
    return answer.cancelled


async def _ask(common: CommonSettings, exchange_name: str, routing_key: str, key_field: str,
               key: str, request: Model, answers: tuple[str, ...], timeout: float) -> Answer:
    topology = Topology(common.namespace)
    exchange = topology.exchange(exchange_name)
    transport = await connect.transport(common)
    try:
        watcher = EventWatcher(transport, exchange, answers, key_field)
        await watcher.start()  # before asking, so that the answer cannot be missed
        envelope = Envelope(message_id=new_message_id(), correlation_id=key,
                            message_type=routing_key, timestamp=utcnow())
        await transport.publish(exchange, routing_key, encode(envelope, request))
        if await watcher.wait_for({key}, timeout):
            return Answer(False, f"no answer within {timeout:.0f}s")
    finally:
        await transport.close()
    event = watcher.events[key]
    code = str(event.body.get("reason_code"))
    if event.type == answers[0]:
        cancelled = code == PlatformReason.CANCELLED
        return Answer(cancelled, "cancelled: everything done was undone" if cancelled
                      else f"failed before the cancel took effect: {code}")
    detail = event.body.get("detail") or ""
    return Answer(False, f"not cancelled: {code}" + (f" ({detail})" if detail else ""))

