"""Given/expect scripts for the pure saga engine: start a saga, feed it events, check what it did."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from contracts.admin import Action
from contracts.commands import Operation, Outcome
from contracts.envelope import Model
from contracts.orders import OrderItem, OrderReason
from engine.decide import (
    CancelRequested,
    CommandOut,
    Decision,
    Event,
    NoteKind,
    OperatorAction,
    ReplyReceived,
    TimerFired,
    decide,
    start,
)
from engine.definition import (
    CommandContext,
    OutcomeContext,
    OutcomeEvent,
    SagaDefinition,
    Stage,
    Step,
    Tuning,
)
from engine.definition import action as toy_action
from engine.definition import notice as toy_notice
from engine.definition import two_phase as toy_two_phase
from engine.state import OpStatus, SagaState, SagaStatus
from sagas.order import OrderSagaData, order_saga

SAGA_ID = "order:o-1"


def order_data(order_id: str = "o-1") -> OrderSagaData:
    """A one-line order worth 10.00."""
    item = OrderItem(sku="sku-1", quantity=2, unit_price=Decimal("5.00"))
    return OrderSagaData(order_id=order_id, customer_id="c-1", items=(item,), total=Decimal("10.00"))


def label(command: CommandOut) -> str:
    """``step`` for a forward command, ``step:op`` otherwise: how scripts name commands."""
    return command.step if command.op is Operation.FORWARD else f"{command.step}:{command.op}"


def _key(name: str) -> tuple[str, Operation]:
    step, _, op = name.partition(":")
    return step, Operation(op or Operation.FORWARD)


class Script:
    """One saga under test: every event is applied with ``decide`` at the script's clock."""

    def __init__(self, defn: SagaDefinition[Any] | None = None, data: Model | None = None,
                 saga_id: str = SAGA_ID, now: float = 0.0) -> None:
        self.defn: SagaDefinition[Any] = defn or order_saga(Tuning())
        self.now = now
        key = saga_id.partition(":")[2]
        self.last: Decision[Any] = start(self.defn, saga_id, data or order_data(key), now)
        self.state: SagaState[Any] = self.last.state
        self.sent: list[CommandOut] = list(self.last.commands)

    # --- given ------------------------------------------------------------------------

    def send(self, event: Event) -> Decision[Any]:
        """Apply any event and remember its decision."""
        self.last = decide(self.defn, self.state, event)
        self.state = self.last.state
        self.sent += self.last.commands
        return self.last

    def message_id(self, name: str) -> str:
        """The id of the latest command sent for ``step[:op]``."""
        message_id = self.state.op(*_key(name)).message_id
        assert message_id is not None, f"{name} was never sent"
        return message_id

    def reply(self, name: str, outcome: Outcome, reason_code: str | None = None,
              message_id: str | None = None) -> Decision[Any]:
        """A reply to the latest command of ``step[:op]`` (or to ``message_id``)."""
        return self.send(ReplyReceived(message_id or self.message_id(name), outcome, self.now,
                                       reason_code))

    def succeed(self, *names: str) -> Decision[Any]:
        """Each named command succeeds, in order."""
        for name in names:
            self.reply(name, Outcome.SUCCEEDED)
        return self.last

    def reject(self, name: str, reason_code: str = OrderReason.ORDER_REFUSED) -> Decision[Any]:
        """A business "no"."""
        return self.reply(name, Outcome.REJECTED, reason_code)

    def retryable_error(self, name: str) -> Decision[Any]:
        """A failure worth another attempt."""
        return self.reply(name, Outcome.RETRYABLE_ERROR)

    def permanent_error(self, name: str) -> Decision[Any]:
        """A failure the participant can never get past."""
        return self.reply(name, Outcome.PERMANENT_ERROR)

    def tick(self, now: float) -> Decision[Any]:
        """Move the clock to ``now`` and fire whatever timers are due."""
        self.now = now
        return self.send(TimerFired(now))

    def tick_to_wakeup(self) -> Decision[Any]:
        """Fire the earliest timer."""
        wakeup = self.state.next_wakeup
        assert wakeup is not None, "the saga has no timer"
        return self.tick(wakeup)

    def cancel(self, reason: str = "customer changed their mind") -> Decision[Any]:
        """Ask the saga to stop."""
        return self.send(CancelRequested(reason, self.now))

    def operator(self, action: Action, note: str = "", by: str = "ops") -> Decision[Any]:
        """An operator's cancel, retry or resolve."""
        return self.send(OperatorAction(action, by, note, self.now))

    # --- expect -----------------------------------------------------------------------

    def expect_sent(self, *names: str) -> tuple[CommandOut, ...]:
        """The last event published exactly these commands, in this order."""
        assert [label(c) for c in self.last.commands] == list(names)
        return self.last.commands

    def expect_status(self, status: SagaStatus) -> None:
        """The saga is in ``status``."""
        assert self.state.status is status, f"{self.state.status} != {status}"

    def expect_op(self, name: str, status: OpStatus, attempt: int | None = None) -> None:
        """One operation is in ``status`` (after ``attempt`` attempts, when given)."""
        op = self.state.op(*_key(name))
        assert op.status is status, f"{name}: {op.status} != {status}"
        assert attempt is None or op.attempt == attempt, f"{name}: attempt {op.attempt}"

    def expect_note(self, kind: NoteKind) -> None:
        """The last decision noted ``kind``."""
        assert kind in {n.kind for n in self.last.notes}, self.last.notes

    def expect_ignored(self) -> None:
        """The last event changed nothing, sent nothing and was noted as a stale reply."""
        assert not self.last.changed
        assert self.last.commands == ()
        assert self.last.outcome is None
        self.expect_note(NoteKind.STALE_REPLY)

    def expect_outcome(self, type_: str, reason_code: str | None = None,
                       needs_attention: bool = False) -> None:
        """The last event finished the saga with this outcome event."""
        outcome = self.last.outcome
        assert outcome is not None, "the saga did not finish"
        assert outcome.type == type_
        assert getattr(outcome.payload, "reason_code", None) == reason_code
        assert getattr(outcome.payload, "needs_attention", False) is needs_attention
        assert self.state.next_wakeup is None

    def compensated(self) -> list[str]:
        """Steps compensated so far, in the order their first undo was sent."""
        return [c.step for c in self.sent if c.op is Operation.COMPENSATE and c.attempt == 1]


# --- a toy saga, for tests that need a definition of their own ---------------------------


class ToyData(Model):
    """The toy saga needs no data."""


class ToyOutcome(Model):
    """How a toy saga ended."""

    reason_code: str | None = None
    needs_attention: bool = False


def _params(x: CommandContext[ToyData]) -> Model:
    return ToyData()


def _toy_outcome(x: OutcomeContext[ToyData]) -> OutcomeEvent:
    if x.failure is None:
        return OutcomeEvent("toy.completed", ToyOutcome())
    return OutcomeEvent("toy.failed", ToyOutcome(reason_code=x.failure.reason_code,
                                                 needs_attention=x.needs_attention))


def action(name: str) -> Step[ToyData]:
    """A compensated one-phase step (``toy.<name>``, undone by ``toy.<name>.undo``)."""
    return toy_action(name, "toy", name, _params)


def notice(name: str) -> Step[ToyData]:
    """A step with nothing to undo, as runs after the commit point or on failure."""
    return toy_notice(name, "toy", name, _params)


def reservation(name: str) -> Step[ToyData]:
    """A two-phase step (``toy.<name>.prepare``, ``.confirm``, ``.cancel``)."""
    return toy_two_phase(name, "toy", name, _params)


def toy_saga(*before_commit: Stage[ToyData], version: int = 1,
             after_commit: tuple[Stage[ToyData], ...] = (),
             on_failure: tuple[Stage[ToyData], ...] = ()) -> SagaDefinition[ToyData]:
    """A toy saga with the given stages."""
    return SagaDefinition(name="toy", version=version, data_model=ToyData,
                          before_commit=before_commit, after_commit=after_commit,
                          on_failure=on_failure, outcome=_toy_outcome)
