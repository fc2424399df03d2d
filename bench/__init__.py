"""Performance benchmark: a raw aio-pika baseline against the product, on one machine.

``python -m bench`` runs three systems in one go (the baseline, the product on in-memory
stores, the product on the MongoDB stand-in) and prints one table; see ``bench/RESULTS.md``.
"""
