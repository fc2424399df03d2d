"""Cancels and operator actions go to the instance that works on their saga.

Partitioned (``SAGA_PARTITIONS``), a saga's replies and timers reach only the instance that
holds its partition. A cancel or an operator action arrives instead on a queue that every
instance consumes. The instance that takes one handles it if it holds the saga's partition.
Otherwise it publishes a copy to that partition's queue, marked with ``FORWARDED_HEADER``,
and acknowledges the original once the broker has confirmed the copy. The holder then
handles it in the order of the saga's replies, under the same lock, like any of them. An
instance that does not hold the partition any more still handles what it already took:
every save is version-checked, so this is the rare case and not a hazard.

Only the orchestrators' own broker user may forward. A participant may publish to the
replies exchange, so a marked message from any other user is refused (dead-lettered).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from contracts.admin import AdminAction
from contracts.envelope import CodecError, WireMessage, read_payload
from contracts.topology import Topology, partition_key
from infra.consumer import MessageHandler
from infra.errors import InvalidMessage
from infra.transport import Transport
from orchestrator.partitions import PartitionKeeper

FORWARDED_HEADER = "x-saga-forwarded"
ADMIN = "admin"
CANCEL = "cancel:"  # followed by the definition's name

SagaOf = Callable[[WireMessage], str]


def cancel_kind(definition: str) -> str:
    """The ``FORWARDED_HEADER`` of a cancel of ``definition``'s sagas."""
    return f"{CANCEL}{definition}"


def admin_saga(message: WireMessage) -> str:
    """The saga an operator action names (raises CodecError if it names none)."""
    return read_payload(message, AdminAction).saga_id


class Forwarder:
    """Sends cancels and operator actions to their saga's partition, and tells them apart
    from replies on a partition's queue."""

    def __init__(self, transport: Transport, topology: Topology, keeper: PartitionKeeper,
                 user: str | None, on_forward: Callable[[str], None] = lambda kind: None
                 ) -> None:
        self._transport = transport
        self._topology = topology
        self._keeper = keeper
        self._user = user  # the orchestrators' broker user: the only one that may forward
        self._on_forward = on_forward

    def routed(self, kind: str, saga_of: SagaOf, handle: MessageHandler) -> MessageHandler:
        """``handle`` for the sagas of this instance's partitions; a forward for the rest.
        A message whose saga cannot be read is handled here: ``handle`` says why it is
        refused, as without partitions."""

        async def route(message: WireMessage) -> None:
            try:
                saga_id = saga_of(message)
            except CodecError:
                await handle(message)
                return
            if self._keeper.mine(saga_id):
                await handle(message)
                return
            marked = replace(message, headers={**message.headers, FORWARDED_HEADER: kind})
            await self._transport.publish(self._topology.replies_exchange,
                                          partition_key(self._keeper.partition_of(saga_id)),
                                          marked)
            self._on_forward(kind)

        return route

    def dispatch(self, on_reply: MessageHandler, on_admin: MessageHandler,
                 on_cancel: Mapping[str, MessageHandler]) -> MessageHandler:
        """The handler of a partition's queue: replies, and what other instances forwarded
        (``on_cancel`` by definition)."""

        async def dispatched(message: WireMessage) -> None:
            kind = message.headers.get(FORWARDED_HEADER)
            if kind is None:
                await on_reply(message)
                return
            if message.user_id != self._user:
                raise InvalidMessage(f"a forwarded message must come from the orchestrators' "
                                     f"user, not {message.user_id!r}")
            if kind == ADMIN:
                await on_admin(message)
            elif isinstance(kind, str) and kind.startswith(CANCEL) and (
                    handle := on_cancel.get(kind.removeprefix(CANCEL))) is not None:
                await handle(message)
            else:
                raise InvalidMessage(f"{FORWARDED_HEADER} {str(kind)[:100]!r} is no kind of "
                                     "forwarded message")

        return dispatched
