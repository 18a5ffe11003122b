"""The demo of ``streamapp run --demo``: a print shop's day.

It writes the shop's configuration to ``shop-config`` (name, time zone, two admins,
four Order Count Events, two SMS rules switched on), connects the shop's Twilio
account (the local Twilio API contract that ``run --demo`` starts), produces the
day's events (an order, a lead, art approval declined and re-sent, production,
completion, shipping with tracking, an invoice sent and paid, a reorder) and its
payments (one of them a redelivery, one malformed), waits (bounded) until the
effects are in PostgreSQL, the mailbox and Twilio, and returns where to look.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import click
from aiokafka import AIOKafkaProducer

from schemas.config import CatalogToggle, EmailTemplate, OrderCountRule, ShopAdmin, ShopProfile, SmsConnection
from streamapp.cli import common
from streamapp.connections import twilio_account
from streamapp.embedded.mailbox import EmbeddedMailbox
from streamapp.errors import RetryableError
from streamapp.rules.money import format_money
from streamapp.settings import Settings
from streamapp.shop_config import publish
from streamapp.topics import JOB_STATUS, ORDERS, PAYMENTS, TopicSpec, topic_name

SHOP = "demo-print-shop"
#: customer -> number of distinct paid orders in the demo stream
CUSTOMERS = {"ann": 7, "ben": 5, "cat": 3, "dan": 1}
#: What the demo makes: Order Count Events of CUSTOMERS (2 credits, 1 alert, 5 emails), and the
#: print-shop day's catalog rules (8 emails, 2 SMS, 3 notifications for each of 2 admins, 3 toasts).
#: And an invoice sent 40 days ago, due 10 days ago: its "invoice sent" email, then, at the
#: first tick of the clock, its overdue reminder (2 more emails).
EXPECTED = {"credits": 2, "alerts": 1, "emails": 15, "sms": 2, "notifications": 6, "toasts": 3}
#: How often the demo worker's clock ticks (seconds): the overdue reminder comes at the first tick.
TICK_SECONDS = 5.0
ADMINS = {"maria": "Maria Lopez", "sam": "Sam Okafor"}
SMS_RULES = ("job_complete_sms", "tracking_shipped_sms")
#: The demo shop's Twilio account: test values, only ever sent to the local Twilio API contract.
TWILIO = twilio_account.TwilioCredentials(
    account_sid="AC" + "0123456789abcdef" * 2, auth_token="0" * 32, sender="+15005550006"
)
PHONE = "+15551234567"


async def seed(settings: Settings) -> None:
    """The demo shop: a name, two email templates, four Order Count Events."""
    now = datetime.now(UTC)
    await publish(
        settings, ShopProfile(shop_id=SHOP, name="Demo Print Co.", time_zone="America/Chicago", updated_at=now)
    )
    for admin_id, name in ADMINS.items():
        email = f"{admin_id}@demo-print.example"
        await publish(settings, ShopAdmin(shop_id=SHOP, admin_id=admin_id, name=name, email=email, updated_at=now))
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


async def connect_twilio(settings: Settings, database_url: str) -> None:
    """Connect the demo shop's Twilio account, as `streamapp twilio connect` does, and switch on its SMS rules."""
    await twilio_account.verify_credentials(settings, TWILIO)
    conn = await asyncpg.connect(database_url)
    try:
        await twilio_account.save_credentials(conn, settings, SHOP, TWILIO)
    finally:
        await conn.close()
    now = datetime.now(UTC)
    await publish(settings, SmsConnection(shop_id=SHOP, sender_hint="+1500•••0006", updated_at=now))
    for rule in SMS_RULES:
        await publish(settings, CatalogToggle(shop_id=SHOP, rule=rule, enabled=True, updated_at=now))


def _customer(customer_id: str, *, phone: str | None = None) -> dict[str, str]:
    customer = {"customer_id": customer_id, "name": customer_id.title(), "email": f"{customer_id}@example.com"}
    return customer | ({"phone": phone} if phone else {})


def print_shop_day(run: str) -> list[tuple[TopicSpec, dict[str, Any]]]:
    """The day's events, in order, for ``ann`` (who has a phone) and a new lead."""
    ann = _customer("ann", phone=PHONE)
    job = {"job_id": "j-1042", "job_number": "J-1042", "job_name": "500 business cards"}
    portal = "https://demo-print.example/portal/ann"
    invoice = {
        "invoice_id": "inv-2031",
        "invoice_number": "INV-2031",
        "invoice_url": "https://demo-print.example/invoices/INV-2031",
        "total_due_cents": 42000,
        "due_date": (datetime.now(UTC).date() + timedelta(days=30)).isoformat(),
    }
    art = "https://demo-print.example/art/J-1042"
    overdue = {
        "invoice_id": "inv-1990",
        "invoice_number": "INV-1990",
        "invoice_url": "https://demo-print.example/invoices/INV-1990",
        "total_due_cents": 18500,
        "due_date": (datetime.now(UTC).date() - timedelta(days=10)).isoformat(),
    }
    on_job = {"customer": ann, "job": job}
    day: list[tuple[TopicSpec, dict[str, Any]]] = [
        (ORDERS, {"type": "order.submitted", "customer": ann, "order_id": "o-5531", "order_number": "O-5531",
                  "total_cents": 42000, "portal_url": portal}),
        (ORDERS, {"type": "lead.created", "source": "website",
                  "lead": {"lead_id": "lead-9", "name": "Bo Chen", "email": "bo@example.com",
                           "message": "Quote for 200 T-shirts?"}}),
        (JOB_STATUS, {"type": "job.status_changed", **on_job, "from_status": "Order Received",
                      "to_status": "Art Approval Sent", "portal_url": portal, "review_url": art}),
        (JOB_STATUS, {"type": "artwork.declined", **on_job, "reason": "Please make the logo bigger"}),
        (JOB_STATUS, {"type": "artwork.resubmitted", **on_job, "review_url": art}),
        (JOB_STATUS, {"type": "job.status_changed", **on_job, "from_status": "Art Approval Sent",
                      "to_status": "In Production", "portal_url": portal}),
        (JOB_STATUS, {"type": "job.status_changed", **on_job, "from_status": "In Production",
                      "to_status": "Completed Order", "portal_url": portal,
                      "invoice": {"invoice_number": "INV-2031", "invoice_url": invoice["invoice_url"]}}),
        (JOB_STATUS, {"type": "job.tracking_added", **on_job, "carrier": "UPS",
                      "tracking_numbers": ["1Z999AA10123456784"], "portal_url": portal}),
        (PAYMENTS, {"type": "invoice.sent", "customer": ann, "invoice": invoice}),
        (PAYMENTS, {"type": "invoice.paid", "customer": ann, "invoice": invoice, "amount_paid_cents": 42000}),
        (PAYMENTS, {"type": "invoice.sent", "customer": _customer("ben"), "invoice": overdue}),
        (ORDERS, {"type": "reorder.requested", "customer": _customer("ben"), "job": job,
                  "notes": "Same as last time, 1000 this time"}),
    ]  # fmt: skip
    for number, (_, event) in enumerate(day):
        event |= {"event_id": f"{run}-day-{number}", "shop_id": SHOP, "occurred_at": datetime.now(UTC).isoformat()}
    return day


async def play(settings: Settings) -> dict[str, int]:
    """Produce the day's events and payments; returns how many messages went to each topic."""
    run = uuid.uuid4().hex[:6]
    records: list[tuple[TopicSpec, bytes, bytes]] = []
    for spec, event in print_shop_day(run):
        who = event["customer"]["customer_id"] if "customer" in event else event["lead"]["lead_id"]
        records.append((spec, f"{SHOP}:{who}".encode(), json.dumps(event).encode()))
    payments = [_payment(c, n, f"{run}-{c}-{n}") for c, count in CUSTOMERS.items() for n in range(1, count + 1)]
    payments.append(payments[0])  # a redelivery: must not count twice
    payments.append((b"demo", b'{"type": "payment.succeeded", "oops"'))  # malformed: goes to dead-letters
    records += [(PAYMENTS, key, value) for key, value in payments]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    sent: dict[str, int] = {}
    try:
        for spec, key, value in records:
            await producer.send_and_wait(topic_name(settings, spec), key=key, value=value)
            sent[spec.name] = sent.get(spec.name, 0) + 1
    finally:
        await producer.stop()
    return sent


async def effects(database_url: str) -> dict[str, int]:
    """How many credits, alerts, sent emails and SMS, notifications and toasts the demo shop has."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM ledger_entries WHERE shop_id = $1) AS credits,"
            " (SELECT count(*) FROM alerts WHERE shop_id = $1) AS alerts,"
            " (SELECT count(*) FROM deliveries WHERE shop_id = $1 AND channel = 'email' AND status = 'sent')"
            "   AS emails,"
            " (SELECT count(*) FROM deliveries WHERE shop_id = $1 AND channel = 'sms' AND status = 'sent') AS sms,"
            " (SELECT count(*) FROM notifications WHERE shop_id = $1 AND kind = 'notification') AS notifications,"
            " (SELECT count(*) FROM notifications WHERE shop_id = $1 AND kind = 'toast') AS toasts",
            SHOP,
        )
        return {key: int(row[key]) for key in EXPECTED}
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


def report(settings: Settings, mailbox: EmbeddedMailbox | None) -> None:
    """Play the demo day on a ready worker, wait for its effects and print where to look."""
    database_url = common.require_database(settings)
    asyncio.run(seed(settings))
    asyncio.run(connect_twilio(settings, database_url))
    sent = asyncio.run(play(settings))
    seen = asyncio.run(wait_for_effects(database_url))
    shop = SHOP
    credits = ", ".join(f"{who} {amount}" for who, amount in asyncio.run(balances(database_url)).items())
    where = f"kept in {mailbox.folder}" if mailbox is not None else f"via {settings.smtp_host}:{settings.smtp_port}"
    events = sent.get("orders", 0) + sent.get("job-status", 0)
    click.echo(f"demo        shop {shop}: a print shop's day")
    click.echo(
        f"  events    {events} on orders and job-status, {sent.get('payments', 0)} on payments (order, lead, art"
        " approval declined and re-sent, production, completion, tracking, invoice sent and paid, an overdue"
        " invoice, reorder,"
        " payments: one redelivered, one malformed)"
    )
    click.echo(f"  emails    {seen['emails']} sent, {where}")
    click.echo(f"  sms       {seen['sms']} sent to {PHONE} through Twilio -> streamapp twilio status --shop {shop}")
    per_admin = seen["notifications"] // len(ADMINS)
    click.echo(
        f"  admins    {seen['notifications']} notifications ({per_admin} each for {', '.join(ADMINS)}), "
        f"{seen['toasts']} toasts -> streamapp notifications list --shop {shop} --admin maria"
    )
    click.echo(
        f"  invoices  INV-1990, 10 days overdue: its reminder went out at the first tick of the clock "
        f"-> streamapp invoices upcoming --shop {shop} --days 90"
    )
    click.echo(f"  credits   {credits}   -> streamapp ledger balance --shop {shop} --customer ann")
    click.echo(f"  alerts    {seen['alerts']}   -> streamapp alerts list --shop {shop}")
    click.echo(
        f"  catalog   -> streamapp catalog list --shop {shop}; streamapp preview --shop {shop} --rule job_complete_sms"
    )
    click.echo(f"  rules     -> streamapp rules list --shop {shop}")
    click.echo(f"  rejected  1 malformed payment on topic {settings.topic_prefix}dead-letters")
