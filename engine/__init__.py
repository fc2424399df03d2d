"""The pure saga engine: definitions as data, the state of one saga, and the function that
decides what happens next.

Nothing here performs I/O or reads a clock; the orchestrator (``orchestrator/``) persists
and publishes what the engine decides, and saga definitions (``sagas/``) are written
against this package alone.
"""
