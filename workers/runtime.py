"""The worker runtime: decode, deduplicate, fence, one transaction, reply, then ack.

Handlers are plain async functions that read and write their own documents through a
transaction. Everything around them is here, once, for every service:

1. the command is validated (bad input raises, and the boundary dead-letters it);
2. in one transaction: the fence decides whether the handler may run (a copy of a command
   that changed the step gets its recorded reply, nothing re-applied), the handler runs,
   and the fence records the change with the message id and the reply;
3. version conflicts abort the transaction and it is retried;
4. after the commit the reply is published and confirmed; the boundary acks last.

A prepare whose lock policy is ``wait`` and whose key is held is parked instead (a
``Waiter`` in the same database) and answered ``waiting``; ``watch_waits`` runs it again
when its key is let go, or answers ``LOCK_TIMEOUT`` when its wait is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from contracts.commands import LockWait, Operation, Outcome, StepCommand, StepReply
from contracts.envelope import (
    Envelope,
    Model,
    WireMessage,
    derived_id,
    describe,
    encode,
    read_envelope,
    read_payload,
    utcnow,
)
from contracts.errors import SagaSystemError
from contracts.reasons import PlatformReason
from contracts.registry import STEP_REPLY
from contracts.topology import REPLY_KEY, Topology, is_reply_key
from contracts.trace import child, trace_id_of
from infra.consumer import DELIVERY_COUNT_HEADER
from infra.errors import (
    DuplicateKey,
    InvalidMessage,
    StoreFailed,
    StoreUnavailable,
    TransientError,
    VersionConflict,
)
from infra.transport import Transport
from workers.aftercommit import AfterCommit, transaction
from workers.faults import InjectedFaults
from workers.fence import AFTER_RUN, Fence, FenceState, Run, Verdict, fence_id, verdict
from workers.locks import (
    LOCK_TIMEOUT,
    LOCKED,
    InvalidLockRequest,
    KeyLocked,
    Lock,
    LockPolicy,
    Waiter,
    conflicts,
    release,
    take,
)
from workers.metrics import FENCE_KINDS, ServiceMetrics
from workers.sdk import Impossible, Participant, Rejected, Route, StepContext
from workers.store import DEFAULT_RETENTION, Change, DocumentStore, Retention, Tx, expiry

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class MustWait(SagaSystemError):
    """The step's lock policy is ``wait`` and one of its keys is held: park the command."""

    def __init__(self, locked: KeyLocked, timeout: float) -> None:
        super().__init__(str(locked))
        self.locked = locked
        self.timeout = timeout


class _Misguessed(SagaSystemError):
    """A first attempt assumed where the step was, and the step was elsewhere: roll back
    and read the fence."""


class EffectExists(SagaSystemError):
    """The handler's write found its natural key taken while the fence says the step never
    ran here: an effect without its record (a manual repair, or a write from outside)."""


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded command: its route, its validated parameters and the rest of its body."""

    route: Route
    body: StepCommand
    params: Model
    reply_to: str = REPLY_KEY  # the replies exchange's routing key the command asked for

    @property
    def op(self) -> Operation:
        """The phase this command runs."""
        return self.route.phase

    @property
    def saga_id(self) -> str:
        """The saga it belongs to."""
        return self.body.saga_id

    @property
    def step(self) -> str:
        """The step it belongs to."""
        return self.body.step


# The runtime's own records, which expire (the services' business documents never do).
EXPIRING = ("fences",)
# How often parked prepares are looked at without a release nearby (another process of the
# same service let the key go, or this one restarted).
WAIT_POLL = 1.0


class WorkerRuntime:
    """Runs one service's handlers against its store and the transport."""

    def __init__(self, *, spec: Participant, store: DocumentStore, transport: Transport,
                 topology: Topology, metrics: ServiceMetrics, faults: InjectedFaults, clock: Clock,
                 conflict_retries: int = 20, tx_concurrency: int = 16,
                 store_patience: float = 20.0, retention: Retention = DEFAULT_RETENTION) -> None:
        self._spec = spec
        self._store = store
        self._transport = transport
        self._topology = topology
        self._metrics = metrics
        self._faults = faults
        self._clock = clock
        self._conflict_retries = conflict_retries
        self._store_patience = store_patience
        self._retention = retention
        self._tx_slots = asyncio.Semaphore(tx_concurrency)
        self._released = asyncio.Event()  # a lock was let go here: look at the waiters now
        self._parks = spec.parks

    async def handle(self, message: WireMessage) -> None:
        """Handle one command message and publish its reply."""
        envelope = read_envelope(message)
        command = decode_command(self._spec, envelope, message)
        started = self._clock()
        first = not message.headers.get(DELIVERY_COUNT_HEADER)
        await self._faults.delay()
        if (injected := self._faults.instead(command.op)) is not None:
            reply = _reply(command, injected[0], None, injected[1])
        else:
            async with self._tx_slots:
                reply = await self._execute(envelope, command)
            self._faults.crash("after_commit", first)
        await self._publish(envelope, reply, command.reply_to)
        self._faults.crash("after_publish", first)
        kind = envelope.message_type
        self._metrics.handled(kind, reply.outcome.value, self._clock() - started)
        log.info("handled %s: %s", kind, reply.outcome.value, extra={
            "saga_id": command.saga_id, "message_id": envelope.message_id, "step": command.step,
            "operation": command.op.value, "outcome": reply.outcome.value,
            "detail": reply.detail or None, "trace_id": trace_id_of(envelope.traceparent)})

    async def _execute(self, envelope: Envelope, command: Command) -> StepReply:
        """Run the command's transaction; wait out a database that does not answer for a
        while, then answer "try again later" instead of holding the command: a held
        command is returned to its queue on every broker reconnect, and the broker
        dead-letters it after DELIVERY_LIMIT returns, valid or not."""
        try:
            return await self._settle(envelope, command)
        except StoreUnavailable:
            pass  # waited out below; the retrying machinery costs too much on every command
        try:
            async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(StoreUnavailable),
                    wait=wait_random_exponential(multiplier=0.05, max=2.0),
                    stop=stop_after_delay(self._store_patience), reraise=True):
                with attempt:
                    return await self._settle(envelope, command)
        except StoreUnavailable as e:
            log.error("database unavailable for %.0fs: %s", self._store_patience, e,
                      extra={"saga_id": command.saga_id, "step": command.step})
            return _reply(command, Outcome.RETRYABLE_ERROR, None, "database unavailable; try again")
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _settle(self, envelope: Envelope, command: Command) -> StepReply:
        """One command, through conflicts: the reply to send."""
        last: Exception | None = None
        # Nearly every command finds its step where the saga left it: a forward command
        # with no fence, a confirm or a compensation with its prepare's. The first attempt
        # assumes so and reads nothing first: the handler runs, then one write moves the
        # fence on only if it was there. If the step was elsewhere, that write fails, the
        # transaction rolls back, and the attempts from then on read the fence first.
        guess = True
        for attempt in range(self._conflict_retries):
            try:
                try:
                    return await self._attempt(envelope, command, guess)
                except Rejected as rejection:
                    return await self._record_rejection(envelope, command, rejection)
                except MustWait as wait:
                    return await self._park(envelope, command, wait)
            except _Misguessed:
                guess = False  # at once: nobody is in the way, the guess was wrong
            except EffectExists as e:
                # Once may be a concurrent attempt of the same step that committed meanwhile:
                # the next attempt then finds its fence. Twice, the effect has no record.
                if isinstance(last, EffectExists):
                    return self._orphaned(command, e)
                last = e
            except (VersionConflict, DuplicateKey) as e:
                last = e
                guess = False
                self._metrics.conflict()
                log.debug("conflict on attempt %d: %s", attempt + 1, e)
                await asyncio.sleep(_backoff(attempt))
            except Impossible as e:
                return _reply(command, Outcome.PERMANENT_ERROR, None, str(e))
            except StoreFailed as e:
                # Not the command's fault: answer "try again later" (the orchestrator retries
                # and, in the end, fails the step) rather than dead-letter a valid command.
                log.error("database error: %s", e, extra={"saga_id": command.saga_id})
                return _reply(command, Outcome.RETRYABLE_ERROR, None, "database error; try again")
        # Conflicts on every attempt are not load: something holds the key. Say which.
        self._metrics.gave_up()
        log.error("gave up after %d conflicts: %s", self._conflict_retries, last, extra={
            "saga_id": command.saga_id, "step": command.step})
        return _reply(command, Outcome.RETRYABLE_ERROR, None,
                      f"too many concurrent updates; try again (last: {last})")

    def _orphaned(self, command: Command, e: EffectExists) -> StepReply:
        """Fail the step for good and visibly: applying the effect twice, or claiming it as
        this step's without knowing, could both be wrong; an operator decides."""
        self._metrics.orphaned()
        log.error("effect exists without its fence: %s", e, extra={
            "saga_id": command.saga_id, "step": command.step})
        return _reply(command, Outcome.PERMANENT_ERROR, None,
                      f"the effect of this step already exists but was not recorded as done "
                      f"here; check it by hand ({e})")

    async def _attempt(self, envelope: Envelope, command: Command, guess: bool) -> StepReply:
        now = self._clock()
        async with transaction(self._store) as tx:
            if guess:
                return await self._run_guessed(tx, envelope, command, now)
            fence = await tx.get(Fence, fence_id(command.saga_id, command.step))
            if fence is not None and (run := fence.run_of(envelope.message_id)) is not None:
                self._metrics.duplicate()
                return StepReply.model_validate_json(run.reply)
            return await self._judge(tx, envelope, command, fence, now)

    async def _run_guessed(self, tx: AfterCommit, envelope: Envelope, command: Command,
                           now: float) -> StepReply:
        """The command as ``verdict`` nearly always judges it (RUN), without reading the
        fence: the handler, then the fence written only if the step was where the command
        expects it. Anything else raises _Misguessed, and this transaction rolls back."""
        op = command.op
        try:
            detail = await self._run(tx, command, now)
        except (Impossible, EffectExists) as e:
            raise _Misguessed(str(e)) from e  # perhaps done already, or undone: read the fence
        except Rejected as e:
            if op is not Operation.FORWARD:
                raise _Misguessed(str(e)) from e
            raise
        reply = _reply(command, Outcome.SUCCEEDED, None, detail)
        run = _run_of(envelope, reply, now)
        if op is Operation.FORWARD:
            try:
                await _write_fence(tx, command, None, AFTER_RUN[op], now,
                                   self._retention.fence, run)
            except DuplicateKey as e:
                raise _Misguessed(str(e)) from e
            return reply
        expires_at = expiry(now, self._retention.fence)
        fid = fence_id(command.saga_id, command.step)
        if await tx.modify(Fence, fid, Change(
                when={"state": FenceState.TRIED},
                assign={"state": AFTER_RUN[op], "updated_at": now, "expires_at": expires_at},
                append={"runs": run})) is None:
            raise _Misguessed(f"fence {fid} is not {FenceState.TRIED}")
        return reply

    async def _judge(self, tx: AfterCommit, envelope: Envelope, command: Command, fence: Fence | None,
                     now: float) -> StepReply:
        op = command.op
        match verdict(op, fence.state if fence else None):
            case Verdict.RUN:
                detail = await self._run(tx, command, now)
                reply = _reply(command, Outcome.SUCCEEDED, None, detail)
                await _write_fence(tx, command, fence, AFTER_RUN[op], now,
                                   self._retention.fence, _run_of(envelope, reply, now))
                return reply
            case Verdict.REPLAY:
                assert fence is not None
                if fence.state is FenceState.REJECTED:
                    return _reply(command, Outcome.REJECTED, fence.reason_code, fence.detail)
                return _reply(command, Outcome.SUCCEEDED, None, f"already {fence.state}")
            case Verdict.EMPTY_ROLLBACK:
                tx.later(lambda: self._metrics.fence(FENCE_KINDS[0]))
                await self._unpark(tx, command, now, "cancelled")
                reply = _reply(command, Outcome.SUCCEEDED, None, "nothing to undo")
                await _write_fence(tx, command, fence, FenceState.COMPENSATED, now,
                                   self._retention.fence, _run_of(envelope, reply, now))
                return reply
            case Verdict.SUSPENDED:
                self._metrics.fence(FENCE_KINDS[1])
                return _reply(command, Outcome.REJECTED, PlatformReason.CANCELLED,
                              "the step was undone before this command arrived")
            case _:
                state = fence.state.value if fence else "never started"
                return _reply(command, Outcome.PERMANENT_ERROR, None,
                              f"cannot {op.value} a step that is {state}")

    async def _run(self, tx: AfterCommit, command: Command, now: float) -> str:
        """The business handler, with injected rejections in front of it."""
        if self._faults.rejects(command.op, command.route.operation.rejectable,
                                fence_id(command.saga_id, command.step)):
            raise Rejected(self._spec.rejection, "injected business rejection")
        context = StepContext(command.saga_id, command.step, now, command.body.failure)
        locks = command.route.operation.locks
        if locks is not None and command.op is Operation.FORWARD:
            try:
                await take(tx, locks, command.params, command.saga_id, command.step, now)
            except KeyLocked as e:
                if locks.policy is LockPolicy.WAIT:
                    raise MustWait(e, locks.wait_timeout) from e
                raise Rejected(LOCKED, str(e)) from e
            except InvalidLockRequest as e:
                raise Impossible(str(e)) from e
        try:
            detail = await command.route.handler(tx, command.params, context)
        except DuplicateKey as e:
            raise EffectExists(str(e)) from e
        if (locks is not None and command.op is not Operation.FORWARD
                and await release(tx, locks, command.params, command.saga_id, command.step)):
            tx.later(self._released.set)
        await self._unpark(tx, command, now,
                           "ran" if command.op is Operation.FORWARD else "cancelled")
        return detail

    # --- parked prepares (lock policy ``wait``) ------------------------------------------

    async def _unpark(self, tx: AfterCommit, command: Command, now: float, end: str) -> None:
        """End the step's wait, if it was parked. Cancelled, it is gone. Ran or refused, its
        answer is owed to the orchestrator, which heard only "waiting": the waiter stays,
        marked answered, until that answer is published (``_answer``), so that a process
        killed in between owes it still after its restart."""
        locks = command.route.operation.locks
        if locks is None or locks.policy is not LockPolicy.WAIT or command.op is Operation.CONFIRM:
            return  # this command never ends a wait (a confirm follows a prepare that ran)
        waiter = await tx.get(Waiter, fence_id(command.saga_id, command.step))
        if waiter is None or waiter.answered:
            return
        if end == "cancelled":
            await tx.delete(waiter)
        else:
            await tx.update(waiter.model_copy(update={"answered": True}))
        tx.later(lambda: self._metrics.wait_ended(end, now - waiter.since))

    async def _park(self, envelope: Envelope, command: Command, wait: MustWait) -> StepReply:
        """Record that the step waits (keeping its command, the latest attempt's), and say
        so. A step parked already keeps the start and the end of its first wait."""
        now = self._clock()
        fid = fence_id(command.saga_id, command.step)
        async with self._store.transaction() as tx:
            if await tx.get(Fence, fid) is not None:
                raise VersionConflict(f"fence {fid} changed while parking")
            before = await tx.get(Waiter, fid)
            waiter = Waiter(id=fid, lock=wait.locked.lock, holders=wait.locked.holders,
                            envelope=envelope.model_dump_json(),
                            command=command.body.model_dump_json(),
                            since=before.since if before else now,
                            until=before.until if before else now + wait.timeout,
                            reply_to=command.reply_to,
                            version=before.version if before else 0)
            if before is None:
                await tx.insert(waiter)
            else:
                await tx.update(waiter)
        if before is None:
            self._metrics.parked()
        return StepReply(saga_id=command.saga_id, step=command.step, operation=command.op,
                         outcome=Outcome.WAITING, detail=str(wait)[:500],
                         waiting=LockWait(key=waiter.lock, holders=list(waiter.holders),
                                          until=waiter.until))

    async def watch_waits(self, poll: float = WAIT_POLL) -> None:
        """Run parked prepares whose key is free, and end the waits that are over: at once
        after a release here, and every ``poll`` seconds (a release by another process of
        the service, a restart). Runs until cancelled; a failing database is waited out."""
        if not self._parks:
            return
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), poll)
            self._released.clear()
            try:
                await self.look_at_waits()
            except (TransientError, StoreFailed) as e:
                log.warning("could not look at the lock waits: %s", e)
            except Exception:
                log.exception("looking at the lock waits failed; looking again later")

    async def look_at_waits(self) -> int:
        """One look at every parked prepare; how many were answered."""
        waiters = sorted(await self._store.all(Waiter), key=lambda w: (w.since, w.id))
        self._metrics.waiting(sum(not w.answered for w in waiters))
        answered = 0
        for waiter in waiters:
            try:
                answered += await self._look_at(waiter)
            except (VersionConflict, DuplicateKey, _Misguessed) as e:
                # The step moved on meanwhile (it ran, was cancelled, or timed out elsewhere).
                log.debug("wait %s ended meanwhile: %s", waiter.id, e)
            except (TransientError, StoreFailed):
                raise
            except Exception:
                # One unreadable wait must not stop the others from being answered.
                log.exception("cannot resume the wait %s", waiter.id)
        return answered

    async def _look_at(self, waiter: Waiter) -> int:
        envelope = Envelope.model_validate_json(waiter.envelope)
        if waiter.answered:
            # Its answer was recorded in the fence, and never confirmed as sent.
            fence = await self._store.get(Fence, waiter.id)
            recorded = None if fence is None else fence.run_of(envelope.message_id)
            if recorded is not None:
                await self._answer(envelope, StepReply.model_validate_json(recorded.reply),
                                   waiter.reply_to)
            else:
                await self._settled(waiter.id)  # another attempt answered; or it expired
            return 1
        body = StepCommand.model_validate_json(waiter.command)
        command = decode_command(self._spec, envelope,
                                 replace(encode(envelope, body), reply_to=waiter.reply_to))
        if self._clock() >= waiter.until:
            reply = await self._time_out(envelope, command, waiter)
        elif await self._holders(waiter, command) != waiter.holders:
            # Free, or taken by someone else than before: run the prepare again. Taken, it
            # parks again and says by whom: the orchestrator's graph must name the holder
            # of now, or a cycle through the new holder would go unseen.
            async with self._tx_slots:
                reply = await self._execute(envelope, command)
            if (reply.outcome is Outcome.WAITING and reply.waiting is not None
                    and tuple(reply.waiting.holders) == waiter.holders):
                return 0  # still waiting for the same sagas: nothing new to say
        else:
            return 0
        await self._answer(envelope, reply, waiter.reply_to)
        return 1

    async def _answer(self, envelope: Envelope, reply: StepReply, reply_to: str) -> None:
        """Publish the answer to a resumed wait, then forget the wait; if the broker
        refuses it, the next look publishes it again (a resumed wait has no delivery to
        return to its queue, unlike a command)."""
        try:
            await self._publish(envelope, reply, reply_to)
        except TransientError as e:
            log.warning("answer to a resumed wait not sent yet: %s", e, extra={
                "saga_id": reply.saga_id, "step": reply.step})
            return
        if reply.outcome is not Outcome.WAITING:
            await self._settled(fence_id(reply.saga_id, reply.step))

    async def _settled(self, waiter_id: str) -> None:
        """Delete a wait whose answer went out (a conflict leaves it to the next look,
        which at worst sends the answer twice: the orchestrator ignores the copy)."""
        with contextlib.suppress(VersionConflict):
            async with self._store.transaction() as tx:
                waiter = await tx.get(Waiter, waiter_id)
                if waiter is not None and waiter.answered:
                    await tx.delete(waiter)

    async def _holders(self, waiter: Waiter, command: Command) -> tuple[str, ...]:
        """The sagas that keep the step from taking the key it waits for now (the prepare
        re-checks every key in its transaction; this only spares running it in vain)."""
        lock = await self._store.get(Lock, waiter.lock)
        locks = command.route.operation.locks
        assert locks is not None  # only a step with locks is ever parked
        blockers = () if lock is None else conflicts(lock.holders, command.saga_id, locks.mode)
        return tuple(sorted({h.saga_id for h in blockers}))

    async def _time_out(self, envelope: Envelope, command: Command, waiter: Waiter) -> StepReply:
        """The wait is over: refuse the step (recorded like any refusal, so a late copy of
        the command gets the same answer)."""
        held = ", ".join(waiter.holders)
        return await self._record_rejection(envelope, command, Rejected(
            LOCK_TIMEOUT, f"waited {waiter.until - waiter.since:.0f}s for {waiter.lock}, "
                          f"held by {held}"))

    async def _record_rejection(self, envelope: Envelope, command: Command,
                                rejection: Rejected) -> StepReply:
        # The handler's own writes were rolled back with its transaction; this one records
        # the refusal so that any later attempt of the same step gets the same answer.
        # A fence there already (a copy of this command, or another that changed the step
        # meanwhile) makes the insert fail: the next attempt reads it.
        now = self._clock()
        reply = _reply(command, Outcome.REJECTED, rejection.code, rejection.detail)
        async with transaction(self._store) as tx:
            fid = fence_id(command.saga_id, command.step)
            try:
                await tx.insert(Fence(id=fid, state=FenceState.REJECTED,
                                      reason_code=rejection.code, detail=rejection.detail,
                                      updated_at=now,
                                      expires_at=expiry(now, self._retention.fence),
                                      runs=(_run_of(envelope, reply, now),)))
            except DuplicateKey as e:
                raise _Misguessed(str(e)) from e
            await self._unpark(tx, command, now,
                               "timed_out" if rejection.code == LOCK_TIMEOUT else "rejected")
            if rejection.code == LOCKED:
                tx.later(self._metrics.refused_locked)
        return reply

    async def _publish(self, command: Envelope, reply: StepReply, reply_to: str) -> None:
        reply_id = derived_id(command.message_id, "reply")
        envelope = Envelope(
            message_id=reply_id, correlation_id=reply.saga_id,
            causation_id=command.message_id, message_type=STEP_REPLY,
            timestamp=utcnow(), traceparent=child(command.traceparent, reply_id))
        await self._transport.publish(self._topology.replies_exchange, reply_to,
                                      encode(envelope, reply))


def decode_command(spec: Participant, envelope: Envelope, message: WireMessage) -> Command:
    """Validate a command for ``spec`` as its runtime does (raises CodecError or
    InvalidMessage; the dead-letter audit uses the same rules)."""
    route = spec.routes.get(envelope.message_type)
    if route is None:
        raise InvalidMessage(
            f"{envelope.message_type!r} is not a command of the {spec.name} service")
    body = read_payload(message, StepCommand)
    if body.saga_id != envelope.correlation_id:
        raise InvalidMessage("command saga_id does not match its correlation_id")
    model = route.operation.params
    try:
        params = model.model_validate(body.params)
    except ValidationError as e:
        raise InvalidMessage(f"invalid {model.__name__} params: {describe(e)}") from e
    reply_to = message.reply_to or REPLY_KEY
    if not is_reply_key(reply_to):
        raise InvalidMessage(f"reply_to {reply_to[:100]!r} is no reply key of this platform")
    return Command(route, body, params, reply_to)


async def _write_fence(tx: Tx, command: Command, fence: Fence | None, state: FenceState,
                       now: float, retention: float, run: Run) -> None:
    expires_at = expiry(now, retention)  # moved on by every change of the step
    if fence is None:
        await tx.insert(Fence(id=fence_id(command.saga_id, command.step), state=state,
                              updated_at=now, expires_at=expires_at, runs=(run,)))
    else:
        await tx.update(fence.model_copy(update={"state": state, "updated_at": now,
                                                 "expires_at": expires_at,
                                                 "runs": (*fence.runs, run)}))


def _run_of(envelope: Envelope, reply: StepReply, now: float) -> Run:
    """The record of a change the command made, for the fence."""
    return Run(message_id=envelope.message_id, reply=reply.model_dump_json(), at=now)


def _backoff(attempt: int) -> float:
    """Capped exponential backoff with full jitter, so that retries of conflicting
    transactions spread out instead of colliding again in step."""
    return random.uniform(0, min(0.5, 0.005 * 2**attempt))


def _reply(command: Command, outcome: Outcome, code: str | None, detail: str) -> StepReply:
    return StepReply(saga_id=command.saga_id, step=command.step, operation=command.op,
                     outcome=outcome, reason_code=code, detail=detail[:500])
