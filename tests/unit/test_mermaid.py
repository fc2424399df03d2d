"""The Mermaid flowcharts we generate parse with Mermaid's own parser.

``catalog.mermaid.flowchart`` writes Mermaid text by hand (``sagactl definitions show
--mermaid``, the console's saga page), and Mermaid's grammar is easy to break: a quote,
a bracket, a reserved word as a node id, a style with a space. Nothing in Python can tell
whether the text is valid Mermaid, so these tests run the ``mermaid`` package from npm
(pinned in tests/mermaid/package.json, with jsdom for the DOM its label sanitiser needs)
under Node.js, through tests/mermaid/parse.mjs. The first run installs it with ``npm ci``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from catalog.mermaid import CLASSES, flowchart
from contracts.commands import Operation
from harness.processes import ROOT
from infra.settings import CommonSettings
from orchestrator.app import definitions
from orchestrator.registry import DefinitionRegistry
from orchestrator.settings import OrchestratorSettings

PARSER_DIR = ROOT / "tests" / "mermaid"
NPM_CI_TIMEOUT = 540  # seconds; a cold npm cache downloads ~150 packages
# The tests that may run npm ci (pytest-timeout counts fixture setup in the test's time).
INSTALL_TIMEOUT = pytest.mark.timeout(NPM_CI_TIMEOUT + 60)


@dataclass(frozen=True)
class Parsed:
    """Mermaid's verdict on one diagram."""

    ok: bool
    diagram_type: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class MermaidParser:
    """Runs tests/mermaid/parse.mjs: Mermaid's ``mermaid.parse`` under Node.js."""

    node: str

    def parse(self, diagrams: Sequence[str]) -> list[Parsed]:
        """Parse each diagram; one verdict per diagram, in order."""
        run = subprocess.run([self.node, str(PARSER_DIR / "parse.mjs")], cwd=PARSER_DIR,
                             input=json.dumps(list(diagrams)), text=True, capture_output=True,
                             timeout=60, check=False)
        if run.returncode not in (0, 1):
            pytest.fail(f"parse.mjs exited {run.returncode}: {run.stderr.strip()}", pytrace=False)
        verdicts = [json.loads(line) for line in run.stdout.splitlines()]
        assert [v["index"] for v in verdicts] == list(range(len(diagrams))), run.stdout
        assert run.returncode == (0 if all(v["ok"] for v in verdicts) else 1)
        return [Parsed(v["ok"], v.get("diagramType"), v.get("error")) for v in verdicts]


def _installed() -> bool:
    """Every package pinned in package.json is in node_modules at its pinned version."""
    pins: dict[str, str] = json.loads((PARSER_DIR / "package.json").read_text())["dependencies"]
    for name, version in pins.items():
        manifest = PARSER_DIR / "node_modules" / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


@pytest.fixture(scope="module")
def mermaid_parser() -> MermaidParser:
    """Mermaid's parser, installed into tests/mermaid/node_modules with npm ci if missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("the Mermaid tests need Node.js and npm on PATH (node>=20.19, npm>=10)",
                    pytrace=False)
    if not _installed():
        try:
            run = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PARSER_DIR,
                                 text=True, capture_output=True, timeout=NPM_CI_TIMEOUT,
                                 check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {PARSER_DIR} took over {NPM_CI_TIMEOUT} s", pytrace=False)
        if run.returncode != 0 or not _installed():
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.fail(f"npm ci in {PARSER_DIR} failed (exit {run.returncode}): {last}",
                        pytrace=False)
    return MermaidParser(node)


@pytest.fixture(scope="module")
def registry() -> DefinitionRegistry:
    """The registered definitions, as the orchestrator loads them."""
    return definitions(OrchestratorSettings(common=CommonSettings()))


def _failures(names: Sequence[str], verdicts: Sequence[Parsed]) -> dict[str, str | None]:
    return {name: v.error for name, v in zip(names, verdicts, strict=True) if not v.ok}


@INSTALL_TIMEOUT
def test_every_registered_definition_parses(mermaid_parser: MermaidParser,
                                            registry: DefinitionRegistry) -> None:
    """The flowchart of every registered definition version is valid Mermaid."""
    found = registry.all()
    assert {d.name for d in found} >= {"order", "transfer", "transaction"}
    names = [f"{d.name} v{d.version}" for d in found]
    verdicts = mermaid_parser.parse([flowchart(d) for d in found])
    assert _failures(names, verdicts) == {}
    assert {v.diagram_type for v in verdicts} == {"flowchart-v2"}


@INSTALL_TIMEOUT
def test_order_flowchart_coloured_by_state_parses(mermaid_parser: MermaidParser,
                                                  registry: DefinitionRegistry) -> None:
    """The console's coloured flowchart (classDef and class lines) is valid Mermaid."""
    states = {  # an order that failed at hold_funds, while it is being undone
        ("create_order", Operation.FORWARD): "succeeded",
        ("reserve_stock", Operation.FORWARD): "succeeded",
        ("hold_funds", Operation.FORWARD): "failed",
        ("schedule_shipment", Operation.FORWARD): "abandoned",
        ("reserve_stock", Operation.COMPENSATE): "waiting",
        ("create_order", Operation.COMPENSATE): "backoff",
        ("notify_rejection", Operation.FORWARD): "pending",
    }
    assert set(states.values()) == set(CLASSES)  # every class definition is exercised
    text = flowchart(registry.latest("order"), states)
    assert "  class hold_funds failed" in text
    assert "  class reserve_stock__compensate waiting" in text
    verdicts = mermaid_parser.parse([text])
    assert _failures(["order, coloured"], verdicts) == {}


@INSTALL_TIMEOUT
def test_broken_flowcharts_are_reported_as_parse_errors(mermaid_parser: MermaidParser,
                                                        registry: DefinitionRegistry) -> None:
    """The same check rejects broken text, so a passing check means something."""
    good = flowchart(registry.latest("order"))
    unclosed = good.replace('"create_order<br/><small>order.create</small>"]',
                            '"create_order<br/><small>order.create</small>"', 1)
    assert unclosed != good
    bad_arrow = "flowchart LR\n  a -- > b\n"
    dangling = "flowchart LR\n  a --> b -->\n"
    verdicts = mermaid_parser.parse([good, unclosed, bad_arrow, dangling])
    assert [v.ok for v in verdicts] == [True, False, False, False]
    for verdict in verdicts[1:]:
        assert verdict.error is not None
        assert verdict.error.startswith("Parse error on line"), verdict.error


def test_cli_prints_the_generated_flowchart(registry: DefinitionRegistry) -> None:
    """``sagactl definitions show order --mermaid`` prints exactly ``flowchart(order)``."""
    # The in-process registry uses default settings; keep SAGA_* (say SAGA_DEFINITIONS) out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    run = subprocess.run([sys.executable, "-m", "sagactl", "definitions", "show", "order",
                          "--mermaid"], cwd=ROOT, env=env, text=True, capture_output=True,
                         timeout=60, check=False)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == flowchart(registry.latest("order"))
    assert run.stdout.startswith("flowchart LR\n")
