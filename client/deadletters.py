"""``sagactl dlq``: list, show, replay and purge dead letters, on RabbitMQ.

Every dead letter is named by its ``x-dead-letter-id`` (a consumer stamps it when it
dead-letters a message; one the broker dead-lettered itself gets a digest of what identifies
it, written into the header by the first read). Reading takes the messages of a dead-letter
queue unacknowledged and copies each back (``RabbitDeadLetters.sweep``), so a crash at any
point loses nothing.

A replay publishes the original message again to the queue it was dead-lettered from,
through that queue's own exchange and routing key, once it passes its consumer's validation
again; one that still fails stays where it is, with the reason printed. The dead-letter
headers are dropped from the replayed copy, and ``x-replayed-from`` names the dead letter.
Replies are not replayed: the orchestrator accepts a reply only from its participant's
broker user, and the participant answers again when the orchestrator retries the command.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiormq

from client.connect import Unreachable
from client.dlq import (
    Choice,
    Fate,
    Move,
    RabbitDeadLetters,
    consumer_kind,
    recheck,
)
from contracts.envelope import CodecError, WireMessage, utcnow
from contracts.errors import SagaSystemError
from contracts.topology import Plan, QueueSpec, Topology, layout
from infra.consumer import (
    BROKER_REASON_HEADER,
    DEAD_LETTER_ID_HEADER,
    ERROR_KIND_HEADER,
    ORIGINAL_SIZE_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    TIME_HEADER,
)
from infra.errors import InvalidMessage
from infra.settings import CommonSettings, redact
from orchestrator.app import definitions
from orchestrator.registry import DefinitionRegistry
from orchestrator.settings import OrchestratorSettings
from orchestrator.start import StartMessage
from workers.catalog import registered

log = logging.getLogger(__name__)

REPLAYED_FROM_HEADER = "x-replayed-from"
REPLAYED_AT_HEADER = "x-replayed-at"
# Headers the dead-lettering added, by the consumer or by the broker: not part of a replay.
DEAD_LETTER_HEADERS = frozenset({REASON_HEADER, ERROR_KIND_HEADER, QUEUE_HEADER, TIME_HEADER,
                                 ORIGINAL_SIZE_HEADER, DEAD_LETTER_ID_HEADER, "x-death",
                                 "x-first-death-queue", "x-first-death-reason",
                                 "x-first-death-exchange", "x-last-death-queue",
                                 "x-last-death-reason", "x-last-death-exchange"})


class DeadLetterError(SagaSystemError, LookupError):
    """A dead letter or queue that does not exist; the message says which."""


@dataclass(frozen=True, slots=True)
class Source:
    """One dead-letter queue and the consumer queue its messages came from."""

    dlq: QueueSpec
    queue: QueueSpec
    kind: str  # what the queue receives (client.dlq.consumer_kind)
    start: StartMessage[Any] | None

    @property
    def name(self) -> str:
        """The dead-letter queue's name."""
        return self.dlq.name


@dataclass
class Outcome:
    """What a replay or a purge did, message by message."""

    done: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (id, why)


def sources(topology: Topology, registry: DefinitionRegistry) -> list[Source]:
    """Every dead-letter queue of the namespace, with what it holds."""
    plan = registry.plan().merged(Plan((), tuple(registered())))
    queues = layout(topology, plan)[1]
    consumers = {q.name: q for q in queues if not q.dead_letter_queue}
    starts = {queue: registry.latest(e.definition).start for e in plan.entries
              for queue in (topology.requests_queue_of(e.definition),
                            topology.cancels_queue_of(e.definition))}
    out = []
    for dlq in (q for q in queues if q.dead_letter_queue):
        queue = consumers[dlq.bindings[0][1]]
        out.append(Source(dlq, queue, consumer_kind(topology, queue.name, plan),
                          starts.get(queue.name)))
    return out


def pick(found: list[Source], name: str | None, namespace: str = "") -> list[Source]:
    """The sources a QUEUE argument names: a dead-letter queue or its consumer queue, with
    or without the namespace prefix."""
    if name is None:
        return found
    names = {name, f"{namespace}.{name}"} if namespace else {name}
    chosen = [s for s in found if names & {s.name, s.queue.name}]
    if not chosen:
        raise DeadLetterError(f"no dead-letter queue {name!r}; sagactl dlq list shows them")
    return chosen


def summary(m: WireMessage) -> dict[str, Any]:
    """One dead letter in a line's worth of fields."""
    reason = m.headers.get(REASON_HEADER) or m.headers.get(BROKER_REASON_HEADER)
    return {"id": m.headers.get(DEAD_LETTER_ID_HEADER), "type": m.type,
            "message_id": m.message_id, "reason": reason,
            "dead_lettered_at": m.headers.get(TIME_HEADER)}


def replay_headers(m: WireMessage, dlq: str) -> dict[str, Any]:
    """The original headers, with where the replay came from instead of why it died."""
    kept = {k: v for k, v in m.headers.items() if k not in DEAD_LETTER_HEADERS}
    return {**kept, REPLAYED_FROM_HEADER: f"{dlq}/{m.headers.get(DEAD_LETTER_ID_HEADER)}",
            REPLAYED_AT_HEADER: utcnow().isoformat()}


def why_not_replay(source: Source, m: WireMessage) -> str | None:
    """Why a dead letter cannot go back to its queue, or None when it can."""
    if source.kind == "replies":
        return ("a reply is not replayed: the orchestrator accepts it only from its "
                "participant, which answers again when the command is retried")
    if ORIGINAL_SIZE_HEADER in m.headers:
        return f"its body was truncated to {len(m.body)} bytes when it was dead-lettered"
    try:
        recheck(source.kind, source.start, m)
    except (CodecError, InvalidMessage) as e:
        return f"still invalid: {e}"
    return None


class DeadLetters:
    """The tool's view of one namespace's dead-letter queues on RabbitMQ."""

    def __init__(self, reader: RabbitDeadLetters, found: list[Source]) -> None:
        self._reader = reader
        self.sources = found

    async def read(self, source: Source) -> list[WireMessage]:
        """Every dead letter of one queue, left in place."""
        return [m for m, _ in await self._sweep(source, lambda m: Fate.KEEP)]

    async def find(self, ident: str) -> tuple[Source, WireMessage]:
        """The dead letter with this id, wherever it is."""
        for source in self.sources:
            for message in await self.read(source):
                if message.headers.get(DEAD_LETTER_ID_HEADER) == ident:
                    return source, message
        raise DeadLetterError(f"no dead letter with id {ident}")

    async def replay(self, chosen: list[Source], ident: str | None) -> Outcome:
        """Send the chosen dead letters (one id, or all) back to their queues."""
        outcome = Outcome()
        for source in chosen:
            exchange, key = source.queue.bindings[0]

            def choose(m: WireMessage, source: Source = source, exchange: str = exchange,
                       key: str = key) -> Choice:
                ident_here = str(m.headers.get(DEAD_LETTER_ID_HEADER))
                if ident is not None and ident_here != ident:
                    return Fate.KEEP
                why = why_not_replay(source, m)
                if why is not None:
                    outcome.refused.append((ident_here, why))
                    return Fate.KEEP
                outcome.done.append(ident_here)
                return Move(exchange, key, replay_headers(m, source.name))

            await self._sweep(source, choose)
        return outcome

    async def purge(self, chosen: list[Source], ident: str | None) -> Outcome:
        """Delete the chosen dead letters (one id, or all)."""
        outcome = Outcome()
        for source in chosen:
            def choose(m: WireMessage) -> Choice:
                ident_here = str(m.headers.get(DEAD_LETTER_ID_HEADER))
                if ident is not None and ident_here != ident:
                    return Fate.KEEP
                outcome.done.append(ident_here)
                return Fate.DROP

            await self._sweep(source, choose)
        return outcome

    async def _sweep(self, source: Source,
                     choose: Callable[[WireMessage], Choice]) -> list[tuple[WireMessage, Choice]]:
        exchange, key = source.dlq.bindings[0]
        try:
            return await self._reader.sweep(source.name, exchange, key, choose)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return []  # not declared yet (no consumer ever ran): it holds nothing


async def run(common: CommonSettings, action: str, ident: str | None, queue: str | None,
              as_json: bool, operator: str, out: TextIO) -> int:
    """One ``sagactl dlq`` command; the exit code (1 when something was refused or not
    found)."""
    topology = Topology(common.namespace)
    found = sources(topology, definitions(OrchestratorSettings(common=common)))
    url = common.amqp_url.get_secret_value()
    reader = RabbitDeadLetters(url, name="sagactl-dlq")
    try:
        await reader.connect()
    except Exception as e:  # any failure to connect means the same here
        raise Unreachable(f"cannot reach RabbitMQ at {redact(url)}: {type(e).__name__}") from e
    tool = DeadLetters(reader, found)
    try:
        match action:
            case "list":
                return await _list(tool, pick(found, queue, common.namespace), as_json, out)
            case "show":
                assert ident is not None
                source, message = await tool.find(ident)
                out.write(json.dumps(_shown(source, message), indent=2) + "\n")
                return 0
            case _:
                chosen = pick(found, queue, common.namespace)
                outcome = await (tool.replay(chosen, ident) if action == "replay"
                                 else tool.purge(chosen, ident))
                return _report(action, ident, outcome, operator, out)
    finally:
        await reader.close()


async def _list(tool: DeadLetters, chosen: list[Source], as_json: bool, out: TextIO) -> int:
    rows = [{"queue": s.name, **summary(m)} for s in chosen for m in await tool.read(s)]
    if as_json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return 0
    for r in rows:
        out.write(f"{r['id']}  {r['queue']:<40} {r['type'] or '-':<28} "
                  f"{r['dead_lettered_at'] or '-':<33} {str(r['reason'] or '-')[:100]}\n")
    out.write(f"{len(rows)} dead letter(s)\n")
    return 0


def _shown(source: Source, m: WireMessage) -> dict[str, Any]:
    try:
        body: Any = json.loads(m.body)
    except (ValueError, UnicodeDecodeError):
        body = m.body.decode("utf-8", "replace")
    return {"queue": source.name, "from": source.queue.name, **summary(m),
            "correlation_id": m.correlation_id, "headers": dict(m.headers), "body": body,
            "replayable": why_not_replay(source, m) or "yes"}


def _report(action: str, ident: str | None, outcome: Outcome, operator: str,
            out: TextIO) -> int:
    verb = "replayed" if action == "replay" else "purged"
    for done in outcome.done:
        out.write(f"{done}: {verb} by {operator}\n")
        log.info("dead letter %s %s by %s", done, verb, operator)
    for refused, why in outcome.refused:
        out.write(f"{refused}: not {verb}: {why}\n")
    if ident is not None and not outcome.done and not outcome.refused:
        raise DeadLetterError(f"no dead letter with id {ident}")
    out.write(f"{len(outcome.done)} {verb}, {len(outcome.refused)} refused\n")
    return 1 if outcome.refused else 0

