"""Every registered version of every saga definition, and where they come from.

A saga records the name and version it started under; it is always continued with
exactly that definition, so a deployment that adds version N+1 never changes the
course of sagas that began under version N.

Definitions are registered from modules named in configuration
(``SAGA_DEFINITIONS=mypkg.sagas,otherpkg.flows:more``) and from the Python entry point
group ``saga_orchestrator.definitions``, through which the project registers its own
sagas too. Each names a callable ``definitions(setup) -> Iterable[SagaDefinition]``
(a module's ``definitions`` attribute when no ``:attribute`` is given); ``Setup`` carries
the operational tuning and the participants' manifests.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from contracts.commands import OperationKind
from contracts.errors import SagaSystemError
from contracts.topology import Entry, Plan
from engine.definition import DEFAULT_TUNING, DynamicDefinition, SagaDefinition, Tuning
from orchestrator.manifests import Manifest

AnyDefinition = SagaDefinition[Any] | DynamicDefinition[Any]
ENTRY_POINT_GROUP = "saga_orchestrator.definitions"


@dataclass(frozen=True, slots=True)
class Setup:
    """What a definition source is given."""

    tuning: Tuning = DEFAULT_TUNING
    manifests: Mapping[str, Manifest] = field(default_factory=dict)


Source = Callable[[Setup], Iterable[AnyDefinition]]


class UnknownDefinition(SagaSystemError, LookupError):
    """A saga names a definition version this orchestrator does not have."""


class RegistrationError(SagaSystemError, ValueError):
    """A configured definition source cannot be loaded; the message says which and why."""


class DefinitionRegistry:
    """Definitions by (name, version); new sagas use the latest version."""

    def __init__(self, definitions: Iterable[AnyDefinition]) -> None:
        self._by_key: dict[tuple[str, int], AnyDefinition] = {}
        for d in definitions:
            if (d.name, d.version) in self._by_key:
                raise RegistrationError(f"definition {d.name} v{d.version} registered twice")
            self._by_key[(d.name, d.version)] = d

    def get(self, name: str, version: int) -> AnyDefinition:
        """The exact version a saga started under."""
        try:
            return self._by_key[(name, version)]
        except KeyError:
            raise UnknownDefinition(f"no definition {name} v{version} is registered") from None

    def latest(self, name: str) -> AnyDefinition:
        """The version new sagas of this name start under."""
        versions = [d for (n, _), d in self._by_key.items() if n == name]
        if not versions:
            raise UnknownDefinition(f"no definition named {name} is registered")
        return max(versions, key=lambda d: d.version)

    def all(self) -> list[AnyDefinition]:
        """Every registered definition, sorted by name and version."""
        return [self._by_key[key] for key in sorted(self._by_key)]

    def names(self) -> list[str]:
        """Every registered definition name, sorted."""
        return sorted({name for name, _ in self._by_key})

    def versions(self) -> list[tuple[str, int]]:
        """Every registered (name, version), sorted."""
        return sorted(self._by_key)

    def entries(self) -> tuple[Entry, ...]:
        """The public entry of the latest version of every definition that has one."""
        out = []
        for name in self.names():
            start = self.latest(name).start
            if start is not None:
                out.append(Entry(name, start.exchange, start.requested,
                                 (start.completed, start.failed, start.cancel_refused,
                                  start.resolved),
                                 start.cancel))
        return tuple(out)

    def plan(self) -> Plan:
        """The entries, and the services the definitions call."""
        return Plan(self.entries(), tuple(self.services()))

    def steps(self) -> list[tuple[str, str, str, str, OperationKind, bool]]:
        """(definition, step, service, operation, kind, undoable) of every static step."""
        return [(d.name, s.name, s.service, s.operation, s.kind, s.compensated)
                for d in self._by_key.values() for s in d.all_steps()]

    def services(self) -> list[str]:
        """Every participant service some registered definition calls, sorted."""
        return sorted({step.service for d in self._by_key.values() for step in d.all_steps()})


def load(refs: Sequence[str], setup: Setup = Setup(), *,
         entry_point_group: str | None = ENTRY_POINT_GROUP) -> DefinitionRegistry:
    """Every definition of the entry point group and of the configured modules."""
    sources: list[tuple[str, Source]] = []
    if entry_point_group is not None:
        for ep in sorted(entry_points(group=entry_point_group), key=lambda e: e.name):
            sources.append((f"entry point {ep.name} ({ep.value})", _callable(ep.load(), ep.value)))
    sources += [(ref, _source(ref)) for ref in refs]
    found: list[AnyDefinition] = []
    called: set[int] = set()
    for where, source in sources:
        if id(source) in called:
            continue  # named in configuration and an entry point too: registered once
        called.add(id(source))
        try:
            found += list(source(setup))
        except Exception as e:
            raise RegistrationError(f"{where}: definitions() failed: {e!r}") from e
    return DefinitionRegistry(found)


def _source(ref: str) -> Source:
    module_name, _, attribute = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RegistrationError(f"SAGA_DEFINITIONS: cannot import {module_name!r}: {e}") from e
    found = getattr(module, attribute or "definitions", None)
    if found is None:
        raise RegistrationError(f"SAGA_DEFINITIONS: {module_name} has no "
                                f"{attribute or 'definitions'}(setup)")
    return _callable(found, ref)


def _callable(found: object, ref: str) -> Source:
    if not callable(found):
        raise RegistrationError(f"{ref} is not callable: definitions(setup) expected")
    return found
