"""What the product registers, for tests that declare topology or start the system."""

from __future__ import annotations

from catalog.plan import shipped

PLAN = shipped().plan()
