"""The wire contract: message models, envelope codec and topology names.

Imports nothing from the orchestrator or the workers; both depend on it.
"""
