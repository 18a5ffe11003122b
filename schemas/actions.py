"""Actions: the effects the rule engine decided, the values of the ``actions`` topic.

Message key: ``action_id``. The id is deterministic (an order-count rule: same rule,
customer and crossing; a catalog rule: same rule and event), and every sink is
idempotent on it. Messages are rendered when decided: what the topic carries is
exactly what the sink sends.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.common import Currency, Email, Identifier, Name, Outgoing, Phone


class Lineage(Outgoing):
    """Where the action came from."""

    event_id: Identifier
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class EmailEffect(Outgoing):
    """Send one email, already rendered."""

    channel: Literal["email"] = "email"
    to: Email
    to_name: Name
    template_key: Identifier
    subject: str
    text_body: str
    html_body: str | None = None


class SmsEffect(Outgoing):
    """Send one text message through the shop's Twilio account, already rendered."""

    channel: Literal["sms"] = "sms"
    to: Phone
    template_key: Identifier
    text: Annotated[str, Field(min_length=1, max_length=1600)]


class NotificationEffect(Outgoing):
    """Notify the shop's admins: one notification per admin (none configured: one for the shop)."""

    channel: Literal["notification"] = "notification"
    admin_ids: list[Identifier] = Field(description="The shop's admins when it was decided.")
    template_key: Identifier
    title: Annotated[str, Field(min_length=1, max_length=300)]
    text: Annotated[str, Field(max_length=4000)]


class ToastEffect(Outgoing):
    """A short-lived notification shown to whoever is looking at the shop's dashboard."""

    channel: Literal["toast"] = "toast"
    template_key: Identifier
    title: Annotated[str, Field(min_length=1, max_length=300)]
    text: Annotated[str, Field(max_length=1000)]
    expires_at: AwareDatetime


class PaymentLinkEffect(Outgoing):
    """Email the customer a Stripe Checkout link for an invoice.

    The link exists only once Stripe has created the session, so the sink renders the
    email: the effect carries the chosen templates and every variable but ``payment_link``.
    """

    channel: Literal["payment_link"] = "payment_link"
    to: Email
    to_name: Name
    template_key: Identifier
    amount_cents: int = Field(ge=1)
    currency: Currency
    description: Annotated[str, Field(min_length=1, max_length=500)]
    success_url: Annotated[str, Field(max_length=2048)]
    cancel_url: Annotated[str, Field(max_length=2048)]
    templates: dict[str, str] = Field(description="part -> template source (subject, body.html, body.txt).")
    variables: dict[str, str] = Field(description="Every template variable except payment_link.")


class CreditEffect(Outgoing):
    """Put money on the customer's account (an append-only ledger entry)."""

    channel: Literal["credit"] = "credit"
    amount_cents: int = Field(ge=1)
    currency: Currency
    reason: str


class AlertEffect(Outgoing):
    """Show an alert on the shop's dashboard."""

    channel: Literal["alert"] = "alert"
    text: str


Effect = Annotated[
    EmailEffect | SmsEffect | NotificationEffect | ToastEffect | PaymentLinkEffect | CreditEffect | AlertEffect,
    Field(discriminator="channel"),
]


class Action(Outgoing):
    """One effect, with its identity and lineage."""

    schema_version: Literal[1] = 1
    action_id: Identifier
    shop_id: Identifier
    customer_id: Identifier | None = Field(description="null when the event has no customer (a new lead).")
    rule_id: Identifier = Field(description="An order-count rule's id, or a catalog rule's key.")
    rule_name: Name
    trigger: Identifier = Field(description='"order_count", or the catalog trigger, e.g. "job.status_changed".')
    order_count: int | None = Field(None, ge=1, description="The count reached; order-count rules only.")
    occurred_at: AwareDatetime = Field(description="occurred_at of the event that caused it.")
    effect: Effect
    lineage: Lineage
