"""Saga definitions as data: stages of parallel steps, a commit point, and retry policies.

A definition reads top to bottom as the saga runs:

    before_commit  stages that can still be undone (actions with compensations, and the
                   prepare half of two-phase steps)
    (commit)       every two-phase step is confirmed, in parallel; from here on the saga
                   only moves forward and retries until it succeeds
    after_commit   stages that cannot fail the saga any more
    on_failure     stages run after a failed saga has been compensated
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic import BaseModel

from contracts.commands import Operation, OperationKind, StepCommand, StepFailure, command_type
from contracts.envelope import Model
from contracts.errors import SagaSystemError

if TYPE_CHECKING:
    from engine.state import OpState
    from orchestrator.start import StartMessage

D = TypeVar("D", bound=Model)


class DefinitionError(SagaSystemError, ValueError):
    """A saga definition that cannot run."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait for one reply, how often to try, how long to back off."""

    timeout: float = 10.0
    max_attempts: int = 3
    backoff: float = 0.2
    backoff_max: float = 10.0
    jitter: float = 0.5
    # Each attempt may wait longer than the last (up to timeout_max), so that a participant
    # that is slow but alive is eventually heard instead of timing out forever.
    timeout_growth: float = 1.0
    timeout_max: float = 300.0

    def timeout_for(self, attempt: int) -> float:
        """How long attempt ``attempt`` (1-based) waits for its reply."""
        grown = self.timeout * self.timeout_growth ** min(max(0, attempt - 1), 64)
        return float(min(max(self.timeout, self.timeout_max), grown))

    def delay(self, attempt: int, key: str) -> float:
        """Exponential backoff with jitter before attempt ``attempt + 1``.

        The jitter is derived from ``key`` rather than a random source, so the engine
        stays a pure function: the same message always gets the same delay.
        """
        # The exponent is capped before it is computed: huge attempt counts must not overflow.
        base = min(self.backoff_max, self.backoff * 2.0 ** min(max(0, attempt - 1), 64))
        fraction = (zlib.crc32(key.encode()) % 10_000) / 10_000
        return float(base * (1 - self.jitter * fraction))


@dataclass(frozen=True, slots=True)
class Tuning:
    """Operational knobs every shipped definition takes from the orchestrator's settings:
    they change how long a saga waits, never what it does."""

    step_timeout: float = 10.0
    max_attempts: int = 3
    backoff: float = 0.2
    settle_attempts: int = 30
    settle_backoff_max: float = 30.0
    deadline: float = 120.0

    def policies(self) -> tuple[RetryPolicy, RetryPolicy]:
        """The forward policy (gives up) and the settle policy (confirms, undos, notices)."""
        forward = RetryPolicy(timeout=self.step_timeout, max_attempts=self.max_attempts,
                              backoff=self.backoff, backoff_max=self.step_timeout)
        settle = RetryPolicy(timeout=self.step_timeout, max_attempts=self.settle_attempts,
                             backoff=self.backoff, backoff_max=self.settle_backoff_max,
                             timeout_growth=2.0, timeout_max=8 * self.step_timeout)
        return forward, settle


DEFAULT_TUNING = Tuning()
DEFAULT_POLICY = RetryPolicy()
# Confirmations and compensations must succeed: many attempts, capped backoff.
DEFAULT_SETTLE_POLICY = RetryPolicy(timeout=10.0, max_attempts=30, backoff=0.5, backoff_max=30.0,
                                    timeout_growth=2.0, timeout_max=120.0)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a saga failed."""

    reason_code: str
    reason: str
    step: str | None = None


@dataclass(frozen=True, slots=True)
class CommandContext(Generic[D]):
    """What a command builder may use: the saga's data and, when undoing, its failure."""

    saga_id: str
    step: str
    data: D
    failure: Failure | None


ParamsBuilder = Callable[[CommandContext[D]], BaseModel]


@dataclass(frozen=True, slots=True)
class Step(Generic[D]):
    """One call of a participant's operation. A two-phase step is prepared before the commit
    point and confirmed after it; an undoable action is compensated when the saga fails."""

    name: str
    service: str
    operation: str
    params: ParamsBuilder[D]
    kind: OperationKind = OperationKind.ACTION
    undoable: bool = False
    policy: RetryPolicy = DEFAULT_POLICY
    settle_policy: RetryPolicy = DEFAULT_SETTLE_POLICY

    @property
    def two_phase(self) -> bool:
        """True for a prepare/confirm/cancel step."""
        return self.kind is OperationKind.TWO_PHASE

    @property
    def compensated(self) -> bool:
        """True when a failed saga undoes this step."""
        return self.two_phase or self.undoable

    def has(self, op: Operation) -> bool:
        """True when this step has a command for ``op``."""
        return (op is Operation.FORWARD or (op is Operation.CONFIRM and self.two_phase)
                or (op is Operation.COMPENSATE and self.compensated))

    def command_type(self, op: Operation) -> str:
        """The message type of one phase of this step."""
        if not self.has(op):
            raise DefinitionError(f"step {self.name} has no {op} command")
        return command_type(self.service, self.operation, self.kind, op)

    def command(self, op: Operation, context: CommandContext[D]) -> StepCommand:
        """The body of one phase's command (an undo says why the saga failed)."""
        failure = context.failure
        why = (StepFailure(reason_code=failure.reason_code, reason=failure.reason[:500])
               if failure is not None and op is Operation.COMPENSATE else None)
        return StepCommand(saga_id=context.saga_id, step=self.name,
                           params=self.params(context).model_dump(mode="json"), failure=why)


def action(name: str, service: str, operation: str, params: ParamsBuilder[D], *,
           undoable: bool = True, policy: RetryPolicy = DEFAULT_POLICY,
           settle_policy: RetryPolicy = DEFAULT_SETTLE_POLICY) -> Step[D]:
    """A step that runs an action once (and undoes it when ``undoable``)."""
    return Step(name, service, operation, params, OperationKind.ACTION, undoable, policy,
                settle_policy)


def notice(name: str, service: str, operation: str, params: ParamsBuilder[D], *,
           policy: RetryPolicy = DEFAULT_SETTLE_POLICY) -> Step[D]:
    """An action with nothing to undo, as runs after the commit point or on failure (it
    must settle, so it retries like a confirmation)."""
    return Step(name, service, operation, params, OperationKind.ACTION, False, policy, policy)


def two_phase(name: str, service: str, operation: str, params: ParamsBuilder[D], *,
              policy: RetryPolicy = DEFAULT_POLICY,
              settle_policy: RetryPolicy = DEFAULT_SETTLE_POLICY) -> Step[D]:
    """A try/confirm/cancel step: prepare reserves, confirm commits, cancel releases."""
    return Step(name, service, operation, params, OperationKind.TWO_PHASE, False, policy,
                settle_policy)


Stage = tuple[Step[D], ...]


@dataclass(frozen=True, slots=True)
class OutcomeContext(Generic[D]):
    """How a saga ended, for building its outcome event."""

    saga_id: str
    data: D
    failure: Failure | None
    needs_attention: bool
    # Every operation's final state, by (step, operation).
    ops: Mapping[tuple[str, Operation], OpState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """An event announcing a saga's end; ``type`` is also its routing key."""

    type: str
    payload: Model


OutcomeBuilder = Callable[[OutcomeContext[D]], OutcomeEvent]


@dataclass(frozen=True, slots=True)
class Phase(Generic[D]):
    """Operations that run in parallel; the next phase starts when all have settled."""

    ops: tuple[tuple[Step[D], Operation], ...]


@dataclass(frozen=True)
class SagaDefinition(Generic[D]):
    """A named, versioned saga: its data model, stages, deadline and outcome event."""

    name: str
    version: int
    data_model: type[D]
    before_commit: tuple[Stage[D], ...]
    outcome: OutcomeBuilder[D]
    after_commit: tuple[Stage[D], ...] = ()
    on_failure: tuple[Stage[D], ...] = ()
    deadline: float = 120.0
    # How clients start it (None: only started from code, as ad-hoc transactions are).
    start: StartMessage[D] | None = None
    # The business reason codes its participants may answer with (the platform's own are
    # in contracts.reasons).
    reasons: tuple[str, ...] = ()
    description: str = ""
    # A saga that gave way in a deadlock (reason DEADLOCK) starts again this many times at
    # most, inside the same saga, once its compensations are done; ``deadlock_backoff``
    # seconds before the first new round, doubling for each next one.
    deadlock_retries: int = 0
    deadlock_backoff: float = 0.5
    forward_phases: tuple[Phase[D], ...] = field(init=False, repr=False)
    steps: dict[str, Step[D]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._validate()
        confirms = tuple((s, Operation.CONFIRM) for stage in self.before_commit for s in stage
                         if s.two_phase)
        phases = [Phase(tuple((s, Operation.FORWARD) for s in st)) for st in self.before_commit]
        if confirms:
            phases.append(Phase(confirms))
        phases += [Phase(tuple((s, Operation.FORWARD) for s in st)) for st in self.after_commit]
        object.__setattr__(self, "forward_phases", tuple(phases))
        object.__setattr__(self, "steps", {s.name: s for s in self.all_steps()})

    def for_data(self, data: D) -> SagaDefinition[D]:
        """The definition a saga with this data runs under: this one."""
        return self

    @property
    def commit_index(self) -> int:
        """Index of the first forward phase after the commit point."""
        return len(self.before_commit)

    def all_steps(self) -> Iterator[Step[D]]:
        """Every step, in definition order."""
        for stage in (*self.before_commit, *self.after_commit, *self.on_failure):
            yield from stage

    def _validate(self) -> None:
        names = [s.name for s in self.all_steps()]
        if len(names) != len(set(names)):
            raise DefinitionError(f"{self.name}: step names must be unique: {names}")
        if not self.before_commit or any(not stage for stage in self.before_commit):
            raise DefinitionError(f"{self.name}: needs at least one non-empty stage")
        if self.deadlock_retries < 0 or self.deadlock_backoff < 0:
            raise DefinitionError(f"{self.name}: deadlock retries and backoff cannot be "
                                  "negative")
        for stage in (*self.after_commit, *self.on_failure):
            for s in stage:
                if s.compensated:
                    raise DefinitionError(
                        f"{self.name}: step {s.name} runs after the commit point or on failure,"
                        " where nothing is undone; it cannot be two-phase or compensated"
                    )


@dataclass(frozen=True)
class DynamicDefinition(Generic[D]):
    """A definition whose stages depend on each saga's data, as an ad-hoc transaction's do.

    The stages are rebuilt from the data stored with the saga, by a pure function, so that
    recovery never needs the original request.
    """

    name: str
    version: int
    data_model: type[D]
    build: Callable[[D], SagaDefinition[D]]
    start: StartMessage[D] | None = None
    reasons: tuple[str, ...] = ()
    description: str = ""
    deadline: float = 120.0
    steps: dict[str, Step[D]] = field(default_factory=dict)

    def for_data(self, data: D) -> SagaDefinition[D]:
        """The one-off definition of the saga with this data."""
        return self.build(data)

    def all_steps(self) -> Iterator[Step[D]]:
        """None: the steps come with each saga's data."""
        return iter(())
