"""The print-shop catalog through the real pipeline: one event per trigger, every message checked.

Real broker, PostgreSQL, SMTP server (aiosmtpd) and Twilio's API contract (Prism,
behind the recording fault proxy). One worker serves the module; each test has its
own shop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from schemas.config import CatalogToggle, ShopAdmin, ShopProfile, SmsConnection, StripeConnection
from streamapp.connections import stripe_account, twilio_account
from streamapp.connections.crypto import generate_key
from streamapp.rules import automation
from tests.harness.pipeline import Pipeline, now, pipeline_settings
from tests.harness.services import InThread, Worker
from tests.harness.settings import settings_env
from tests.harness.smtp import Recorder, smtp_server
from tests.harness.twilio import TwilioFaultProxy
from tests.harness.waits import wait_for

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "fedcba9876543210" * 2
SENDER = "+15005550006"


class Line(Pipeline):
    twilio: TwilioFaultProxy
    smtp: Recorder


@pytest.fixture(scope="module")
def line(
    kafka_bootstrap: str,
    postgres_url: str,
    twilio_api: str,
    stripe_api: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Line]:
    tmp = tmp_path_factory.mktemp("catalog")
    recorder = Recorder()
    with smtp_server(recorder) as smtp_port, InThread(TwilioFaultProxy(twilio_api)) as twilio:
        settings = pipeline_settings(
            "cat",
            kafka_bootstrap,
            postgres_url,
            smtp_port,
            tmp / "state",
            secret_key=SecretStr(generate_key()),
            twilio_api_url=twilio.url,
            stripe_api_url=stripe_api,
            toast_ttl_seconds=86400,
        )
        worker = Worker("streamapp.app", settings_env(settings), tmp / "worker.log")
        try:
            worker.wait_ready()
            pipeline = Line(settings, recorder)
            pipeline.twilio = twilio
            pipeline.workers.append(worker)
            yield pipeline
        finally:
            worker.stop()


def new_shop(line: Line, *, twilio: bool = True, sms_rules: tuple[str, ...] = ()) -> str:
    """A shop named Acme Print Co. with two admins; connected to Twilio unless told otherwise."""
    shop = f"shop-{uuid.uuid4().hex[:8]}"
    moment = now()
    line.publish(ShopProfile(shop_id=shop, name="Acme Print Co.", time_zone="America/Chicago", updated_at=moment))
    for admin in ("maria", "sam"):
        email = f"{admin}@acme.example"
        line.publish(ShopAdmin(shop_id=shop, admin_id=admin, name=admin.title(), email=email, updated_at=moment))
    if twilio:

        async def connect() -> None:
            conn = await asyncpg.connect(line.database_url)
            try:
                await twilio_account.save_credentials(
                    conn, line.settings, shop, twilio_account.TwilioCredentials(ACCOUNT, TOKEN, SENDER)
                )
            finally:
                await conn.close()

        asyncio.run(connect())
        line.publish(SmsConnection(shop_id=shop, sender_hint="+1500•••0006", updated_at=moment))
    for rule in sms_rules:
        line.publish(CatalogToggle(shop_id=shop, rule=rule, enabled=True, updated_at=moment))
    return shop


def example(event_type: str, shop: str, phone: str, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / f"{event_type}.json").read_text())
    raw |= {"shop_id": shop, "event_id": f"{event_type}-{uuid.uuid4().hex[:8]}", "occurred_at": now().isoformat()}
    if "customer" in raw:
        raw["customer"] = {**raw["customer"], "phone": phone}
    return raw | changes


def status(shop: str, phone: str, from_status: str | None, to_status: str, **extra: Any) -> dict[str, Any]:
    return example("job.status_changed", shop, phone, from_status=from_status, to_status=to_status, **extra)


def day(shop: str, phone: str) -> list[dict[str, Any]]:
    """One event for every trigger of the catalog that events fire."""
    invoice = {"invoice_number": "INV-2031", "invoice_url": "https://acme.example/invoices/INV-2031"}
    return [
        example("order.submitted", shop, phone),
        example("reorder.requested", shop, phone),
        example("lead.created", shop, phone),
        status(shop, phone, "Order Received", "Art Approval Sent", review_url="https://acme.example/art/J-1042"),
        example("artwork.declined", shop, phone),
        example("artwork.resubmitted", shop, phone),
        status(shop, phone, "Art Approval Sent", "In Production"),
        status(shop, phone, "In Production", "Completed Order", invoice=invoice),
        example("job.tracking_added", shop, phone),
        example("invoice.sent", shop, phone),
        example("invoice.paid", shop, phone, occurred_at=datetime(2026, 12, 2, 20, 20, tzinfo=UTC).isoformat()),
    ]


def rule_of(event: dict[str, Any]) -> str:
    return f"{event['type']}:{event.get('to_status', '')}"


def wait_rows(line: Line, query: str, shop: str, want: int) -> None:
    wait_for(lambda: line.sql(query, shop)[0][0] >= want, timeout=60, what=f"{want} rows of {query}", interval=0.2)


def messages_to(line: Line, address: str) -> dict[str, EmailMessage]:
    return {str(m["Subject"]): m for m in line.smtp.messages if address in str(m["To"])}


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


#: What the default-on rules of a day say: (rule, event type) -> the one-line part.
DEFAULT_ON = {
    ("order_received_email", "order.submitted"): "We received your order O-5531",
    ("reorder_request_received", "reorder.requested"): "Reorder request for J-1042",
    ("lead_new_notification", "lead.created"): "New lead: Bo Chen",
    ("art_approval_email", "job.status_changed"): "Please review the artwork for 500 business cards (J-1042)",
    ("art_decline_notification", "artwork.declined"): "Artwork declined on J-1042",
    (
        "art_resubmit_email",
        "artwork.resubmitted",
    ): "Updated artwork for 500 business cards (J-1042) is ready for review",
    ("production_started_email", "job.status_changed"): "Your order 500 business cards (J-1042) is in production",
    ("job_complete_email", "job.status_changed"): "Your order 500 business cards (J-1042) is complete",
    ("tracking_shipped_email", "job.tracking_added"): "Your order J-1042 has shipped",
    ("invoice_sent_email", "invoice.sent"): "Invoice INV-2031 from Acme Print Co.",
    ("invoice_paid_email", "invoice.paid"): "Payment received for invoice INV-2031, thank you",
}


def test_one_event_per_trigger_fires_exactly_the_default_on_rules(line: Line) -> None:
    shop = new_shop(line)  # Twilio connected: SMS rules still stay off until switched on
    email = f"{shop}@example.com"
    events = day(shop, "+15550001111")
    for event in events:
        if "customer" in event:
            event["customer"]["email"] = email
    for event in events:
        line.send_event(event)
    line.drain()

    actions = line.actions(shop)
    by_event = {event["event_id"]: event for event in events}
    fired = Counter((a.rule_id, by_event[a.lineage.event_id]["type"]) for a in actions)
    toasts = Counter({("status_change_toast", "job.status_changed"): 3})
    assert fired == Counter(list(DEFAULT_ON)) + toasts, "each default-on rule exactly once, no default-off rule"
    topic_of = {"order": "orders", "reorder": "orders", "lead": "orders", "invoice": "payments"}
    for action in actions:
        assert action.action_id == automation.action_id(shop, action.rule_id, action.lineage.event_id)
        family = by_event[action.lineage.event_id]["type"].split(".")[0]
        assert action.lineage.topic.endswith("." + topic_of.get(family, "job-status"))

    # Emails, through the SMTP server.
    wait_rows(line, "SELECT count(*) FROM deliveries WHERE shop_id = $1 AND status = 'sent'", shop, 8)
    mail = messages_to(line, email)
    subjects = {line_ for (rule, _), line_ in DEFAULT_ON.items() if rule.endswith("_email")}
    assert set(mail) == subjects
    assert "order O-5531 ($129.00)" in text_of(mail["We received your order O-5531"])
    assert "https://acme.example/portal/c-42" in text_of(mail["We received your order O-5531"])
    art = text_of(mail["Please review the artwork for 500 business cards (J-1042)"])
    assert "https://acme.example/art/J-1042" in art
    assert "https://acme.example/invoices/INV-2031" in text_of(
        mail["Your order 500 business cards (J-1042) is complete"]
    )
    shipped = text_of(mail["Your order J-1042 has shipped"])
    assert "UPS" in shipped and "1Z999AA10123456784" in shipped
    sent = text_of(mail["Invoice INV-2031 from Acme Print Co."])
    assert "$420.00" in sent and "December 15, 2026" in sent
    assert "December 2, 2026" in text_of(mail["Payment received for invoice INV-2031, thank you"])  # Chicago time

    # Notifications: one per admin; toasts: one for the shop.
    wait_rows(line, "SELECT count(*) FROM notifications WHERE shop_id = $1", shop, 9)
    rows = line.sql(
        "SELECT kind, admin_id, title, text FROM notifications WHERE shop_id = $1 ORDER BY kind, title, admin_id", shop
    )
    notes = [(r["admin_id"], r["title"], r["text"]) for r in rows if r["kind"] == "notification"]
    assert notes == [
        ("maria", "Artwork declined on J-1042",
         'Ann Lee declined the artwork for 500 business cards (J-1042): "Please make the logo bigger"'),
        ("sam", "Artwork declined on J-1042",
         'Ann Lee declined the artwork for 500 business cards (J-1042): "Please make the logo bigger"'),
        ("maria", "New lead: Bo Chen",
         'New website lead from Bo Chen (bo@example.com, +15557654321): "Quote for 200 T-shirts?"'),
        ("sam", "New lead: Bo Chen",
         'New website lead from Bo Chen (bo@example.com, +15557654321): "Quote for 200 T-shirts?"'),
        ("maria", "Reorder request for J-1042",
         f'Ann Lee ({email}) asked to reorder 500 business cards (J-1042). Notes: "Same as last time, 1000 this time"'),
        ("sam", "Reorder request for J-1042",
         f'Ann Lee ({email}) asked to reorder 500 business cards (J-1042). Notes: "Same as last time, 1000 this time"'),
    ]  # fmt: skip
    toast_rows = sorted((r["admin_id"], r["title"]) for r in rows if r["kind"] == "toast")
    assert toast_rows == [
        (None, "J-1042 moved to Art Approval Sent"),
        (None, "J-1042 moved to Completed Order"),
        (None, "J-1042 moved to In Production"),
    ]
    assert line.twilio.message_creates("+15550001111") == [], "no SMS rule is on by default"


def test_a_shop_with_twilio_texts_its_customers_once_per_action(line: Line) -> None:
    sms_rules = (
        "art_approval_sms",
        "job_complete_sms",
        "tracking_shipped_sms",
        "invoice_sent_sms",
        "status_update_sms",
    )
    shop = new_shop(line, sms_rules=(*sms_rules, "status_change_email"))
    phone = "+15550002222"
    events = day(shop, phone)
    for event in events:
        line.send_event(event)
    production = events[6]
    line.send_event(production)  # redelivered: the same actions, not sent again
    line.drain()

    fired = Counter(a.rule_id for a in line.actions(shop) if a.effect.channel == "sms")
    # The redelivered In Production decides its status_update_sms again: 4 actions, 3 distinct.
    assert fired == Counter(
        {
            "status_update_sms": 4,
            "art_approval_sms": 1,
            "job_complete_sms": 1,
            "tracking_shipped_sms": 1,
            "invoice_sent_sms": 1,
        }
    )
    wait_rows(
        line, "SELECT count(*) FROM deliveries WHERE shop_id = $1 AND channel = 'sms' AND status = 'sent'", shop, 7
    )
    texts = sorted(exchange.form["Body"] for exchange in line.twilio.sent(phone))
    assert texts == sorted(
        [
            "Acme Print Co.: Your artwork for J-1042 is ready to review and approve: https://acme.example/art/J-1042",
            "Acme Print Co.: 500 business cards (J-1042) is now Art Approval Sent. Details: https://acme.example/portal/c-42",
            "Acme Print Co.: 500 business cards (J-1042) is now In Production. Details: https://acme.example/portal/c-42",
            "Acme Print Co.: 500 business cards (J-1042) is now Completed Order. Details: https://acme.example/portal/c-42",
            "Acme Print Co.: Your order J-1042 is complete! Invoice INV-2031: https://acme.example/invoices/INV-2031",
            "Acme Print Co.: Your order J-1042 has shipped via UPS. Tracking: 1Z999AA10123456784",
            "Acme Print Co.: Invoice INV-2031 for $420.00 is due December 15, 2026. View it: "
            "https://acme.example/invoices/INV-2031",
        ]
    )
    for exchange in line.twilio.sent(phone):
        assert exchange.form["From"] == SENDER and exchange.account_sid == ACCOUNT
    # The general email fires beside the specific one, each with its own id.
    general = [a for a in line.actions(shop) if a.rule_id == "status_change_email"]
    assert len({a.action_id for a in general}) == 3


def test_an_opted_out_customer_is_recorded_and_not_texted_again(line: Line) -> None:
    shop = new_shop(line, sms_rules=("status_update_sms",))
    phone = "+15550003333"
    line.twilio.opt_out(phone)
    line.send_event(status(shop, phone, "Art Approval Sent", "In Production"))
    line.drain()
    wait_rows(line, "SELECT count(*) FROM sms_opt_outs WHERE shop_id = $1", shop, 1)
    line.send_event(status(shop, phone, "In Production", "Quality Check"))
    line.drain()
    wait_rows(line, "SELECT count(*) FROM deliveries WHERE shop_id = $1 AND status = 'opted_out'", shop, 2)
    assert len(line.twilio.message_creates(phone)) == 1, "tried once; never again after the opt-out"
    [row] = line.sql("SELECT phone, error FROM sms_opt_outs WHERE shop_id = $1", shop)
    assert row["phone"] == phone and "21610" in row["error"]


def connect_stripe(line: Line, shop: str, key: str) -> None:
    """Store ``key`` sealed as the shop's Stripe key (no check with Stripe) and switch payment links on."""

    async def connect() -> None:
        conn = await asyncpg.connect(line.database_url)
        try:
            await stripe_account.save_credentials(conn, line.settings, shop, stripe_account.StripeCredentials(key))
        finally:
            await conn.close()

    asyncio.run(connect())
    line.publish(StripeConnection(shop_id=shop, account_hint="acct_test (test mode)", updated_at=now()))
    line.publish(CatalogToggle(shop_id=shop, rule="payment_link_email", enabled=True, updated_at=now()))


def test_a_shop_with_stripe_emails_a_checkout_link_for_an_invoice(line: Line) -> None:
    shop = new_shop(line, twilio=False)
    connect_stripe(line, shop, "sk_test_" + "0123456789abcdef" * 2)
    email = f"{shop}@example.com"
    sent = example("invoice.sent", shop, "+15550004444")
    sent["customer"]["email"] = email
    line.send_event(sent)
    line.send_event(sent)  # redelivered: one session, one email
    line.drain()
    links = [a for a in line.actions(shop) if a.rule_id == "payment_link_email"]
    assert len(links) == 2 and len({a.action_id for a in links}) == 1
    wait_rows(line, "SELECT count(*) FROM deliveries WHERE shop_id = $1 AND channel = 'payment_link'", shop, 1)
    done = "SELECT count(*) FROM deliveries WHERE shop_id = $1 AND channel = 'payment_link' AND status <> 'pending'"
    wait_for(lambda: line.sql(done, shop)[0][0] == 1, timeout=60, what="the payment link email")
    [row] = line.sql(
        "SELECT status, provider_ref, provider_url FROM deliveries WHERE shop_id = $1 AND channel = 'payment_link'",
        shop,
    )
    assert row["status"] == "sent" and row["provider_ref"].startswith("cs_"), dict(row)
    mail = messages_to(line, email)
    assert set(mail) == {"Invoice INV-2031 from Acme Print Co.", "Pay invoice INV-2031 online"}
    assert row["provider_url"] in text_of(mail["Pay invoice INV-2031 online"])


def test_a_payment_link_stripe_refuses_is_dead_lettered_with_the_reason(line: Line) -> None:
    shop = new_shop(line, twilio=False)
    connect_stripe(line, shop, "sk_live_" + "0123456789abcdef" * 2)  # stripe-mock takes test keys only: 401
    line.send_event(example("invoice.sent", shop, "+15550005555"))
    line.drain()
    [link] = [a for a in line.actions(shop) if a.rule_id == "payment_link_email"]

    def letters() -> list[Any]:
        return [d for d in line.dead_letters() if d.reason == "effect_failed" and link.action_id in d.detail]

    wait_for(lambda: len(letters()) == 1, timeout=60, what="the dead letter of the refused payment link")
    [letter] = letters()
    assert "HTTP 401" in letter.detail and "stripe" in letter.detail
    assert "0123456789abcdef" not in letter.detail  # the key is masked
    assert letter.topic.endswith(".actions") and letter.value_b64 is not None
    [row] = line.sql("SELECT status, last_error FROM deliveries WHERE action_id = $1", link.action_id)
    assert row["status"] == "failed" and row["last_error"] in letter.detail
