"""A least-privilege vhost per test module, removed afterwards even when a test fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security.broker import SecureVhost, provisioned


@pytest.fixture(scope="module")
def broker(amqp_url: str) -> Iterator[SecureVhost]:
    """The generated definitions imported into a fresh vhost, with fresh users and passwords."""
    try:
        with provisioned(amqp_url) as vhost:
            yield vhost
    except RuntimeError as e:
        if "not found" in str(e):
            pytest.fail(str(e))
        raise
