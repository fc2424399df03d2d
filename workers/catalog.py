"""Find participants: every registered one, or one by name or import path.

Participants are registered through the Python entry point group
``saga_orchestrator.participants`` (the project's own are registered there too) and
through ``SAGA_PARTICIPANTS=package.module:attribute,...``. Each names a
``workers.sdk.Participant``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points
from types import MappingProxyType

from contracts.errors import SagaSystemError
from workers.sdk import Participant

ENTRY_POINT_GROUP = "saga_orchestrator.participants"


class UnknownParticipant(SagaSystemError, LookupError):
    """No participant by that name or path; the message says which and why."""


@cache
def registered(refs: tuple[str, ...] = ()) -> Mapping[str, Participant]:
    """Every participant of the entry point group and of ``refs``, by service name."""
    found: dict[str, Participant] = {}
    sources = [(ep.value, ep.load()) for ep in sorted(entry_points(group=ENTRY_POINT_GROUP),
                                                      key=lambda e: e.name)]
    sources += [(ref, _load(ref)) for ref in refs]
    for where, p in sources:
        if not isinstance(p, Participant):
            raise UnknownParticipant(f"{where} is not a workers.sdk.Participant")
        if found.get(p.name, p) is not p:
            raise UnknownParticipant(f"two participants are named {p.name!r} ({where})")
        found[p.name] = p
    return MappingProxyType(found)


def participant(ref: str, refs: tuple[str, ...] = ()) -> Participant:
    """A registered participant by name (``inventory``), or any by import path
    (``package.module:attribute``)."""
    if ":" in ref:
        found = _load(ref)
        if not isinstance(found, Participant):
            raise UnknownParticipant(f"{ref} is not a workers.sdk.Participant")
        return found
    known = registered(refs)
    if ref not in known:
        raise UnknownParticipant(f"no participant {ref!r} is registered (known: "
                                 f"{', '.join(sorted(known))}; a team's own is given as "
                                 "package.module:attribute)")
    return known[ref]


def _load(ref: str) -> object:
    module_name, _, attribute = ref.partition(":")
    if not attribute:
        raise UnknownParticipant(f"{ref!r}: expected package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UnknownParticipant(f"cannot import {module_name!r}: {e}") from e
    found = getattr(module, attribute, None)
    if found is None:
        raise UnknownParticipant(f"{module_name} has no attribute {attribute!r}")
    return found
