"""The print-shop automation catalog at work: an event + a shop's configuration -> actions.

Pure: no Kafka, no database. The agents feed events in and send the actions out;
``streamapp preview`` calls the same :func:`build_action`, so a preview is exactly
what the sink would get.

For each event, every catalog rule whose trigger matches (its event type and, for
status rules, the status the job moved to) is judged on its own: a job moving to
"In Production" fires ``production_started_email`` and, when the shop switched them
on, ``status_change_email`` and ``status_update_sms``, each its own action with its
own deterministic ``action_id`` (rule + event), so a redelivered event decides the
same ids and the sinks drop what was already done.

A rule fires when it is on for the shop (the shop's toggle, else the default),
was switched on before the event occurred (never retroactive), and what it needs is
there: a connected Twilio account and the customer's phone for SMS.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from schemas.actions import (
    RENDERED,
    Action,
    Addressing,
    AlertEffect,
    Lineage,
    PaymentLinkEffect,
    RenderedEffect,
)
from schemas.events import (
    CatalogEvent,
    InvoiceSent,
    JobStatusChanged,
    LeadCreated,
    same_status,
)
from streamapp.rules.catalog import RULES, CatalogRule, sample_variables
from streamapp.rules.config_store import CatalogShop
from streamapp.rules.wording import LINK_PLACEHOLDER, event_variables, render_parts, rule_variables, sources
from streamapp.templating import TemplateError

#: Namespace of catalog action ids; changing it changes every id, so never do.
CATALOG_NAMESPACE = uuid.UUID("2b7c0f4e-9d1a-4c55-8e0b-5a6f3d2c1e97")

Skip = Literal["off", "not_yet_on", "twilio_not_connected", "no_phone", "stripe_not_connected", "nothing_due"]


@dataclass(frozen=True)
class RuleState:
    """A rule's effective state for one shop."""

    enabled: bool
    #: When the shop switched it on (it fires for events from then on); None: on by default.
    since: datetime | None
    #: Whether the shop set the state (else it is the catalog's default).
    toggled: bool
    #: Whether the shop rewrote any of its wording.
    customised: bool


def rule_state(rule: CatalogRule, shop: CatalogShop) -> RuleState:
    toggle = shop.toggles.get(rule.key)
    customised = rule.key in shop.templates
    if toggle is None:
        return RuleState(enabled=rule.on_by_default, since=None, toggled=False, customised=customised)
    return RuleState(
        enabled=toggle.enabled, since=toggle.updated_at if toggle.enabled else None, toggled=True, customised=customised
    )


def matching_rules(event: CatalogEvent) -> list[CatalogRule]:
    """The catalog rules whose trigger is this event, in catalog order."""
    to_status = event.to_status if isinstance(event, JobStatusChanged) else None
    return [
        rule
        for rule in RULES
        if rule.trigger.key == event.type
        and (rule.trigger.to_status is None or same_status(to_status, rule.trigger.to_status))
    ]


def action_id(shop_id: str, rule_key: str, event_id: str) -> str:
    """Deterministic id of one catalog rule firing for one event."""
    return str(uuid.uuid5(CATALOG_NAMESPACE, f"catalog/{shop_id}/{rule_key}/{event_id}"))


# -- actions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipient:
    """Who a customer message goes to."""

    customer_id: str | None
    name: str
    email: str | None
    phone: str | None


def recipient_of(event: CatalogEvent) -> Recipient:
    if isinstance(event, LeadCreated):
        return Recipient(None, event.lead.name, event.lead.email, event.lead.phone)
    customer = event.customer
    return Recipient(customer.customer_id, customer.name, customer.email, customer.phone)


@dataclass(frozen=True)
class Origin:
    """The event an action comes from."""

    event_id: str
    occurred_at: datetime
    lineage: Lineage


@dataclass(frozen=True)
class Payment:
    """What a payment link asks for: the amount due, its currency, and the invoice."""

    amount_cents: int
    currency: str
    description: str
    invoice_link: str


def _effect(
    rule: CatalogRule,
    parts: Mapping[str, str],
    shop: CatalogShop,
    recipient: Recipient,
    origin: Origin,
    *,
    toast_ttl: int,
) -> RenderedEffect:
    to = Addressing(
        name=recipient.name,
        email=recipient.email,
        phone=recipient.phone,
        admin_ids=shop.admin_ids,
        expires_at=_later(origin.occurred_at, toast_ttl),
    )
    return RENDERED[rule.channel].from_parts(rule.key, parts, to)


def _later(moment: datetime, seconds: int) -> datetime:
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:  # an event of 9999-12-31: its toast shows until the calendar ends
        return datetime.max.replace(tzinfo=UTC)


def build_action(
    rule: CatalogRule,
    shop: CatalogShop,
    variables: Mapping[str, str],
    recipient: Recipient,
    origin: Origin,
    *,
    toast_ttl: int,
    payment: Payment | None = None,
) -> Action:
    """The action of ``rule`` firing: its wording rendered with ``variables``.

    A payment-link rule (``payment``) is rendered here with a placeholder link, to refuse
    wording that cannot render, and again by the sink once Stripe has made the link.
    Raises TemplateError if the shop's wording does not render (see :func:`decide`).
    """
    templates = sources(rule, shop.templates.get(rule.key))
    parts = render_parts(rule, templates, {**variables, "payment_link": LINK_PLACEHOLDER} if payment else variables)
    effect: RenderedEffect | PaymentLinkEffect
    if payment is not None:
        if recipient.email is None:
            raise ValueError(f"{rule.key}: the event has no email address to send to")
        effect = PaymentLinkEffect(
            to=recipient.email,
            to_name=recipient.name,
            template_key=rule.key,
            amount_cents=payment.amount_cents,
            currency=payment.currency,
            description=payment.description,
            success_url=payment.invoice_link,
            cancel_url=payment.invoice_link,
            templates=templates,
            variables={name: value for name, value in variables.items() if name != "payment_link"},
        )
    else:
        effect = _effect(rule, parts, shop, recipient, origin, toast_ttl=toast_ttl)
    return Action(
        action_id=action_id(shop.shop_id, rule.key, origin.event_id),
        shop_id=shop.shop_id,
        customer_id=recipient.customer_id,
        rule_id=rule.key,
        rule_name=rule.description,
        trigger=rule.trigger.key,
        occurred_at=origin.occurred_at,
        effect=effect,
        lineage=origin.lineage,
    )


@dataclass(frozen=True)
class Decision:
    """What one event decided: the actions, and each matching rule that did not fire, with why."""

    actions: list[Action]
    skipped: list[tuple[str, Skip]]


def skip_reason(rule: CatalogRule, shop: CatalogShop, event: CatalogEvent) -> Skip | None:
    """Why ``rule`` does not fire for ``event`` at ``shop``; None if it fires."""
    state = rule_state(rule, shop)
    if not state.enabled:
        return "off"
    if state.since is not None and event.occurred_at < state.since:
        return "not_yet_on"
    return _missing(rule, shop, event)


def _missing(rule: CatalogRule, shop: CatalogShop, event: CatalogEvent) -> Skip | None:
    """What a rule that is on still lacks to fire: its integration, or its recipient or amount."""
    if rule.trigger.needs == "stripe":
        if not shop.stripe_connected:
            return "stripe_not_connected"
        if isinstance(event, InvoiceSent) and event.invoice.total_due_cents == 0:
            return "nothing_due"
    if rule.channel == "sms":
        if not shop.sms_connected:
            return "twilio_not_connected"
        if recipient_of(event).phone is None:
            return "no_phone"
    return None


def decide(event: CatalogEvent, shop: CatalogShop, lineage: Lineage, *, toast_ttl: int) -> Decision:
    """The actions of every catalog rule that ``event`` fires at ``shop``.

    Wording that was valid when saved but fails on this event's data (an output over
    the size limit, say) must not silence the rule: the message goes out in the default
    wording, and the shop's dashboard gets an alert naming the problem. When the default
    wording fails too (the event's own data is over the limit: a valid ``job.tracking_added``
    can carry a megabyte of tracking numbers), the rule sends nothing for this event and the
    alert says so; the event's other rules still fire. Never raises TemplateError.
    """
    available = event_variables(event, shop)
    recipient = recipient_of(event)
    origin = Origin(event.event_id, event.occurred_at, lineage)
    actions: list[Action] = []
    skipped: list[tuple[str, Skip]] = []
    for rule in matching_rules(event):
        reason = skip_reason(rule, shop, event)
        if reason is not None:
            skipped.append((rule.key, reason))
            continue
        payment = payment_of(event) if rule.trigger.needs == "stripe" else None
        variables = rule_variables(rule, {**available, "payment_link": LINK_PLACEHOLDER} if payment else available)
        build = functools.partial(
            build_action, recipient=recipient, origin=origin, toast_ttl=toast_ttl, payment=payment
        )
        try:
            actions.append(build(rule, shop, variables))
        except TemplateError as exc:
            try:
                actions.append(build(rule, replace(shop, templates={}), variables))
            except TemplateError as default_failed:
                text = f"{rule.key}: not sent for event {event.event_id}, even the default wording did not render"
                actions.append(_template_alert(rule, shop, recipient, origin, f"{text}: {default_failed}"))
            else:
                text = f"{rule.key}: your wording did not render, the default was sent instead: {exc}"
                actions.append(_template_alert(rule, shop, recipient, origin, text))
    return Decision(actions, skipped)


def payment_of(event: CatalogEvent) -> Payment | None:
    if not isinstance(event, InvoiceSent):
        return None
    invoice = event.invoice
    return Payment(invoice.total_due_cents, invoice.currency, f"Invoice {invoice.invoice_number}", invoice.invoice_url)


def _template_alert(rule: CatalogRule, shop: CatalogShop, recipient: Recipient, origin: Origin, text: str) -> Action:
    return Action(
        action_id=action_id(shop.shop_id, f"{rule.key}.template-error", origin.event_id),
        shop_id=shop.shop_id,
        customer_id=recipient.customer_id,
        rule_id=rule.key,
        rule_name=rule.description,
        trigger=rule.trigger.key,
        occurred_at=origin.occurred_at,
        effect=AlertEffect(text=text),
        lineage=origin.lineage,
    )


def sample_recipient(rule: CatalogRule) -> Recipient:
    """The recipient of a preview from sample data (the catalogue's example customer)."""
    examples = sample_variables(rule)
    return Recipient(
        customer_id="sample-customer",
        name=examples.get("customer_name", examples.get("lead_name", "Sample Customer")),
        email=examples.get("customer_email", examples.get("lead_email", "customer@example.com")),
        phone="+15551234567",
    )


def rules_by_state(shop: CatalogShop, rules: Sequence[CatalogRule] = RULES) -> list[tuple[CatalogRule, RuleState]]:
    """Every rule with its effective state at ``shop``, in catalog order."""
    return [(rule, rule_state(rule, shop)) for rule in rules]
