"""``sagactl definitions``: the registered definitions, and one as a Mermaid flowchart."""

from __future__ import annotations

import json
from typing import Any, TextIO

from catalog.mermaid import flowchart
from engine.definition import DynamicDefinition
from orchestrator.registry import AnyDefinition, DefinitionRegistry, UnknownDefinition


def describe(definition: AnyDefinition) -> dict[str, Any]:
    """One definition version as JSON: its name, version, entry and steps."""
    start = definition.start
    return {
        "name": definition.name,
        "version": definition.version,
        "description": definition.description,
        "exchange": start.exchange if start else None,
        "start": start.requested if start else None,
        "outcomes": [start.completed, start.failed] if start else [],
        "reasons": list(definition.reasons),
        "dynamic": isinstance(definition, DynamicDefinition),
        "steps": [{"name": s.name, "service": s.service, "operation": s.operation,
                   "kind": s.kind.value, "undoable": s.compensated}
                  for s in definition.all_steps()],
    }


def list_all(registry: DefinitionRegistry, as_json: bool, out: TextIO) -> int:
    """Every registered definition and version, with its start routing key."""
    found = [describe(d) for d in registry.all()]
    if as_json:
        out.write(json.dumps(found, indent=2) + "\n")
        return 0
    out.write(f"{'DEFINITION':<16}{'VERSION':>8}  {'START':<24}{'EXCHANGE':<16}STEPS\n")
    for d in found:
        steps = "per request" if d["dynamic"] else str(len(d["steps"]))
        out.write(f"{d['name']:<16}{d['version']:>8}  {d['start'] or '-':<24}"
                  f"{d['exchange'] or '-':<16}{steps}\n")
    return 0


def show(registry: DefinitionRegistry, name: str, version: int | None, mermaid: bool,
         out: TextIO) -> int:
    """One definition (the latest version unless one is asked for): JSON or Mermaid."""
    definition = registry.latest(name) if version is None else registry.get(name, version)
    out.write(flowchart(definition) if mermaid else json.dumps(describe(definition), indent=2)
              + "\n")
    return 0


__all__ = ["UnknownDefinition", "describe", "list_all", "show"]
