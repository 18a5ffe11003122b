"""Shared field types and the base models of the wire contracts."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

#: A shop, customer, order, rule or template identifier: 1-64 visible ASCII characters, no ':'
#: (':' separates the parts of message keys).
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@+\-]{1,64}$")]
#: A free-text name shown to people.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
#: An email address; deliberately loose (the SMTP server is the final judge).
Email = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}$")]
#: A phone number in E.164 form, e.g. ``+15551234567``.
Phone = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")]
#: ISO 4217 currency code.
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class Incoming(BaseModel):
    """Base of events that upstream services produce: unknown fields are ignored (forward compatible)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Outgoing(BaseModel):
    """Base of records streamapp produces: exact, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
