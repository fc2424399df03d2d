"""docs/asyncapi.yaml is the wire contract others build against: it must say what the code does,
and be a document AsyncAPI tools accept.

The drift test regenerates it from what the product registers. Validity is judged by the
official AsyncAPI 3.0.0 JSON Schema, from the npm package ``@asyncapi/specs`` (pinned in
tests/asyncapi/package.json; the first run installs it with ``npm ci``), with the Python
``jsonschema`` package, offline: every ``$ref`` of that schema points at a definition bundled
in the same file. The JSON Schema cannot check references between parts of the document, so
a test follows every ``$ref`` too; and real encoded messages are validated against their
payload schemas, which proves the hoisted pydantic schemas still mean what the models mean.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from catalog.asyncapi import OUT, document, render
from catalog.plan import shipped
from contracts.admin import ADMIN_ACTION, ADMIN_RESULT
from contracts.commands import Operation, Outcome, StepReply
from contracts.orders import OrderItem, OrderRequested

ROOT = Path(__file__).resolve().parents[2]
SPECS_DIR = ROOT / "tests" / "asyncapi"
SPECS_PACKAGE = "@asyncapi/specs"
SCHEMA = SPECS_DIR / "node_modules" / SPECS_PACKAGE / "schemas" / "3.0.0.json"
NPM_CI_TIMEOUT = 90  # seconds: two small packages; the test's own limit is 120

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def doc() -> Doc:
    """The document of what the product registers."""
    return document(shipped())


@pytest.fixture(scope="module")
def validator() -> Any:
    """The official AsyncAPI 3.0.0 JSON Schema as a draft-07 validator, resolving offline."""
    if not _installed():
        _npm_ci()
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    # Each definition carries its own $id; register them all, so that no $ref is fetched.
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(sub, default_specification=DRAFT7))
        for uri, sub in schema["definitions"].items())
    return Draft7Validator(schema, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER)


def _installed() -> bool:
    pinned = json.loads((SPECS_DIR / "package.json").read_text())["dependencies"][SPECS_PACKAGE]
    manifest = SPECS_DIR / "node_modules" / SPECS_PACKAGE / "package.json"
    return (SCHEMA.exists() and manifest.exists()
            and json.loads(manifest.read_text())["version"] == pinned)


def _npm_ci() -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"npm is not on PATH: it installs {SPECS_PACKAGE} into {SPECS_DIR}",
                    pytrace=False)
    try:
        run = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=SPECS_DIR, text=True,
                             capture_output=True, timeout=NPM_CI_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"npm ci in {SPECS_DIR} took more than {NPM_CI_TIMEOUT}s", pytrace=False)
    if run.returncode != 0 or not _installed():
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.fail(f"npm ci in {SPECS_DIR} failed ({run.returncode}): {last}", pytrace=False)


def _errors(validator: Any, instance: Doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}"
            for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc: Doc, ref: str) -> Any:
    assert ref.startswith("#/"), f"not a reference inside the document: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"{ref} does not resolve (at {part!r})"
        assert part in node, f"{ref} does not resolve (at {part!r})"
        node = node[part]
    return node


def _payload_validator(doc: Doc, message: str) -> Any:
    """A validator of one message's payload, its references resolved inside the document."""
    base = "urn:test:asyncapi"
    registry: Registry[Any] = Registry().with_resource(
        base, Resource.from_contents(doc, default_specification=DRAFT7))
    return Draft7Validator({"$ref": f"{base}#/components/messages/{message}/payload"},
                           registry=registry)


def test_committed_document_matches_the_code(doc: Doc) -> None:
    """docs/asyncapi.yaml is exactly what the registered definitions and participants give."""
    assert OUT.exists(), "docs/asyncapi.yaml is missing: run `python -m catalog.asyncapi`"
    assert OUT.read_text(encoding="utf-8") == render(doc), (
        "docs/asyncapi.yaml is stale: run `python -m catalog.asyncapi` and commit the result")
    assert yaml.safe_load(OUT.read_text(encoding="utf-8")) == json.loads(json.dumps(doc))


def test_document_is_valid_asyncapi_3(doc: Doc, validator: Any) -> None:
    """The document validates against the official AsyncAPI 3.0.0 JSON Schema."""
    assert doc["asyncapi"] == "3.0.0"
    assert _errors(validator, doc) == []


def test_every_reference_resolves_and_operations_use_their_channels_messages(doc: Doc) -> None:
    """Every $ref points at something, and each operation's messages are its channel's."""
    refs = set(_refs(doc))
    assert refs
    for ref in refs:
        _resolve(doc, ref)
    for key, operation in doc["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel}/messages/"), key
        if "reply" in operation:
            reply = operation["reply"]
            for message in reply["messages"]:
                assert message["$ref"].startswith(f"{reply['channel']['$ref']}/messages/"), key


def test_every_command_type_and_public_key_is_in_the_document(doc: Doc) -> None:
    """Each phase of each participant operation is a message; each start and outcome key a
    channel address, carrying the message of that name."""
    platform = shipped()
    commands = {command for manifest in platform.manifests().values()
                for op in manifest["operations"] for command in op["phases"].values()}
    assert commands
    assert commands <= doc["components"]["messages"].keys()
    channels = {c["address"]: c for c in doc["channels"].values()}
    public = {c["address"] for c in doc["channels"].values()
              if c["bindings"]["amqp"]["exchange"]["type"] == "topic"}
    keys = {key for entry in platform.plan().entries
            for key in (entry.requested, entry.cancel, *entry.outcomes) if key is not None}
    keys |= {ADMIN_ACTION, ADMIN_RESULT}  # the operators' way in, and its answers
    assert public == keys  # and nothing else: no key the orchestrator does not handle
    for key in keys:
        assert list(channels[key]["messages"]) == [key]
        assert "x-payload-model" in doc["components"]["messages"][key], (
            f"no payload model found for {key}")
    for service in platform.plan().services:
        assert f"{service}.commands" == doc["channels"][f"commands.{service}"]["x-queue"]["name"]


def test_real_messages_validate_against_their_payload_schemas(doc: Doc) -> None:
    """A reply and an order request, encoded by the models, fit the document's payloads; a
    field the models forbid does not."""
    reply = StepReply(saga_id="order:o-1", step="reserve", operation=Operation.COMPENSATE,
                      outcome=Outcome.REJECTED, reason_code="CANCELLED", detail="fenced")
    request = OrderRequested(customer_id="c-1", items=(
        OrderItem.model_validate({"sku": "sku-1", "quantity": 2, "unit_price": "12.50"}),))
    for name, body in (("saga.reply", reply.model_dump(mode="json")),
                       ("order.requested", request.model_dump(mode="json", exclude_none=True))):
        assert _errors(_payload_validator(doc, name), body) == [], name
    wrong = {**reply.model_dump(mode="json"), "unexpected": 1}
    assert _errors(_payload_validator(doc, "saga.reply"), wrong) != []


def _wrong_type(d: Doc) -> None:
    d["info"]["version"] = 1


def _missing_required(d: Doc) -> None:
    del next(iter(d["operations"].values()))["action"]


def _queue_and_routing_key(d: Doc) -> None:
    next(iter(d["channels"].values()))["bindings"]["amqp"]["queue"] = {"name": "q"}


def _unknown_field(d: Doc) -> None:
    next(iter(d["components"]["messages"].values()))["type"] = "order.requested"


@pytest.mark.parametrize("break_it", [_wrong_type, _missing_required, _queue_and_routing_key,
                                      _unknown_field])
def test_validation_rejects_a_broken_document(doc: Doc, validator: Any,
                                              break_it: Callable[[Doc], None]) -> None:
    """A copy of the document with one mistake fails the official schema."""
    broken = copy.deepcopy(doc)
    break_it(broken)
    assert _errors(validator, broken) != []
