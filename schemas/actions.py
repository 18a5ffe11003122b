"""Actions: the effects the rule engine decided, the values of the ``actions`` topic.

Message key: ``action_id``. The id is deterministic (an order-count rule: same rule,
customer and crossing; a catalog rule: same rule and event), and every sink is
idempotent on it. Messages are rendered when decided: what the topic carries is
exactly what the sink sends.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, ClassVar, Literal, Self, get_args

from pydantic import AwareDatetime, Field

from schemas.common import Currency, Email, Identifier, Name, Outgoing, Phone


class Lineage(Outgoing):
    """Where the action came from."""

    event_id: Identifier
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


@dataclass(frozen=True)
class Addressing:
    """Where a catalog rule's message goes, as the event and the shop say: each effect takes what it needs."""

    #: The customer's (or the lead's) name, email address and phone number, when the event has them.
    name: str
    email: str | None
    phone: str | None
    #: The shop's admins when it was decided.
    admin_ids: tuple[str, ...]
    #: When a short-lived message (a toast) stops showing.
    expires_at: datetime


class RenderedEffect(Outgoing):
    """An effect a catalog rule renders from its templates: one ``<part>.j2`` per name in :attr:`PARTS`."""

    #: The template parts, in the order they are listed, shown and rendered.
    PARTS: ClassVar[tuple[str, ...]]

    @classmethod
    @abc.abstractmethod
    def from_parts(cls, template_key: str, parts: Mapping[str, str], to: Addressing) -> Self:
        """The effect of rule ``template_key`` from its rendered ``parts``; a ValueError if ``to``
        lacks the address it needs (an email without an email address)."""


class EmailEffect(RenderedEffect):
    """Send one email, already rendered."""

    channel: Literal["email"] = "email"
    to: Email
    to_name: Name
    template_key: Identifier
    subject: str
    text_body: str
    html_body: str | None = None

    PARTS: ClassVar[tuple[str, ...]] = ("subject", "body.html", "body.txt")

    @classmethod
    def from_parts(cls, template_key: str, parts: Mapping[str, str], to: Addressing) -> Self:
        if to.email is None:
            raise ValueError(f"{template_key}: the event has no email address to send to")
        return cls(
            to=to.email,
            to_name=to.name,
            template_key=template_key,
            subject=parts["subject"],
            text_body=parts["body.txt"],
            html_body=parts["body.html"],
        )


class SmsEffect(RenderedEffect):
    """Send one text message through the shop's Twilio account, already rendered."""

    channel: Literal["sms"] = "sms"
    to: Phone
    template_key: Identifier
    text: Annotated[str, Field(min_length=1, max_length=1600)]

    PARTS: ClassVar[tuple[str, ...]] = ("text",)

    @classmethod
    def from_parts(cls, template_key: str, parts: Mapping[str, str], to: Addressing) -> Self:
        if to.phone is None:
            raise ValueError(f"{template_key}: the event has no phone number to text")
        return cls(to=to.phone, template_key=template_key, text=parts["text"])


class NotificationEffect(RenderedEffect):
    """Notify the shop's admins: one notification per admin (none configured: one for the shop)."""

    channel: Literal["notification"] = "notification"
    admin_ids: list[Identifier] = Field(description="The shop's admins when it was decided.")
    template_key: Identifier
    title: Annotated[str, Field(min_length=1, max_length=300)]
    text: Annotated[str, Field(max_length=4000)]

    PARTS: ClassVar[tuple[str, ...]] = ("title", "text")

    @classmethod
    def from_parts(cls, template_key: str, parts: Mapping[str, str], to: Addressing) -> Self:
        return cls(admin_ids=list(to.admin_ids), template_key=template_key, title=parts["title"], text=parts["text"])


class ToastEffect(RenderedEffect):
    """A short-lived notification shown to whoever is looking at the shop's dashboard."""

    channel: Literal["toast"] = "toast"
    template_key: Identifier
    title: Annotated[str, Field(min_length=1, max_length=300)]
    text: Annotated[str, Field(max_length=1000)]
    expires_at: AwareDatetime

    PARTS: ClassVar[tuple[str, ...]] = ("title", "text")

    @classmethod
    def from_parts(cls, template_key: str, parts: Mapping[str, str], to: Addressing) -> Self:
        return cls(template_key=template_key, title=parts["title"], text=parts["text"], expires_at=to.expires_at)


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


def _rendered_by_channel() -> dict[str, type[RenderedEffect]]:
    members, _discriminator = get_args(Effect)
    return {
        kind.model_fields["channel"].default: kind for kind in get_args(members) if issubclass(kind, RenderedEffect)
    }


#: channel -> the effect catalog rules render on it, in the order of :data:`Effect`: every
#: :class:`RenderedEffect` of the union, so a new channel is its model and its place in the union.
RENDERED: Mapping[str, type[RenderedEffect]] = _rendered_by_channel()


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
