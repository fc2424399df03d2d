"""The published contract: JSON Schemas in the repository match the models, and accept and
refuse the same messages the models do."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from contracts.commands import StepCommand
from contracts.envelope import (
    CodecError,
    Envelope,
    WireMessage,
    derived_id,
    encode,
    is_identifier,
    read_envelope,
    utcnow,
)
from contracts.orders import OrderRequested
from contracts.schemas import SCHEMA_DIR, render, schemas

VALID = {"customer_id": "cust-1", "order_id": "o-1",
         "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "12.50"}]}


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text())
    return loaded


def test_committed_schemas_match_the_models() -> None:
    """Every schema file is exactly what `python -m contracts.schemas` generates."""
    generated = schemas()
    committed = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert committed == set(generated), "run: python -m contracts.schemas"
    for name, schema in generated.items():
        assert (SCHEMA_DIR / name).read_text() == render(schema), f"{name} is stale"


def test_a_documented_order_request_is_valid_for_schema_and_model() -> None:
    """The README's example body passes both the JSON Schema and the pydantic model."""
    jsonschema.validate(VALID, _schema("order.requested.json"))
    assert OrderRequested.model_validate(VALID).items[0].quantity == 2


@pytest.mark.parametrize("change", [
    {"unit_price": 12.5},            # a JSON number, not a decimal string
    {"unit_price": "12.505"},        # more than two decimals
    {"unit_price": "-1.00"},
    {"quantity": 0},
    {"quantity": "2"},
    {"sku": ""},
    {"extra": True},
])
def test_schema_and_model_refuse_the_same_bad_items(change: dict[str, Any]) -> None:
    """A bad order line is refused by the JSON Schema and by the model alike."""
    body = json.loads(json.dumps(VALID))
    body["items"][0].update(change)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, _schema("order.requested.json"))
    with pytest.raises(ValidationError):
        OrderRequested.model_validate_json(json.dumps(body))


def test_order_id_may_be_left_out() -> None:
    """order_id is optional in the request: the orchestrator generates one."""
    body = {k: v for k, v in VALID.items() if k != "order_id"}
    jsonschema.validate(body, _schema("order.requested.json"))
    assert OrderRequested.model_validate(body).order_id is None


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("message_id", None, "message_id is missing"),
    ("correlation_id", None, "correlation_id is missing"),
    ("type", None, "type is missing"),
    ("message_id", "has space", "message_id"),
    ("message_id", "m" * 201, "message_id"),
])
def test_the_codec_refuses_an_envelope_without_its_identity(
        field: str, value: str | None, reason: str) -> None:
    """Internal messages need every envelope field; other AMQP clients can omit them."""
    message = {"message_id": replace(_command(), message_id=value),
               "correlation_id": replace(_command(), correlation_id=value),
               "type": replace(_command(), type=value)}[field]
    with pytest.raises(CodecError, match=reason):
        read_envelope(message)


def test_derived_ids_stay_valid_for_the_longest_ids() -> None:
    """A reply id derived from a 200-character command id is still a valid identifier."""
    long_id = "m" * 200
    derived = derived_id(long_id, "reply")
    assert is_identifier(derived)
    assert derived == derived_id(long_id, "reply")
    assert derived_id("short", "reply") == "short:reply"


def _command() -> WireMessage:
    envelope = Envelope(message_id="m-1", correlation_id="o-1", causation_id=None,
                        message_type="inventory.reserve.cancel", timestamp=utcnow())
    return encode(envelope, StepCommand(saga_id="o-1", step="reserve_stock",
                                        params={"order_id": "o-1", "lines": []}))
