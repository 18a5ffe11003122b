"""Wording of the catalog's messages: the variables an event provides, the templates of a rule, rendering.

Pure. Every part renders in the sandbox (:mod:`streamapp.templating`); a shop's wording is
validated when saved with the rule's sample variables, and rendered again on each real event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from functools import cache
from typing import Any

from annotated_types import MaxLen
from pydantic import BaseModel

from schemas.actions import (
    NotificationEffect,
    ToastEffect,
)
from schemas.config import CatalogTemplate
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
)
from streamapp.rules.catalog import BY_KEY, PARTS, CatalogRule, sample_variables
from streamapp.rules.config_store import CatalogShop
from streamapp.rules.invoice_schedule import local_day
from streamapp.rules.money import format_money
from streamapp.templating import TemplateError, render, render_text

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


#: Stands for the Stripe Checkout link when a payment-link email is validated before the
#: session exists (the sink renders the real one).
LINK_PLACEHOLDER = "https://checkout.stripe.com/c/pay/cs_pending"


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
