"""Every participant service this package provides, by name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from workers import inventory, notification, order, payment, shipping
from workers.runtime import ServiceSpec

SERVICES: Mapping[str, ServiceSpec] = MappingProxyType({
    spec.name: spec
    for spec in (order.SPEC, inventory.SPEC, payment.SPEC, shipping.SPEC, notification.SPEC)
})
