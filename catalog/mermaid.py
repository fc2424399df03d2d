"""A saga definition as a Mermaid flowchart, generated from the definition's data.

The forward path runs left to right: the start message, each stage (parallel steps in a
box), the commit point, the confirmations, the stages after it and the success outcome.
Below it the failure path: every undo, newest stage first, the on-failure stages and the
failure outcome. A dotted line joins each step to its undo. Two-phase steps are drawn as
subroutines, and each node can be coloured by the live state of its operation (the
console's saga page uses that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from contracts.commands import Operation
from engine.definition import DynamicDefinition, SagaDefinition, Step

# Node colours by operation state (the console), and the legend's class definitions.
CLASSES = {
    "pending": "fill:#f4f4f4,stroke:#999,color:#333",
    "waiting": "fill:#fff3c4,stroke:#c9a400,color:#333",
    "backoff": "fill:#ffe0b2,stroke:#e08000,color:#333",
    "succeeded": "fill:#d4f7d4,stroke:#2e8b2e,color:#113",
    "failed": "fill:#ffd6d6,stroke:#c62828,color:#311",
    "abandoned": "fill:#e0e0e0,stroke:#777,color:#333,stroke-dasharray:4 3",
}

AnyDefinition = SagaDefinition[Any] | DynamicDefinition[Any]


def flowchart(definition: AnyDefinition,
              states: Mapping[tuple[str, Operation], str] | None = None) -> str:
    """The definition as ``flowchart LR`` text; ``states`` colours operations by state."""
    lines = ["flowchart LR"]
    start = definition.start
    begin = start.requested if start else "start"
    success = start.completed if start else "completed"
    failure = start.failed if start else "failed"
    lines.append(f'  start(["{begin}"])')
    if isinstance(definition, DynamicDefinition):
        lines += ['  steps[["one stage per operation of the request:<br/>prepares in parallel, '
                  'undoable actions in order,<br/>commit, confirms, final actions"]]',
                  f'  done(["{success}"])', f'  failed(["{failure}"])',
                  "  start --> steps", "  steps --> done", "  steps -. on failure .-> failed"]
        return "\n".join(lines) + "\n"
    previous = "start"
    for i, stage in enumerate(definition.before_commit):
        previous = _stage(lines, f"s{i}", f"stage {i + 1}", stage, Operation.FORWARD, previous)
    confirms = tuple(s for stage in definition.before_commit for s in stage if s.two_phase)
    lines.append('  commit{{"commit point"}}')
    lines.append(f"  {previous} --> commit")
    previous = "commit"
    if confirms:
        previous = _stage(lines, "confirm", "confirm", confirms, Operation.CONFIRM, previous)
    for i, stage in enumerate(definition.after_commit):
        previous = _stage(lines, f"a{i}", f"after commit {i + 1}", stage, Operation.FORWARD,
                          previous)
    lines.append(f'  done(["{success}"])')
    lines.append(f"  {previous} --> done")
    _failure_path(lines, definition, failure)
    _colour(lines, states or {})
    return "\n".join(lines) + "\n"


def _failure_path(lines: list[str], definition: SagaDefinition[Any], failure: str) -> None:
    lines.append('  fail{{"on failure"}}')
    for stage in definition.before_commit:
        for step in stage:
            lines.append(f"  {_id(step, Operation.FORWARD)} -. fails .-> fail")
    previous = "fail"
    undos = [tuple(s for s in stage if s.compensated) for stage in reversed(definition.before_commit)]
    for i, stage in enumerate(s for s in undos if s):
        previous = _stage(lines, f"u{i}", f"undo {i + 1}", stage, Operation.COMPENSATE, previous)
        for step in stage:
            lines.append(f"  {_id(step, Operation.FORWARD)} -.- {_id(step, Operation.COMPENSATE)}")
    for i, stage in enumerate(definition.on_failure):
        previous = _stage(lines, f"f{i}", f"on failure {i + 1}", stage, Operation.FORWARD,
                          previous)
    lines.append(f'  failed(["{failure}"])')
    lines.append(f"  {previous} --> failed")


def _stage(lines: list[str], block: str, title: str, stage: Sequence[Step[Any]], op: Operation,
           previous: str) -> str:
    """Draw one stage after ``previous``; return the id to continue from."""
    if len(stage) == 1:
        node = _node(stage[0], op)
        lines.append(f"  {node}")
        lines.append(f"  {previous} --> {_id(stage[0], op)}")
        return _id(stage[0], op)
    lines.append(f'  subgraph {block} ["{title} (parallel)"]')
    lines += [f"    {_node(step, op)}" for step in stage]
    lines.append("  end")
    lines.append(f"  {previous} --> {block}")
    return block


def _node(step: Step[Any], op: Operation) -> str:
    label = f"{step.name}<br/><small>{step.command_type(op)}</small>"
    if op is Operation.COMPENSATE:
        label = f"undo {label}"
    shape = ("[[", "]]") if step.two_phase else ("[", "]")
    return f'{_id(step, op)}{shape[0]}"{label}"{shape[1]}'


def _id(step: Step[Any], op: Operation) -> str:
    return step.name if op is Operation.FORWARD else f"{step.name}__{op.value}"


def _colour(lines: list[str], states: Mapping[tuple[str, Operation], str]) -> None:
    if not states:
        return
    lines += [f"  classDef {name} {style}" for name, style in CLASSES.items()]
    for (step, op), state in sorted(states.items()):
        if state in CLASSES:
            lines.append(f"  class {step if op is Operation.FORWARD else f'{step}__{op.value}'} "
                         f"{state}")
