"""What is registered, in one object: the definitions, the participants, their manifests.

Everything derived for deployment (the broker's definitions file, the databases and their
roles, metrics ports and scrape targets) and for documentation (the AsyncAPI document,
the Mermaid diagrams) starts from here, so nothing is listed by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from contracts.topology import Plan
from infra.settings import CommonSettings, common_from_env
from orchestrator.manifests import Manifest, participant_manifests
from orchestrator.registry import DefinitionRegistry, Setup, load
from workers.catalog import registered
from workers.sdk import Participant


@dataclass(frozen=True)
class Platform:
    """The registered definitions and participants."""

    definitions: DefinitionRegistry
    participants: Mapping[str, Participant]  # the Python ones
    # Every participant's manifest, the Python ones' and those of SAGA_MANIFESTS files
    # (participants written in other languages).
    known: Mapping[str, Manifest]

    @classmethod
    def load(cls, common: CommonSettings | None = None) -> Platform:
        """What the configuration (and the entry points) register."""
        common = common or common_from_env(os.environ, "catalog")
        found = participant_manifests(common)
        return cls(load(common.saga_definitions, Setup(manifests=found)),
                   registered(common.saga_participants), found)

    def plan(self, partitions: int = 0) -> Plan:
        """The entries of every definition with a start message, and every service: those
        the definitions call and every participant with a manifest (ad-hoc transactions
        may call any of them); with the orchestrators' partition queues, if any."""
        return Plan(self.definitions.entries(), tuple(sorted(
            {*self.participants, *self.known, *self.definitions.services()})), partitions)

    def manifests(self) -> dict[str, dict[str, Any]]:
        """Every participant's manifest in its JSON form, by service."""
        return {name: (self.participants[name].manifest() if name in self.participants
                       else manifest.model_dump(mode="json"))
                for name, manifest in sorted(self.known.items())}


def registered_plan() -> Plan:
    """The plan of what this environment registers."""
    return Platform.load().plan()


@cache
def shipped() -> Platform:
    """What the product itself registers (its entry points), whatever the environment."""
    return Platform.load(CommonSettings())


def owners(services: Sequence[str]) -> tuple[str, ...]:
    """Every process that owns a database: the orchestrator and each participant."""
    return ("orchestrator", *services)
