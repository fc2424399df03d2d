"""The participant SDK: a service declared in one place, handlers as plain typed functions.

    SERVICE = Participant(
        name="inventory",
        operations=(
            TwoPhase("reserve", ReserveStock, prepare=reserve, confirm=commit, cancel=release),
        ),
        documents=(StockItem, Reservation),
    )

A handler is ``async def handler(tx: Tx, params: P, step: StepContext) -> str``: it reads and
writes its own documents through the transaction and returns a short detail for the reply.
It raises ``Rejected`` for a business "no" and ``Impossible`` when it can never succeed.
Everything else (decoding, the inbox, the fence, optimistic locking, retries, the reply,
metrics, logs, faults) is the runtime's (``workers.runtime``); nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from contracts.commands import Operation, OperationKind, StepFailure, command_type, phases
from contracts.envelope import Model
from contracts.errors import SagaSystemError
from workers.locks import LOCKED, LockPolicy, Locks
from workers.store import Doc, Tx

P = TypeVar("P", bound=Model)


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a handler knows besides its parameters."""

    saga_id: str
    step: str
    now: float
    failure: StepFailure | None = None  # why the saga is undoing (undo and cancel only)


Handler = Callable[[Tx, P, StepContext], Awaitable[str]]


class Rejected(SagaSystemError):
    """A business refusal (insufficient stock, payment declined); never retried."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Impossible(SagaSystemError):
    """The handler can never carry the command out (its data is not there)."""


@dataclass(frozen=True, slots=True)
class Action(Generic[P]):
    """An operation that runs once; ``undo`` compensates it when the saga fails."""

    name: str
    params: type[P]
    run: Handler[P]
    undo: Handler[P] | None = None
    # May answer "no" for a business reason (fault injection rejects these too).
    rejectable: bool = False
    # Locks are two-phase only: an action has no confirm to release them on success.
    locks: None = None

    @property
    def kind(self) -> OperationKind:
        """ACTION."""
        return OperationKind.ACTION

    def handlers(self) -> dict[Operation, Handler[P]]:
        """The handler of each phase."""
        out = {Operation.FORWARD: self.run}
        if self.undo is not None:
            out[Operation.COMPENSATE] = self.undo
        return out


@dataclass(frozen=True, slots=True)
class TwoPhase(Generic[P]):
    """Prepare (changing no committed state), then confirm, or cancel.

    With ``locks``, the prepare also takes a semantic lock on each of the keys they name
    (workers.locks), and the confirm or the cancel releases them.
    """

    name: str
    params: type[P]
    prepare: Handler[P]
    confirm: Handler[P]
    cancel: Handler[P]
    rejectable: bool = True
    locks: Locks[P] | None = None

    @property
    def kind(self) -> OperationKind:
        """TWO_PHASE."""
        return OperationKind.TWO_PHASE

    def handlers(self) -> dict[Operation, Handler[P]]:
        """The handler of each phase."""
        return {Operation.FORWARD: self.prepare, Operation.CONFIRM: self.confirm,
                Operation.COMPENSATE: self.cancel}


OperationSpec = Action[Any] | TwoPhase[Any]


@dataclass(frozen=True, slots=True)
class Route:
    """What one message type asks of a participant."""

    operation: OperationSpec
    phase: Operation
    handler: Handler[Any]


@dataclass(frozen=True)
class Participant:
    """A participant service: its operations, the documents it owns, its business reasons."""

    name: str
    operations: tuple[OperationSpec, ...]
    documents: tuple[type[Doc], ...] = ()
    # The reason code an injected business rejection uses (demos and chaos runs).
    rejection: str = "REFUSED"
    # Every business reason code its handlers may answer with, for the manifest.
    reasons: tuple[str, ...] = ()
    description: str = ""
    # The default port of its /metrics, /healthz and /readyz (SAGA_METRICS_PORT overrides).
    metrics_port: int | None = None
    routes: Mapping[str, Route] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        routes: dict[str, Route] = {}
        for op in self.operations:
            for phase, handler in op.handlers().items():
                routes[command_type(self.name, op.name, op.kind, phase)] = Route(op, phase, handler)
        names = [op.name for op in self.operations]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.name}: operation names must be unique: {names}")
        object.__setattr__(self, "routes", MappingProxyType(routes))

    def operation(self, name: str) -> OperationSpec:
        """One operation by name."""
        for op in self.operations:
            if op.name == name:
                return op
        raise KeyError(f"{self.name} has no operation {name!r}")

    @property
    def parks(self) -> bool:
        """Whether a prepare of this participant may be parked to wait for a lock."""
        return any(op.locks is not None and op.locks.policy is LockPolicy.WAIT
                   for op in self.operations)

    def _lock_reasons(self) -> set[str]:
        # LOCK_TIMEOUT is the platform's own (contracts.reasons), valid for every definition.
        policies = {op.locks.policy for op in self.operations if op.locks is not None}
        return {LOCKED} if LockPolicy.FAIL in policies else set()

    def manifest(self) -> dict[str, Any]:
        """The participant's manifest: what the orchestrator learns about it (and what a
        participant written in another language ships by hand)."""
        return {
            "service": self.name,
            "description": self.description,
            "reasons": sorted(set(self.reasons) | {self.rejection} | self._lock_reasons()),
            "operations": [
                {"name": op.name, "kind": op.kind.value,
                 "undoable": op.kind is OperationKind.TWO_PHASE or Operation.COMPENSATE in
                 op.handlers(),
                 "phases": {phase.value: command_type(self.name, op.name, op.kind, phase)
                            for phase in phases(op.kind, Operation.COMPENSATE in op.handlers())},
                 "params": op.params.model_json_schema()}
                for op in self.operations],
        }
