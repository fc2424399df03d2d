"""Parameters of the notification participant, which every shipped saga uses."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from contracts.envelope import Model

Reference = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class Notify(Model):
    """notification.send: tell someone how a saga ended, once per (reference, kind)."""

    reference: Reference  # the business key the message is about (an order id, a transfer id)
    recipient: Reference
    kind: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z_]+$")]
    text: str = Field(max_length=500)
