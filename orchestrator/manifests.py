"""Participant manifests: what the orchestrator knows of each participant service.

A manifest names the service, its operations with their kind and their parameters' JSON
Schema. The Python SDK writes one from its declarations (``Participant.manifest()``); a
participant written in another language ships its own JSON file, named in
``SAGA_MANIFESTS`` (files, or folders of ``*.json``). The orchestrator validates ad-hoc
transactions against them, and checks at start-up that every step of every definition
calls an operation of the right kind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import Field, ValidationError

from contracts.commands import Name, OperationKind, command_type, phases
from contracts.envelope import Model, describe
from contracts.errors import SagaSystemError
from infra.settings import CommonSettings
from workers.catalog import registered


class ManifestError(SagaSystemError, ValueError):
    """A manifest that cannot be read, or a definition that does not fit the manifests."""


class OperationManifest(Model):
    """One operation of a participant."""

    name: Name
    kind: OperationKind
    undoable: bool = True
    # phase -> message type. The types follow one convention (``command_type``), so this
    # is documentation for the participant's author; a manifest that says otherwise is
    # refused rather than sent commands it does not expect.
    phases: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)  # JSON Schema of the parameters


class Manifest(Model):
    """A participant service, as the orchestrator sees it."""

    service: Name
    description: str = ""
    reasons: tuple[str, ...] = ()
    operations: tuple[OperationManifest, ...]

    def operation(self, name: str) -> OperationManifest | None:
        """One operation by name."""
        return next((op for op in self.operations if op.name == name), None)


def parse(document: Mapping[str, Any], where: str = "manifest") -> Manifest:
    """A manifest from its JSON form; its schemas are checked to be valid JSON Schema."""
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as e:
        raise ManifestError(f"{where}: {describe(e)}") from e
    for op in manifest.operations:
        expected = {p.value: command_type(manifest.service, op.name, op.kind, p)
                    for p in phases(op.kind, op.undoable)}
        if op.phases and op.phases != expected:
            raise ManifestError(f"{where}: {op.name}: phases must be {expected}, "
                                f"not {op.phases}")
        try:
            jsonschema.Draft202012Validator.check_schema(op.params)
        except jsonschema.SchemaError as e:
            raise ManifestError(f"{where}: {op.name}: params is not a JSON Schema: "
                                f"{e.message}") from e
    return manifest


def read(paths: Sequence[str]) -> list[Manifest]:
    """Every manifest file named, or found (``*.json``) in a folder named."""
    found = []
    for name in paths:
        path = Path(name)
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        for file in files:
            try:
                document = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ManifestError(f"{file}: cannot read a manifest: {e}") from e
            found.append(parse(document, str(file)))
    return found


def by_service(manifests: Iterable[Manifest]) -> dict[str, Manifest]:
    """Manifests by service name; two for one service is an error."""
    out: dict[str, Manifest] = {}
    for m in manifests:
        if m.service in out and out[m.service] != m:
            raise ManifestError(f"two different manifests for service {m.service!r}")
        out[m.service] = m
    return out


def participant_manifests(common: CommonSettings) -> dict[str, Manifest]:
    """The manifest of every registered Python participant and of every file named in
    SAGA_MANIFESTS, by service."""
    participants = registered(common.saga_participants)
    return by_service([*(parse(p.manifest(), p.name) for p in participants.values()),
                       *read(common.saga_manifests)])


def params_problem(op: OperationManifest, params: Mapping[str, Any]) -> str | None:
    """Why ``params`` do not match the operation's schema, or None."""
    validator = jsonschema.Draft202012Validator(op.params)
    errors = sorted(validator.iter_errors(dict(params)), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    first = errors[0]
    where = ".".join(str(p) for p in first.absolute_path) or "params"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.message}"[:300] + more


def mismatches(steps: Iterable[tuple[str, str, str, str, OperationKind, bool]],
               manifests: Mapping[str, Manifest]) -> list[str]:
    """Why steps (definition, step, service, operation and kind, undoable) do not fit the
    manifests of the services they call; services without a manifest are not judged."""
    problems = []
    for definition, step, service, operation, kind, undoable in steps:
        manifest = manifests.get(service)
        if manifest is None:
            continue
        declared = manifest.operation(operation)
        where = f"{definition}.{step}: {service}.{operation}"
        if declared is None:
            problems.append(f"{where}: {service} has no such operation")
        elif declared.kind is not kind:
            problems.append(f"{where} is {declared.kind}, the definition calls it {kind}")
        elif undoable and not declared.undoable:
            problems.append(f"{where} cannot be undone, the definition compensates it")
    return problems
