"""Who may do what: reads from this host are open, everything else needs the token.

The console listens on loopback by default, where anyone who can connect can already read
the database. A read from another address, and every action from anywhere, must carry
``Authorization: Bearer <SAGA_CONSOLE_TOKEN>``; without a token configured they are
always refused. The pages and their assets hold no data and are served to anyone: the
data comes from the API.
"""

from __future__ import annotations

import hmac
import ipaddress

READ_METHODS = frozenset({"GET", "HEAD"})


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (and IPv4 mapped into IPv6)."""
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def allowed(method: str, client: str | None, authorization: str | None,
            token: str | None) -> bool:
    """May this API request go through?"""
    if method in READ_METHODS and is_loopback(client):
        return True
    given = bearer(authorization)
    return token is not None and given is not None and hmac.compare_digest(
        given.encode(), token.encode())
