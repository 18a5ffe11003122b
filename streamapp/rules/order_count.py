"""Order Count Events: the pure decision (payment + customer state + rules -> actions).

No Kafka here: the agent feeds events in and sends the actions out.

State per customer is O(1) in the customer's history, as table values under two kinds of key
(both on the customer's partition, since the table's partition is its input's):

- ``<shop_id>:<customer_id>`` -> ``{"count": n}``: the customer's distinct paid orders;
- ``<shop_id>:<customer_id>/<order_id>`` -> ``{"event_id": e, "count": n}``: the order's marker,
  the event that counted it and the count it reached.

Counting an order writes its marker, then the count (:class:`Counted` lists the writes in that
order; one changelog partition keeps them in that order). The marker is what makes redelivery
safe:

- the same order paid again (another event): not counted, no action;
- the *same event* delivered again (a crash after the state was saved but before the actions
  were sent): its actions are decided again, with the same action ids, and the sinks drop
  whatever had already been done. Nothing is lost, nothing doubles. If the crash came between
  the two writes (the marker saved, the count not), the count is repaired from the marker.

The first format kept every order in the customer's one value (``{"count": n, "orders":
{order_id: [event_id, n]}}``), rewritten on every payment: quadratic in a customer's history, and
over Kafka's 1 MiB message limit near 30,000 orders. Such a value is migrated when its customer is
next touched: its orders become markers and the value a count.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.actions import Action, AlertEffect, CreditEffect, EmailEffect, Lineage
from schemas.config import EmailTemplate, OrderCountRule
from schemas.events import PaymentSucceeded
from streamapp.rules.money import format_money
from streamapp.templating import TemplateError, render_email

#: Namespace of action ids; changing it changes every id, so never do.
ACTION_NAMESPACE = uuid.UUID("6f1c2a58-4d0e-4f0b-9a43-3c1d8e2b7a10")


@dataclass(frozen=True)
class ShopView:
    """What the decision needs to know of a shop's configuration."""

    shop_name: str
    rules: Sequence[OrderCountRule]
    templates: Mapping[str, EmailTemplate]


@dataclass(frozen=True)
class Counted:
    """The outcome of applying one payment to a customer's state."""

    #: Table writes, in the order they must be made (a marker before the count it raises).
    writes: list[tuple[str, dict[str, Any]]]
    #: The count this event reached (new or re-delivered), or None if it did not count.
    count: int | None


def customer_key(shop_id: str, customer_id: str) -> str:
    """Table and message key of a customer: ``<shop_id>:<customer_id>``."""
    return f"{shop_id}:{customer_id}"


def order_key(customer: str, order_id: str) -> str:
    """Table key of the marker of ``order_id`` under customer key ``customer`` (``/`` is in no id)."""
    return f"{customer}/{order_id}"


def apply_payment(stored: Callable[[str], Mapping[str, Any] | None], event: PaymentSucceeded) -> Counted:
    """Count ``event``'s order once per customer, remembering which event counted it.

    ``stored(key)`` reads the table. Reads one value and one marker, writes at most one of each
    (a first-format value is migrated: every order it held becomes a marker, once).
    """
    key = customer_key(event.shop_id, event.customer.customer_id)
    writes: list[tuple[str, dict[str, Any]]] = []
    state = stored(key)
    count = int(state["count"]) if state else 0
    markers: dict[str, Mapping[str, Any]] = {}
    if state and "orders" in state:
        for order_id, (counted_by, reached) in state["orders"].items():
            markers[order_key(key, order_id)] = {"event_id": counted_by, "count": int(reached)}
        writes.extend((marker, dict(value)) for marker, value in markers.items())
        writes.append((key, {"count": count}))
    marker_key = order_key(key, event.order_id)
    marker = markers[marker_key] if marker_key in markers else stored(marker_key)
    if marker is not None:
        if marker["event_id"] != event.event_id:
            return Counted(writes=writes, count=None)
        reached = int(marker["count"])
        if reached > count:  # the count's write was lost after its marker's: repair it
            writes.append((key, {"count": reached}))
        return Counted(writes=writes, count=reached)
    count += 1
    writes.append((marker_key, {"event_id": event.event_id, "count": count}))
    writes.append((key, {"count": count}))
    return Counted(writes=writes, count=count)


def action_id(shop_id: str, rule_id: str, customer_id: str, orders: int) -> str:
    """Deterministic id of one rule firing for one customer at one count."""
    return str(uuid.uuid5(ACTION_NAMESPACE, f"order_count/{shop_id}/{rule_id}/{customer_id}/{orders}"))


def firing_rules(shop: ShopView, event: PaymentSucceeded, count: int) -> list[OrderCountRule]:
    """Enabled rules whose threshold this count reaches, effective when the payment occurred."""
    return sorted(
        (
            rule
            for rule in shop.rules
            if rule.enabled and rule.orders == count and event.occurred_at >= rule.effective_at
        ),
        key=lambda rule: rule.rule_id,
    )


def template_variables(
    shop: ShopView, event: PaymentSucceeded, count: int, rule: OrderCountRule, credit_cents: int
) -> dict[str, Any]:
    """The variables an order-count email template may use."""
    return {
        "shop_name": shop.shop_name,
        "customer_name": event.customer.name,
        "customer_email": event.customer.email,
        "customer_id": event.customer.customer_id,
        "order_count": count,
        "order_id": event.order_id,
        "rule_name": rule.name,
        # Credits that fire at the same count, so one email can say "we put $20 on your account".
        "credit_amount": format_money(credit_cents, rule.currency) if credit_cents else "",
        "credit_amount_cents": credit_cents,
    }


#: Variables of order-count email templates, with sample values for validation and preview.
SAMPLE_VARIABLES: dict[str, Any] = {
    "shop_name": "Acme Print Co.",
    "customer_name": "Ann Lee",
    "customer_email": "ann@example.com",
    "customer_id": "cust-42",
    "order_count": 10,
    "order_id": "order-1042",
    "rule_name": "Thank-you after 10 orders",
    "credit_amount": "$20.00",
    "credit_amount_cents": 2000,
}


def decide(event: PaymentSucceeded, count: int, shop: ShopView, lineage: Lineage) -> list[Action]:
    """The actions of every rule that fires when ``event`` brings its customer to ``count`` orders."""
    rules = firing_rules(shop, event, count)
    credit_cents = sum(rule.amount_cents or 0 for rule in rules if rule.action == "credit")
    actions: list[Action] = []
    for rule in rules:
        effect: EmailEffect | CreditEffect | AlertEffect
        if rule.action == "credit":
            effect = CreditEffect(
                amount_cents=rule.amount_cents or 0,
                currency=rule.currency,
                reason=f"{rule.name} ({count} orders)",
            )
        elif rule.action == "alert":
            effect = AlertEffect(
                text=f"{event.customer.name} ({event.customer.customer_id}) reached {count} orders: {rule.name}"
            )
        else:
            effect = _email_effect(shop, event, count, rule, credit_cents)
        actions.append(
            Action(
                action_id=action_id(event.shop_id, rule.rule_id, event.customer.customer_id, count),
                shop_id=event.shop_id,
                customer_id=event.customer.customer_id,
                rule_id=rule.rule_id,
                rule_name=rule.name,
                trigger="order_count",
                order_count=count,
                occurred_at=event.occurred_at,
                effect=effect,
                lineage=lineage,
            )
        )
    return actions


def _email_effect(
    shop: ShopView, event: PaymentSucceeded, count: int, rule: OrderCountRule, credit_cents: int
) -> EmailEffect | AlertEffect:
    # A rule whose template is gone or broken must not vanish silently: the shop's
    # dashboard gets an alert in the email's place (same action id, one effect per firing).
    template = shop.templates.get(rule.template_key or "")
    if template is None:
        return AlertEffect(
            text=f'Order count event "{rule.name}" could not email {event.customer.name}: '
            f'email template "{rule.template_key}" does not exist'
        )
    try:
        email = render_email(
            template.subject, template.body, template_variables(shop, event, count, rule, credit_cents)
        )
    except TemplateError as exc:
        return AlertEffect(text=f'Order count event "{rule.name}" could not email {event.customer.name}: {exc}')
    return EmailEffect(
        to=event.customer.email,
        to_name=event.customer.name,
        template_key=template.key,
        subject=email.subject,
        text_body=email.text_body,
        html_body=email.html_body,
    )
