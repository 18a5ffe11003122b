"""The demo of ``streamapp run --demo``: a shop, its Order Count Events and a day of payments.

It writes the shop's configuration to ``shop-config``, produces payments (one of
them a redelivery, one malformed), waits (bounded) until the effects are in
PostgreSQL and the mailbox, and returns a summary of where to look.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from schemas.config import EmailTemplate, OrderCountRule, ShopProfile
from streamapp.errors import RetryableError
from streamapp.order_count import format_money
from streamapp.settings import Settings
from streamapp.shop_config import publish
from streamapp.topics import PAYMENTS, topic_name

SHOP = "demo-print-shop"
#: customer -> number of distinct paid orders in the demo stream
CUSTOMERS = {"ann": 7, "ben": 5, "cat": 3, "dan": 1}
EXPECTED = {"credits": 2, "alerts": 1, "emails": 5}  # what the rules below make of CUSTOMERS


async def seed(settings: Settings) -> None:
    """The demo shop: a name, two email templates, four Order Count Events."""
    now = datetime.now(UTC)
    await publish(settings, ShopProfile(shop_id=SHOP, name="Demo Print Co.", updated_at=now))
    await publish(
        settings,
        EmailTemplate(
            shop_id=SHOP,
            key="survey",
            subject="How are we doing, {{ customer_name }}?",
            body="<p>Hi {{ customer_name }},</p><p>you have placed {{ order_count }} orders with {{ shop_name }}. "
            "Would you tell us how we are doing?</p>",
            updated_at=now,
        ),
    )
    await publish(
        settings,
        EmailTemplate(
            shop_id=SHOP,
            key="thanks-credit",
            subject="Thanks for your business, {{ customer_name }}!",
            body="<p>{{ order_count }} orders! We put {{ credit_amount }} on your account.</p>",
            updated_at=now,
        ),
    )
    rules = [
        ("Survey after 3 orders", 3, "email", {"template_key": "survey"}),
        ("$20 credit at 5 orders", 5, "credit", {"amount_cents": 2000}),
        ("Thank-you at 5 orders", 5, "email", {"template_key": "thanks-credit"}),
        ("Personal thank-you at 7 orders", 7, "alert", {}),
    ]
    for name, orders, action, extra in rules:
        await publish(
            settings,
            OrderCountRule(
                shop_id=SHOP,
                rule_id=f"demo-{orders}-{action}",
                name=name,
                orders=orders,
                action=action,  # type: ignore[arg-type]
                effective_at=now,
                updated_at=now,
                **extra,
            ),
        )


def _payment(customer: str, order: int, event_id: str) -> tuple[bytes, bytes]:
    value = {
        "type": "payment.succeeded",
        "event_id": event_id,
        "shop_id": SHOP,
        "occurred_at": datetime.now(UTC).isoformat(),
        "customer": {"customer_id": customer, "name": customer.title(), "email": f"{customer}@example.com"},
        "order_id": f"{customer}-{order}",
        "payment_id": uuid.uuid4().hex[:12],
        "amount_cents": 4999,
    }
    return f"{SHOP}:{customer}".encode(), json.dumps(value).encode()


async def play(settings: Settings) -> int:
    """Produce the day's payments; returns how many messages were sent."""
    run = uuid.uuid4().hex[:6]
    records = [_payment(c, n, f"{run}-{c}-{n}") for c, count in CUSTOMERS.items() for n in range(1, count + 1)]
    records.append(records[0])  # a redelivery: must not count twice
    records.append((b"demo", b'{"type": "payment.succeeded", "oops"'))  # malformed: goes to dead-letters
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic_name(settings, PAYMENTS), key=key, value=value)
    finally:
        await producer.stop()
    return len(records)


async def effects(database_url: str) -> dict[str, int]:
    """How many credits, alerts and sent emails the demo shop has."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM ledger_entries WHERE shop_id = $1) AS credits,"
            " (SELECT count(*) FROM alerts WHERE shop_id = $1) AS alerts,"
            " (SELECT count(*) FROM deliveries WHERE shop_id = $1 AND status = 'sent') AS emails",
            SHOP,
        )
        return {key: int(row[key]) for key in ("credits", "alerts", "emails")}
    finally:
        await conn.close()


async def wait_for_effects(database_url: str, timeout: float = 90.0) -> dict[str, int]:
    """Poll until the demo's effects are all there; RetryableError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    seen = await effects(database_url)
    while any(seen[key] < want for key, want in EXPECTED.items()):
        if time.monotonic() > deadline:
            raise RetryableError(f"demo effects incomplete after {timeout:.0f}s: {seen}, expected {EXPECTED}")
        await asyncio.sleep(0.5)
        seen = await effects(database_url)
    return seen


async def balances(database_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT customer_id, sum(amount_cents) AS cents FROM ledger_entries "
            "WHERE shop_id = $1 GROUP BY customer_id ORDER BY customer_id",
            SHOP,
        )
        return {row["customer_id"]: format_money(int(row["cents"]), "USD") for row in rows}
    finally:
        await conn.close()
