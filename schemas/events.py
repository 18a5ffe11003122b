"""Events that upstream services produce to the ``payments`` topic.

Message key: ``<shop_id>:<customer_id>`` (UTF-8). streamapp re-keys every event by
the ids in its value, so a wrong or missing key costs an extra hop, never correctness.
Value: one JSON object, discriminated by ``type``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.common import Currency, Email, Identifier, Incoming, Name


class Customer(Incoming):
    """The customer an event is about, as the shop knows them at that moment."""

    customer_id: Identifier
    name: Name
    email: Email
    phone: Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$")] | None = Field(None, description="E.164")


class EventBase(Incoming):
    """Fields every event carries."""

    event_id: Identifier = Field(description="Unique per event; a redelivery carries the same id.")
    shop_id: Identifier
    occurred_at: AwareDatetime = Field(description="When it happened at the source (RFC 3339 with offset).")


class PaymentBase(EventBase):
    """Fields every payment event carries."""

    customer: Customer
    order_id: Identifier
    payment_id: Identifier
    amount_cents: int = Field(ge=0)
    currency: Currency = "USD"


class PaymentSucceeded(PaymentBase):
    """A payment for an order was captured. Counts towards the customer's order count once per order."""

    type: Literal["payment.succeeded"]


class PaymentFailed(PaymentBase):
    """A payment attempt failed. Recorded for completeness; it never counts."""

    type: Literal["payment.failed"]
    reason: Annotated[str, Field(max_length=500)] = ""


PaymentsEvent = Annotated[PaymentSucceeded | PaymentFailed, Field(discriminator="type")]
