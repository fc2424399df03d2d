"""The web console: a JSON API and pages to find, watch and steer sagas (docs/console.md).

It reads the orchestrator's saga store and never writes it: cancel, retry and resolve go
to the orchestrator as admin actions (contracts.admin), decided by the engine like any
other event.
"""
