"""Every registered version of every saga definition.

A saga records the name and version it started under; it is always continued with
exactly that definition, so a deployment that adds version N+1 never changes the
course of sagas that began under version N.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orchestrator.definition import SagaDefinition

AnyDefinition = SagaDefinition[Any]


class UnknownDefinition(LookupError):
    """A saga names a definition version this orchestrator does not have."""


class DefinitionRegistry:
    """Definitions by (name, version); new sagas use the latest version."""

    def __init__(self, definitions: Iterable[AnyDefinition]) -> None:
        self._by_key: dict[tuple[str, int], AnyDefinition] = {}
        for d in definitions:
            if (d.name, d.version) in self._by_key:
                raise ValueError(f"definition {d.name} v{d.version} registered twice")
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

    def versions(self) -> list[tuple[str, int]]:
        """Every registered (name, version), sorted."""
        return sorted(self._by_key)
