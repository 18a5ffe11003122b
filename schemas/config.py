"""Shop configuration records, the values of the compacted ``shop-config`` topic.

Message key: ``<kind>:<shop_id>:<id>``; the latest record per key is the current
state, and a null value (tombstone) deletes it. Secrets never travel here.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, Field, model_validator

from schemas.common import Currency, Identifier, Name, Outgoing

ORDER_COUNT_ACTIONS = ("email", "credit", "alert")


class ShopProfile(Outgoing):
    """A shop's display settings."""

    kind: Literal["shop"] = "shop"
    shop_id: Identifier
    name: Name
    updated_at: AwareDatetime


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


ConfigRecord = Annotated[ShopProfile | EmailTemplate | OrderCountRule, Field(discriminator="kind")]


def config_key(record: ShopProfile | EmailTemplate | OrderCountRule) -> str:
    """The compaction key of a configuration record."""
    if isinstance(record, ShopProfile):
        return f"shop:{record.shop_id}:{record.shop_id}"
    if isinstance(record, EmailTemplate):
        return f"email_template:{record.shop_id}:{record.key}"
    return f"order_count_rule:{record.shop_id}:{record.rule_id}"
