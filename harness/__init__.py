"""Running the system on this machine: the MongoDB stand-in, processes, the demo and the
chaos run. Installed with the ``local`` extra (``pip install 'saga-orchestrator[local]'``)."""
