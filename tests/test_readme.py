"""The README shows what the code does: its order-saga flowchart is the generated one."""

from __future__ import annotations

import re
from pathlib import Path

from catalog.mermaid import flowchart
from orchestrator.sagas.order import order_saga

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_flowchart_is_the_generated_one() -> None:
    """The ```mermaid block of the README is exactly `sagactl definitions show order
    --mermaid`: the flow is drawn from the definition, never by hand."""
    blocks = re.findall(r"```mermaid\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks == [flowchart(order_saga())]
