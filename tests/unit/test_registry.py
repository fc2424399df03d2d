"""Definition versions: every one is kept, and a saga always continues under its own."""

from __future__ import annotations

import pytest

from contracts.commands import Outcome
from engine.decide import ReplyReceived, decide, start
from engine.definition import DefinitionError, SagaDefinition, Step
from orchestrator.registry import DefinitionRegistry, UnknownDefinition
from orchestrator.serde import from_document, to_document
from tests.unit.scripts import ToyData, action, notice, reservation, toy_saga

V1 = toy_saga((action("a"),), (action("b"),))
V2 = toy_saga((action("a"),), (action("extra"),), (action("b"),), version=2)


def test_registry_keeps_every_version_and_starts_new_sagas_under_the_latest() -> None:
    """Adding v2 keeps v1 reachable; only new sagas pick up v2."""
    registry = DefinitionRegistry([V2, V1])
    assert registry.versions() == [("toy", 1), ("toy", 2)]
    assert registry.get("toy", 1) is V1
    assert registry.get("toy", 2) is V2
    assert registry.latest("toy") is V2


def test_saga_started_under_v1_continues_under_v1_after_v2_is_registered() -> None:
    """A running saga keeps the course it started on, even after a deployment adds v2."""
    first = start(DefinitionRegistry([V1]).latest("toy").for_data(ToyData()), "toy:s-1", ToyData(),
                  0.0)
    state = first.state
    assert state.definition_version == 1
    registry = DefinitionRegistry([V1, V2])
    defn = registry.get(state.definition, state.definition_version).for_data(state.data)
    reply = ReplyReceived(state.op("a", first.commands[0].op).message_id or "", Outcome.SUCCEEDED, 1.0)
    assert [m.step for m in decide(defn, state, reply).commands] == ["b"]
    assert [m.step for m in decide(V2, state, reply).commands] == ["extra"]  # what v1 is spared


def test_stored_saga_is_rebuilt_under_its_own_version() -> None:
    """Loading a stored v1 saga from a registry that also holds v2 keeps it on v1."""
    state = start(V1, "toy:s-1", ToyData(), 0.0).state
    rebuilt = from_document(to_document(state), DefinitionRegistry([V1, V2])).state
    assert rebuilt == state
    assert rebuilt.definition_version == 1


def test_registering_the_same_version_twice_raises() -> None:
    """Two definitions with one name and version would make sagas ambiguous."""
    with pytest.raises(ValueError, match="registered twice"):
        DefinitionRegistry([V1, toy_saga((action("z"),))])


def test_unknown_version_raises_unknown_definition() -> None:
    """A saga naming a version this orchestrator lacks is refused, not run under another."""
    registry = DefinitionRegistry([V1])
    with pytest.raises(UnknownDefinition, match="toy v3"):
        registry.get("toy", 3)
    with pytest.raises(UnknownDefinition, match="order"):
        registry.latest("order")


def test_definition_rejects_duplicate_step_names() -> None:
    """Steps are looked up by name, so names must be unique across all stages."""
    with pytest.raises(DefinitionError, match="unique"):
        toy_saga((action("a"),), (action("a"),))
    with pytest.raises(DefinitionError, match="unique"):
        toy_saga((action("a"),), on_failure=((notice("a"),),))


@pytest.mark.parametrize("late", [action("undoable"), reservation("two_phase")],
                         ids=["compensated", "two_phase"])
def test_definition_rejects_undoable_steps_after_the_commit_point(late: Step[ToyData]) -> None:
    """Nothing is undone after the commit point or on failure, so nothing there may be undoable."""
    with pytest.raises(DefinitionError, match="commit point"):
        toy_saga((action("a"),), after_commit=((late,),))
    with pytest.raises(DefinitionError, match="commit point"):
        toy_saga((action("a"),), on_failure=((late,),))


def test_definition_needs_a_non_empty_stage_before_the_commit_point() -> None:
    """A saga with nothing to do before its commit point, or an empty stage, cannot run."""
    with pytest.raises(DefinitionError, match="non-empty"):
        toy_saga()
    with pytest.raises(DefinitionError, match="non-empty"):
        toy_saga((action("a"),), ())


def test_two_phase_steps_are_confirmed_together_at_the_commit_point() -> None:
    """The commit phase confirms every two-phase step before any after-commit stage runs."""
    defn: SagaDefinition[ToyData] = toy_saga((reservation("p"),), (action("a"), reservation("q")),
                                             after_commit=((notice("n"),),))
    labels = [[f"{s.name}:{op}" for s, op in phase.ops] for phase in defn.forward_phases]
    assert labels == [["p:forward"], ["a:forward", "q:forward"], ["p:confirm", "q:confirm"],
                      ["n:forward"]]
    assert defn.commit_index == 2
