"""JSON Schemas of every message, generated from the pydantic models.

``python -m contracts.schemas`` rewrites ``contracts/schemas/``; a test fails when the
committed files and the models disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from contracts.envelope import Envelope
from contracts.registry import all_message_types

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema, for every message type and for the envelope."""
    out = {"envelope.json": _with_id(Envelope.model_json_schema(), "envelope")}
    for message_type, model in sorted(all_message_types().items()):
        out[f"{message_type}.json"] = _with_id(model.model_json_schema(), message_type)
    return out


def _with_id(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:saga-orchestrator:{name}", **schema}


def render(schema: dict[str, Any]) -> str:
    """Stable text form of a schema."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> int:
    """Write every schema file (and remove stale ones)."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    wanted = schemas()
    for stale in set(p.name for p in SCHEMA_DIR.glob("*.json")) - wanted.keys():
        (SCHEMA_DIR / stale).unlink()
    for name, schema in wanted.items():
        (SCHEMA_DIR / name).write_text(render(schema))
    print(f"wrote {len(wanted)} schemas to {SCHEMA_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
