"""``python -m catalog``: write every file derived from what is registered.

The broker's definitions, Prometheus's scrape targets, the MongoDB application user, and
the participants' manifests. Tests regenerate each and fail when the committed file
differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from catalog import asyncapi, deploy, rabbitmq
from catalog.plan import Platform
from contracts.topology import MAX_PARTITIONS
from infra.settings import partition_count

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "manifests"


def generated(platform: Platform, partitions: int = 0) -> dict[Path, str]:
    """Every generated file and its content (the broker's definitions with the queues of
    ``partitions`` orchestrator partitions)."""
    files: dict[Path, Callable[[], str]] = {
        ROOT / "deploy" / "rabbitmq" / "definitions.json":
            lambda: rabbitmq.render(rabbitmq.definitions(plan=platform.plan(partitions))),
        ROOT / "deploy" / "prometheus" / "prometheus.yml": lambda: deploy.prometheus_config(platform),
        ROOT / "deploy" / "mongo" / "create-app-user.sh": lambda: deploy.mongo_app_user(platform),
        ROOT / "docs" / "asyncapi.yaml": lambda: asyncapi.render(asyncapi.document(platform)),
    }
    out = {path: make() for path, make in files.items()}
    for name, manifest in platform.manifests().items():
        out[MANIFESTS / f"{name}.json"] = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    """Write every generated file (and remove manifests of participants no longer shipped)."""
    parser = argparse.ArgumentParser(prog="python -m catalog", description=__doc__)
    parser.add_argument("--partitions", type=partition_count, default=0, metavar="P",
                        help="declare the queues of P orchestrator partitions in the broker's "
                             f"definitions, as SAGA_PARTITIONS=P needs (0 to {MAX_PARTITIONS}; "
                             "default 0)")
    args = parser.parse_args(argv)
    files = generated(Platform.load(), args.partitions)
    MANIFESTS.mkdir(parents=True, exist_ok=True)
    for stale in set(MANIFESTS.glob("*.json")) - files.keys():
        stale.unlink()
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
