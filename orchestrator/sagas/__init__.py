"""The saga definitions this orchestrator can run, every registered version of each."""
