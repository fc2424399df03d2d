"""The shipped sagas (order, transfer, ad-hoc transaction), every registered version of each.

They are plug-ins written against the definition API (engine.definition) and
registered through the ``saga_orchestrator.definitions`` entry points, exactly as a team's own sagas
are: the orchestrator never imports them by name.
"""
