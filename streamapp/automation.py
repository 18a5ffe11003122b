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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from annotated_types import MaxLen
from pydantic import BaseModel

from schemas.actions import (
    Action,
    AlertEffect,
    EmailEffect,
    Lineage,
    NotificationEffect,
    PaymentLinkEffect,
    SmsEffect,
    ToastEffect,
)
from schemas.config import CatalogTemplate, CatalogToggle
from schemas.events import (
    ArtworkDeclined,
    ArtworkResubmitted,
    CatalogEvent,
    InvoicePaid,
    InvoiceSent,
    JobEvent,
    JobStatusChanged,
    LeadCreated,
    OrderSubmitted,
    ReorderRequested,
    TrackingAdded,
    same_status,
)
from streamapp.catalog import BY_KEY, PARTS, RULES, CatalogRule, sample_variables
from streamapp.invoices import local_day
from streamapp.order_count import format_money
from streamapp.shop_config import ConfigStore
from streamapp.templating import TemplateError, render, render_text

#: Namespace of catalog action ids; changing it changes every id, so never do.
CATALOG_NAMESPACE = uuid.UUID("2b7c0f4e-9d1a-4c55-8e0b-5a6f3d2c1e97")
#: Parts rendered as HTML; every other part is plain text.
HTML_PARTS = frozenset({"body.html"})
#: Parts that are one line (whitespace collapsed).
ONE_LINE_PARTS = frozenset({"subject", "title"})
#: Longest SMS text: Twilio's limit for one message (it is split into segments).
MAX_SMS_CHARS = 1600


def _max_length(model: type[BaseModel], name: str) -> int:
    return next(item.max_length for item in model.model_fields[name].metadata if isinstance(item, MaxLen))


#: Longest title and text of a dashboard message (the action's contract). A longer rendering
#: is cut, ending in an ellipsis: a lead's 4000-character message must not cost the admins
#: their notification; the event keeps the whole text.
PART_LIMITS = {
    (channel, part): _max_length(model, part)
    for channel, model in (("notification", NotificationEffect), ("toast", ToastEffect))
    for part in ("title", "text")
}

Skip = Literal["off", "not_yet_on", "twilio_not_connected", "no_phone", "stripe_not_connected", "nothing_due"]
#: Stands for the Stripe Checkout link when a payment-link email is validated before the
#: session exists (the sink renders the real one).
LINK_PLACEHOLDER = "https://checkout.stripe.com/c/pay/cs_pending"


@dataclass(frozen=True)
class CatalogShop:
    """What the catalog needs of one shop's configuration."""

    shop_id: str
    shop_name: str
    time_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    toggles: Mapping[str, CatalogToggle] = field(default_factory=dict)
    templates: Mapping[str, CatalogTemplate] = field(default_factory=dict)
    admin_ids: tuple[str, ...] = ()
    sms_connected: bool = False
    stripe_connected: bool = False


def shop_view(store: ConfigStore, shop_id: str) -> CatalogShop:
    """``shop_id``'s catalog configuration as the store has it now."""
    profile = store.profile(shop_id)
    return CatalogShop(
        shop_id=shop_id,
        shop_name=profile.name if profile else shop_id,
        time_zone=ZoneInfo(profile.time_zone if profile else "UTC"),
        toggles=store.catalog_toggles(shop_id),
        templates=store.catalog_templates(shop_id),
        admin_ids=tuple(admin.admin_id for admin in store.admins(shop_id)),
        sms_connected=store.sms_connection(shop_id) is not None,
        stripe_connected=store.stripe_connection(shop_id) is not None,
    )


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


# -- variables ---------------------------------------------------------------------------------
def long_date(day: date) -> str:
    return f"{day:%B} {day.day}, {day.year}"


def _order_submitted(event: OrderSubmitted, shop: CatalogShop) -> dict[str, str]:
    return {
        "portal_link": event.portal_url,
        "order_number": event.order_number,
        "order_total": format_money(event.total_cents, event.currency),
    }


def _reorder_requested(event: ReorderRequested, shop: CatalogShop) -> dict[str, str]:
    return {"notes": event.notes}


def _lead_created(event: LeadCreated, shop: CatalogShop) -> dict[str, str]:
    lead = event.lead
    return {
        "lead_name": lead.name,
        "lead_email": lead.email or "",
        "lead_phone": lead.phone or "",
        "lead_source": event.source,
        "lead_message": lead.message,
    }


def _status_changed(event: JobStatusChanged, shop: CatalogShop) -> dict[str, str]:
    values = {"portal_link": event.portal_url, "from_status": event.from_status or "", "to_status": event.to_status}
    if event.review_url is not None:
        values["review_link"] = event.review_url
    if event.invoice is not None:
        values |= {"invoice_number": event.invoice.invoice_number, "invoice_link": event.invoice.invoice_url}
    return values


def _artwork_declined(event: ArtworkDeclined, shop: CatalogShop) -> dict[str, str]:
    return {"decline_reason": event.reason}


def _artwork_resubmitted(event: ArtworkResubmitted, shop: CatalogShop) -> dict[str, str]:
    return {"review_link": event.review_url}


def _tracking_added(event: TrackingAdded, shop: CatalogShop) -> dict[str, str]:
    return {
        "portal_link": event.portal_url,
        "carrier": event.carrier,
        "tracking_numbers": ", ".join(event.tracking_numbers),
    }


def _invoice_sent(event: InvoiceSent, shop: CatalogShop) -> dict[str, str]:
    invoice = event.invoice
    return {
        "invoice_number": invoice.invoice_number,
        "invoice_link": invoice.invoice_url,
        "total_due": format_money(invoice.total_due_cents, invoice.currency),
        "due_date": long_date(invoice.due_date) if invoice.due_date else "upon receipt",
    }


def _invoice_paid(event: InvoicePaid, shop: CatalogShop) -> dict[str, str]:
    invoice = event.invoice
    return {
        "invoice_number": invoice.invoice_number,
        "invoice_link": invoice.invoice_url,
        "amount_paid": format_money(event.amount_paid_cents, invoice.currency),
        "paid_on": long_date(local_day(event.occurred_at, shop.time_zone)),
    }


#: Event type -> the variables only it provides.
_SPECIFIC: dict[type[Any], Callable[[Any, CatalogShop], dict[str, str]]] = {
    OrderSubmitted: _order_submitted,
    ReorderRequested: _reorder_requested,
    LeadCreated: _lead_created,
    JobStatusChanged: _status_changed,
    ArtworkDeclined: _artwork_declined,
    ArtworkResubmitted: _artwork_resubmitted,
    TrackingAdded: _tracking_added,
    InvoiceSent: _invoice_sent,
    InvoicePaid: _invoice_paid,
}


def event_variables(event: CatalogEvent, shop: CatalogShop) -> dict[str, str]:
    """Every template variable ``event`` provides (each rule takes the ones it declares)."""
    values: dict[str, str] = {"shop_name": shop.shop_name}
    if not isinstance(event, LeadCreated):
        values |= {"customer_name": event.customer.name, "customer_email": event.customer.email}
    if isinstance(event, JobEvent | ReorderRequested):
        values |= {"job_number": event.job.job_number, "job_name": event.job.job_name}
    return values | _SPECIFIC[type(event)](event, shop)


def rule_variables(rule: CatalogRule, available: Mapping[str, str]) -> dict[str, str]:
    """The variables ``rule`` declares, from what the event provides (a KeyError names a missing one)."""
    return {variable.name: available[variable.name] for variable in rule.trigger.variables}


# -- wording -----------------------------------------------------------------------------------
@cache
def default_source(rule_key: str, part: str) -> str:
    """The catalog's default template of one part (read once per process)."""
    return BY_KEY[rule_key].template_path(part).read_text(encoding="utf-8")


def sources(rule: CatalogRule, override: CatalogTemplate | None) -> dict[str, str]:
    """The template of each part of ``rule``: the shop's wording where it has one, else the default."""
    parts: dict[str, str] = {str(k): v for k, v in override.parts.items()} if override is not None else {}
    return {part: parts.get(part) or default_source(rule.key, part) for part in PARTS[rule.channel]}


def render_parts(rule: CatalogRule, templates: Mapping[str, str], variables: Mapping[str, str]) -> dict[str, str]:
    """Render every part of ``rule`` in the sandbox; TemplateError names ``<rule>/<part>`` and the line."""
    rendered: dict[str, str] = {}
    for part, source in templates.items():
        name = f"{rule.key}/{part}"
        text = render(source, variables, name=name) if part in HTML_PARTS else render_text(source, variables, name=name)
        if part in ONE_LINE_PARTS:
            text = " ".join(text.split())
            if not text:
                raise TemplateError(f"{name}: renders empty; it needs some text")
        elif rule.channel == "sms":
            text = text.strip()
            if not text:
                raise TemplateError(f"{name}: renders empty; it needs some text")
            if len(text) > MAX_SMS_CHARS:
                raise TemplateError(f"{name}: renders {len(text)} characters; an SMS holds at most {MAX_SMS_CHARS}")
        limit = PART_LIMITS.get((rule.channel, part))
        if limit is not None and len(text) > limit:
            text = text[: limit - 1] + "\u2026"
        rendered[part] = text
    return rendered


def validate_override(rule: CatalogRule, parts: Mapping[str, str]) -> None:
    """Refuse wording that would not render: unknown part or variable, syntax, sandbox, size.

    Renders every part with the rule's sample variables (and only those), so a
    template can use exactly the variables the catalogue lists for the rule.
    """
    allowed = PARTS[rule.channel]
    unknown = sorted(set(parts) - set(allowed))
    if unknown:
        raise TemplateError(
            f"{rule.key} ({rule.channel}) has no part {', '.join(unknown)}; its parts are {', '.join(allowed)}"
        )
    merged = {part: parts.get(part) or default_source(rule.key, part) for part in allowed}
    render_parts(rule, merged, sample_variables(rule))


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
) -> EmailEffect | SmsEffect | NotificationEffect | ToastEffect:
    if rule.channel == "email":
        if recipient.email is None:
            raise ValueError(f"{rule.key}: the event has no email address to send to")
        return EmailEffect(
            to=recipient.email,
            to_name=recipient.name,
            template_key=rule.key,
            subject=parts["subject"],
            text_body=parts["body.txt"],
            html_body=parts["body.html"],
        )
    if rule.channel == "sms":
        if recipient.phone is None:
            raise ValueError(f"{rule.key}: the event has no phone number to text")
        return SmsEffect(to=recipient.phone, template_key=rule.key, text=parts["text"])
    if rule.channel == "notification":
        return NotificationEffect(
            admin_ids=list(shop.admin_ids), template_key=rule.key, title=parts["title"], text=parts["text"]
        )
    return ToastEffect(
        template_key=rule.key,
        title=parts["title"],
        text=parts["text"],
        expires_at=_later(origin.occurred_at, toast_ttl),
    )


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
    effect: EmailEffect | SmsEffect | NotificationEffect | ToastEffect | PaymentLinkEffect
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
