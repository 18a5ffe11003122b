"""Actions: the effects the rule engine decided, the values of the ``actions`` topic.

Message key: ``action_id``. The id is deterministic (same rule, customer and
crossing give the same id), and every sink is idempotent on it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.common import Currency, Email, Identifier, Name, Outgoing


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


Effect = Annotated[EmailEffect | CreditEffect | AlertEffect, Field(discriminator="channel")]


class Action(Outgoing):
    """One effect, with its identity and lineage."""

    schema_version: Literal[1] = 1
    action_id: Identifier
    shop_id: Identifier
    customer_id: Identifier
    rule_id: Identifier
    rule_name: Name
    trigger: Literal["order_count"]
    order_count: int = Field(ge=1)
    occurred_at: AwareDatetime = Field(description="occurred_at of the event that caused it.")
    effect: Effect
    lineage: Lineage
