"""The consistency auditor: pure checks over a snapshot of every store, and the adapters
that load the snapshot (``sagactl audit`` prints it)."""
