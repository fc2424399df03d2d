"""``python -m orchestrator``: run the orchestrator process."""

from __future__ import annotations

import os
import sys

from infra import logs
from infra.process import run_process
from infra.settings import SettingsError
from orchestrator.app import OrchestratorProcess
from orchestrator.manifests import ManifestError
from orchestrator.registry import RegistrationError
from orchestrator.settings import orchestrator_from_env
from workers.catalog import UnknownParticipant


def main() -> int:
    """Read settings, run until signalled."""
    try:
        settings = orchestrator_from_env(os.environ)
    except SettingsError as e:
        print(f"orchestrator: {e}", file=sys.stderr)
        return 2
    logs.configure("orchestrator", settings.common.log_level)
    try:
        process = OrchestratorProcess(settings)
    except (RegistrationError, ManifestError, UnknownParticipant, SettingsError) as e:
        print(f"orchestrator: {e}", file=sys.stderr)
        return 2
    run_process(settings.common, process.start, process.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
