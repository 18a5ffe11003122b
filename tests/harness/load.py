"""The order-count load of the crash and shutdown tests: credits at 1..5 orders, an email at 3,
an alert at 5, and six orders per customer with redeliveries and second payments mixed in."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.config import OrderCountRule
from tests.harness.pipeline import Pipeline

ORDERS = 6
CREDIT_AT = {1: 100, 2: 200, 3: 300, 4: 400, 5: 500}  # count -> cents


@dataclass(frozen=True)
class CountRules:
    """The rules :func:`publish_count_rules` published: a credit per count, the email and the alert."""

    credits: dict[int, OrderCountRule]
    email: OrderCountRule
    alert: OrderCountRule


def publish_count_rules(line: Pipeline, shop: str) -> CountRules:
    """A credit rule per entry of CREDIT_AT, an email at 3 orders (template ``three``) and an alert at 5."""
    line.add_template(shop, "three", "Three orders!", "<p>Thanks {{ customer_name }}</p>")
    credits = {
        count: line.add_rule(shop, f"Credit at {count}", count, "credit", amount_cents=cents)
        for count, cents in CREDIT_AT.items()
    }
    email = line.add_rule(shop, "Email at 3", 3, "email", template_key="three")
    alert = line.add_rule(shop, "Alert at 5", 5, "alert")
    return CountRules(credits, email, alert)


def payment(shop: str, customer: str, order: int, event_id: str) -> tuple[bytes, bytes]:
    """A keyed ``payment.succeeded`` record of ``customer``'s order number ``order``."""
    value = {
        "type": "payment.succeeded",
        "event_id": event_id,
        "shop_id": shop,
        "occurred_at": datetime.now(UTC).isoformat(),
        "customer": {"customer_id": customer, "name": f"Customer {customer}", "email": f"{customer}@example.com"},
        "order_id": f"{customer}-o{order}",
        "payment_id": uuid.uuid4().hex[:12],
        "amount_cents": 1000,
    }
    return f"{shop}:{customer}".encode(), json.dumps(value).encode()


def payments(shop: str, customers: list[str]) -> list[tuple[bytes, bytes]]:
    """ORDERS orders per customer; every second one redelivered and paid a second time (new event id).

    The redelivery is keyed by the customer id alone, not ``<shop_id>:<customer_id>``: it takes the
    re-key hop while its first copy is counted where it arrives, so one order reaches the table
    from both of its source topics."""
    records: list[tuple[bytes, bytes]] = []
    for order in range(1, ORDERS + 1):
        for customer in customers:
            event_id = f"{customer}-e{order}"
            records.append(payment(shop, customer, order, event_id))
            if order % 2 == 0:  # a redelivery and a second payment of the same order
                _, value = payment(shop, customer, order, event_id)
                records.append((customer.encode(), value))
                records.append(payment(shop, customer, order, f"{event_id}-again"))
    return records
