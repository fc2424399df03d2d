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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from contracts.commands import Operation, SagaCommand
from contracts.envelope import Model
from contracts.orders import ReasonCode

D = TypeVar("D", bound=Model)


class DefinitionError(ValueError):
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


DEFAULT_POLICY = RetryPolicy()
# Confirmations and compensations must succeed: many attempts, capped backoff.
DEFAULT_SETTLE_POLICY = RetryPolicy(timeout=10.0, max_attempts=30, backoff=0.5, backoff_max=30.0,
                                    timeout_growth=2.0, timeout_max=120.0)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a saga failed."""

    reason_code: ReasonCode
    reason: str
    step: str | None = None


@dataclass(frozen=True, slots=True)
class CommandContext(Generic[D]):
    """What a command builder may use: the saga's data and, when undoing, its failure."""

    saga_id: str
    step: str
    data: D
    failure: Failure | None


@dataclass(frozen=True, slots=True)
class CommandSpec(Generic[D]):
    """A command type and the pure function that builds its payload."""

    type: str
    build: Callable[[CommandContext[D]], SagaCommand]


@dataclass(frozen=True, slots=True)
class Step(Generic[D]):
    """One participant call. With ``confirm`` set it is a two-phase (try/confirm/cancel) step."""

    name: str
    service: str
    forward: CommandSpec[D]
    compensate: CommandSpec[D] | None = None
    confirm: CommandSpec[D] | None = None
    policy: RetryPolicy = DEFAULT_POLICY
    settle_policy: RetryPolicy = DEFAULT_SETTLE_POLICY

    @property
    def two_phase(self) -> bool:
        """True for a prepare/confirm/cancel step."""
        return self.confirm is not None

    def spec(self, op: Operation) -> CommandSpec[D]:
        """The command for one operation of this step."""
        spec = {Operation.FORWARD: self.forward, Operation.CONFIRM: self.confirm}.get(
            op, self.compensate
        )
        if spec is None:
            raise DefinitionError(f"step {self.name} has no {op} command")
        return spec

    def retry_policy(self, op: Operation) -> RetryPolicy:
        """Forward attempts follow ``policy``; confirm and compensate must settle."""
        return self.policy if op is Operation.FORWARD else self.settle_policy


def two_phase(
    name: str,
    service: str,
    *,
    prepare: CommandSpec[D],
    confirm: CommandSpec[D],
    cancel: CommandSpec[D],
    policy: RetryPolicy = DEFAULT_POLICY,
    settle_policy: RetryPolicy = DEFAULT_SETTLE_POLICY,
) -> Step[D]:
    """A try/confirm/cancel step: prepare reserves, confirm commits, cancel releases."""
    return Step(name, service, prepare, cancel, confirm, policy, settle_policy)


Stage = tuple[Step[D], ...]


@dataclass(frozen=True, slots=True)
class OutcomeContext(Generic[D]):
    """How a saga ended, for building its outcome event."""

    saga_id: str
    data: D
    failure: Failure | None
    needs_attention: bool


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
    commit: bool = False


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
    forward_phases: tuple[Phase[D], ...] = field(init=False, repr=False)
    steps: dict[str, Step[D]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._validate()
        confirms = tuple((s, Operation.CONFIRM) for stage in self.before_commit for s in stage
                         if s.two_phase)
        phases = [Phase(tuple((s, Operation.FORWARD) for s in st)) for st in self.before_commit]
        if confirms:
            phases.append(Phase(confirms, commit=True))
        phases += [Phase(tuple((s, Operation.FORWARD) for s in st)) for st in self.after_commit]
        object.__setattr__(self, "forward_phases", tuple(phases))
        object.__setattr__(self, "steps", {s.name: s for s in self.all_steps()})

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
        for stage in (*self.after_commit, *self.on_failure):
            for s in stage:
                if s.two_phase or s.compensate is not None:
                    raise DefinitionError(
                        f"{self.name}: step {s.name} runs after the commit point or on failure,"
                        " where nothing is undone; it cannot be two-phase or compensated"
                    )
