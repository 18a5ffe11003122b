"""Shop configuration records, the values of the compacted ``shop-config`` topic.

Message key: ``<kind>:<shop_id>:<id>``; the latest record per key is the current
state, and a null value (tombstone) deletes it. Secrets never travel here.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, Field, field_validator, model_validator

from schemas.common import Currency, Email, Identifier, Name, Outgoing

ORDER_COUNT_ACTIONS = ("email", "credit", "alert")


class ShopProfile(Outgoing):
    """A shop's display settings."""

    kind: Literal["shop"] = "shop"
    shop_id: Identifier
    name: Name
    time_zone: str = Field("UTC", description="IANA time zone of dates shown to customers, e.g. America/Chicago.")
    due_soon_days: int = Field(3, ge=1, le=60, description="Days before the due date of the due-soon reminder.")
    updated_at: AwareDatetime

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like America/Chicago)") from None
        return value


class EmailTemplate(Outgoing):
    """An admin-written email template (jinja2, rendered in the sandbox)."""

    kind: Literal["email_template"] = "email_template"
    shop_id: Identifier
    key: Identifier
    subject: Annotated[str, Field(min_length=1, max_length=300)]
    body: Annotated[str, Field(min_length=1, max_length=65536)]
    updated_at: AwareDatetime


class OrderCountRule(Outgoing):
    """An Order Count Event: when a customer reaches ``orders`` paid orders, do ``action``.

    Fires only for payments that occurred at or after ``effective_at`` (the last
    time it was created or switched on): never retroactive.
    """

    kind: Literal["order_count_rule"] = "order_count_rule"
    shop_id: Identifier
    rule_id: Identifier
    name: Name
    orders: int = Field(ge=1, le=1_000_000)
    action: Literal["email", "credit", "alert"]
    template_key: Identifier | None = None
    amount_cents: int | None = Field(None, ge=1, le=100_000_000)
    currency: Currency = "USD"
    enabled: bool = True
    effective_at: AwareDatetime
    updated_at: AwareDatetime

    @model_validator(mode="after")
    def _action_fields(self) -> Self:
        if self.action == "email" and self.template_key is None:
            raise ValueError("an email rule needs template_key")
        if self.action == "credit" and self.amount_cents is None:
            raise ValueError("a credit rule needs amount_cents")
        if self.action != "email" and self.template_key is not None:
            raise ValueError(f"template_key is only for email rules, not {self.action}")
        if self.action != "credit" and self.amount_cents is not None:
            raise ValueError(f"amount_cents is only for credit rules, not {self.action}")
        return self


class CatalogToggle(Outgoing):
    """A shop's on/off state of one catalog rule; without one the rule's default applies.

    A rule switched on fires for events that occurred at or after ``updated_at``: never retroactive.
    """

    kind: Literal["catalog_toggle"] = "catalog_toggle"
    shop_id: Identifier
    rule: Identifier = Field(description="The catalog rule's key, e.g. order_received_email.")
    enabled: bool
    updated_at: AwareDatetime


class CatalogTemplate(Outgoing):
    """A shop's wording of one catalog rule: the parts it overrides (the others stay default).

    Validated when saved by rendering it in the sandbox with the rule's variables; a
    tombstone of its key resets the rule to the default wording.
    """

    kind: Literal["catalog_template"] = "catalog_template"
    shop_id: Identifier
    rule: Identifier
    parts: dict[
        Literal["subject", "body.html", "body.txt", "text", "title"],
        Annotated[str, Field(min_length=1, max_length=65536)],
    ] = Field(min_length=1)
    updated_at: AwareDatetime


class ShopAdmin(Outgoing):
    """One admin of a shop: "notify all admins" makes one notification for each."""

    kind: Literal["admin"] = "admin"
    shop_id: Identifier
    admin_id: Identifier
    name: Name
    email: Email
    updated_at: AwareDatetime


class SmsConnection(Outgoing):
    """The shop has connected Twilio. Only the fact travels here: the credentials are
    sealed in PostgreSQL (``sms_credentials``) and never leave it."""

    kind: Literal["sms_connection"] = "sms_connection"
    shop_id: Identifier
    sender_hint: Annotated[str, Field(max_length=40)] = Field(
        description="The sender, masked for display (e.g. +1555•••4567)."
    )
    updated_at: AwareDatetime


class StripeConnection(Outgoing):
    """The shop has connected Stripe. Only the fact travels here: the secret key is sealed in
    PostgreSQL (``stripe_credentials``) and never leaves it."""

    kind: Literal["stripe_connection"] = "stripe_connection"
    shop_id: Identifier
    account_hint: Annotated[str, Field(max_length=80)] = Field(description="The account, for display.")
    updated_at: AwareDatetime


Record = (
    ShopProfile
    | EmailTemplate
    | OrderCountRule
    | CatalogToggle
    | CatalogTemplate
    | ShopAdmin
    | SmsConnection
    | StripeConnection
)
ConfigRecord = Annotated[Record, Field(discriminator="kind")]


def config_key(record: Record) -> str:
    """The compaction key of a configuration record: ``<kind>:<shop_id>:<id>``."""
    if isinstance(record, ShopProfile | SmsConnection | StripeConnection):
        return f"{record.kind}:{record.shop_id}:{record.shop_id}"
    if isinstance(record, EmailTemplate):
        return f"email_template:{record.shop_id}:{record.key}"
    if isinstance(record, OrderCountRule):
        return f"order_count_rule:{record.shop_id}:{record.rule_id}"
    if isinstance(record, CatalogToggle | CatalogTemplate):
        return f"{record.kind}:{record.shop_id}:{record.rule}"
    return f"admin:{record.shop_id}:{record.admin_id}"
