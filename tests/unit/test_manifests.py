"""Participant manifests: what is accepted, what is refused and why, and what the
platform derives from a manifest file alone (a participant written in another language)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from catalog.plan import Platform
from contracts.commands import OperationKind
from contracts.topology import Topology, layout
from infra.settings import CommonSettings
from orchestrator.manifests import (
    ManifestError,
    by_service,
    mismatches,
    params_problem,
    parse,
    read,
)
from workers.catalog import registered

LOYALTY = Path(__file__).parents[1] / "foreign" / "loyalty.json"


def _loyalty() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(LOYALTY.read_text())
    return document


def test_every_shipped_participant_writes_a_manifest_the_orchestrator_accepts() -> None:
    for name, participant in registered().items():
        manifest = parse(participant.manifest(), name)
        assert manifest.service == name
        assert manifest.operations


def test_a_hand_written_manifest_is_read_from_a_file_or_a_folder(tmp_path: Path) -> None:
    (tmp_path / "loyalty.json").write_text(LOYALTY.read_text())
    assert [m.service for m in read([str(LOYALTY)])] == ["loyalty"]
    assert [m.service for m in read([str(tmp_path)])] == ["loyalty"]


def test_phases_that_break_the_naming_convention_are_refused() -> None:
    document = _loyalty()
    document["operations"][0]["phases"]["compensate"] = "loyalty.award.rollback"
    with pytest.raises(ManifestError, match="phases must be"):
        parse(document, "loyalty.json")


def test_params_that_are_not_a_json_schema_are_refused() -> None:
    document = _loyalty()
    document["operations"][0]["params"] = {"type": "no-such-type"}
    with pytest.raises(ManifestError, match="params is not a JSON Schema"):
        parse(document, "loyalty.json")


@pytest.mark.parametrize("change", [
    {"service": "Loyalty Points"},
    {"operations": [{"name": "award", "kind": "three_phase"}]},
    {"unknown": True},
])
def test_a_malformed_manifest_names_its_file(change: dict[str, Any]) -> None:
    with pytest.raises(ManifestError, match=r"^loyalty\.json: "):
        parse({**_loyalty(), **change}, "loyalty.json")


def test_an_unreadable_file_is_a_manifest_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read a manifest"):
        read([str(broken)])
    with pytest.raises(ManifestError, match="cannot read a manifest"):
        read([str(tmp_path / "missing.json")])


def test_two_different_manifests_for_one_service_are_refused() -> None:
    first = parse(_loyalty())
    other = parse({**_loyalty(), "reasons": ["OTHER"]})
    assert by_service([first, first]) == {"loyalty": first}
    with pytest.raises(ManifestError, match="two different manifests"):
        by_service([first, other])


def test_params_are_checked_against_the_operation_schema() -> None:
    award = parse(_loyalty()).operations[0]
    assert params_problem(award, {"member": "m-1", "points": 5}) is None
    problem = params_problem(award, {"member": "m-1", "points": "many"})
    assert problem is not None
    assert problem.startswith("points: ")
    problem = params_problem(award, {"member": "m-1"})
    assert problem is not None
    assert "points" in problem


def test_steps_that_do_not_fit_the_manifests_are_named() -> None:
    manifests = {"loyalty": parse(_loyalty())}
    steps = [
        ("d", "ok", "loyalty", "award", OperationKind.TWO_PHASE, True),
        ("d", "missing", "loyalty", "redeem", OperationKind.ACTION, True),
        ("d", "kind", "loyalty", "award", OperationKind.ACTION, True),
        ("d", "unjudged", "elsewhere", "anything", OperationKind.ACTION, True),
    ]
    assert mismatches(steps, manifests) == [
        "d.missing: loyalty.redeem: loyalty has no such operation",
        "d.kind: loyalty.award is two_phase, the definition calls it action",
    ]


def test_a_participant_known_only_by_its_manifest_gets_queues_and_contract() -> None:
    """The generated broker definitions, the deployment and the AsyncAPI document come from
    the platform's plan: a manifest file alone must put its service there."""
    platform = Platform.load(CommonSettings(saga_manifests=(str(LOYALTY),)))
    assert "loyalty" in platform.plan().services
    assert "loyalty" not in platform.participants
    queues = {q.name for q in layout(Topology(), platform.plan())[1]}
    assert "loyalty.commands" in queues
    assert platform.manifests()["loyalty"]["reasons"] == ["TOO_MANY_POINTS"]
