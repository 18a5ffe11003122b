"""Invoices over time on the real pipeline, driven by a controlled clock (ticks), never by sleeping.

Real broker, PostgreSQL and SMTP server. The worker runs with ``STREAMAPP_CLOCK=external``:
the test says what time it is by sending ticks. Each test has its own shop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.config import CatalogToggle, ShopAdmin, ShopProfile
from streamapp.rules import automation
from streamapp.topics import INVOICES_CHANGELOG, topic_name
from tests.harness.cli import Cli
from tests.harness.kafka import read_all
from tests.harness.pipeline import Pipeline, now, pipeline_settings
from tests.harness.services import Worker
from tests.harness.settings import command_env, settings_env
from tests.harness.smtp import Recorder, smtp_server
from tests.harness.waits import wait_for
from tests.harness.zygote import Zygote

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
CHICAGO = ZoneInfo("America/Chicago")
DUE = date(2027, 6, 15)  # after any toggle made while the test runs: every step is in the future
SCHEDULED = {
    "payment_due_soon_email",
    "invoice_overdue_email",
    "invoice_30day_escalation",
    "invoice_60day_escalation",
    "invoice_90day_admin_alert",
}


@pytest.fixture(scope="module")
def line(kafka_bootstrap: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("invoices")
    recorder = Recorder()
    with smtp_server(recorder) as smtp_port:
        settings = pipeline_settings("inv", kafka_bootstrap, postgres_url, smtp_port, tmp / "state", clock="external")
        pipeline = Pipeline(settings, recorder)
        pipeline.workers.append(start_worker(pipeline, tmp / "worker-0.log"))
        try:
            yield pipeline
        finally:
            for worker in pipeline.workers:
                worker.stop()


def start_worker(line: Pipeline, log: Path) -> Worker:
    worker = Worker("streamapp.app", settings_env(line.settings), log)
    worker.wait_ready()
    return worker


def new_shop(line: Pipeline, *, switch_on: tuple[str, ...] = ()) -> str:
    shop = f"shop-{uuid.uuid4().hex[:8]}"
    moment = now()
    line.publish(ShopProfile(shop_id=shop, name="Acme Print Co.", time_zone="America/Chicago", updated_at=moment))
    line.publish(ShopAdmin(shop_id=shop, admin_id="maria", name="Maria", email="maria@acme.example", updated_at=moment))
    for rule in switch_on:
        line.publish(CatalogToggle(shop_id=shop, rule=rule, enabled=True, updated_at=moment))
    return shop


def invoice_event(event_type: str, shop: str, invoice_id: str, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / "invoice.sent.json").read_text())
    raw |= {"type": event_type, "shop_id": shop, "event_id": uuid.uuid4().hex, "occurred_at": now().isoformat()}
    raw["customer"] = {**raw["customer"], "email": f"{shop}@example.com"}
    raw["invoice"] = {**raw["invoice"], "invoice_id": invoice_id, "due_date": DUE.isoformat()}
    if event_type in {"invoice.voided", "invoice.due_date_changed"}:
        raw["invoice_id"] = invoice_id
        del raw["invoice"]
    if event_type == "invoice.paid":
        raw["amount_paid_cents"] = 42000
    return raw | changes


def at(day: date, hour: int = 9) -> datetime:
    """``hour`` o'clock on ``day`` in the shop's time zone."""
    return datetime.combine(day, time(hour), tzinfo=CHICAGO)


def fired(line: Pipeline, shop: str) -> Counter[str]:
    """Distinct scheduled actions of ``shop`` on the actions topic, by rule."""
    ids = {a.action_id: a.rule_id for a in line.actions(shop) if a.rule_id in SCHEDULED}
    return Counter(ids.values())


def tick_through(line: Pipeline, days: list[date]) -> None:
    for day in days:
        line.tick(at(day))
    line.drain()


def test_each_step_fires_once_on_its_day(line: Pipeline) -> None:
    shop = new_shop(line, switch_on=("payment_due_soon_email", "invoice_30day_escalation", "invoice_60day_escalation"))
    line.send_event(invoice_event("invoice.sent", shop, "inv-1"))
    line.drain()
    tick_through(line, [DUE - timedelta(days=4)])
    assert fired(line, shop) == Counter()
    tick_through(line, [DUE - timedelta(days=3)])
    assert fired(line, shop) == Counter({"payment_due_soon_email": 1})
    tick_through(line, [DUE, DUE + timedelta(days=1), DUE + timedelta(days=2)])
    assert fired(line, shop) == Counter({"payment_due_soon_email": 1, "invoice_overdue_email": 1})
    tick_through(line, [DUE + timedelta(days=n) for n in (29, 30, 31, 60, 61, 89, 90, 91)])
    assert fired(line, shop) == Counter(dict.fromkeys(SCHEDULED, 1))

    wait_for(lambda: len(mail_to(line, shop)) >= 5, timeout=60, what="the schedule's emails")
    subjects = sorted(str(m["Subject"]) for m in mail_to(line, shop))
    assert subjects == sorted(
        [
            "Invoice INV-2031 from Acme Print Co.",  # invoice_sent_email, when it was sent
            "Reminder: invoice INV-2031 is due on June 15, 2027",
            "Reminder: invoice INV-2031 is past due",
            "Overdue: invoice INV-2031 is 30 days past due",
            "FINAL NOTICE: invoice INV-2031 is 60 days overdue",
        ]
    )
    wait_for(
        lambda: line.sql("SELECT count(*) FROM notifications WHERE shop_id = $1", shop)[0][0] >= 1,
        timeout=60,
        what="the 90-day admin notification",
    )
    [row] = line.sql("SELECT admin_id, title FROM notifications WHERE shop_id = $1", shop)
    assert (row["admin_id"], row["title"]) == ("maria", "Invoice INV-2031 is 90 days overdue")
    ids = {a.action_id: a for a in line.actions(shop) if a.rule_id in SCHEDULED}
    for action_id, action in ids.items():
        assert action_id == automation.action_id(shop, action.rule_id, "invoice.inv-1")


def mail_to(line: Pipeline, shop: str) -> list[Any]:
    assert line.smtp is not None
    return [m for m in line.smtp.messages if f"{shop}@example.com" in str(m["To"])]


def test_payment_before_the_due_date_cancels_everything_after_it(line: Pipeline) -> None:
    shop = new_shop(line, switch_on=("payment_due_soon_email", "invoice_30day_escalation"))
    line.send_event(invoice_event("invoice.sent", shop, "inv-2"))
    line.drain()
    tick_through(line, [DUE - timedelta(days=3)])
    line.send_event(invoice_event("invoice.paid", shop, "inv-2"))
    line.drain()
    tick_through(line, [DUE + timedelta(days=n) for n in (1, 30, 60, 90)])
    assert fired(line, shop) == Counter({"payment_due_soon_email": 1})


def test_a_voided_invoice_fires_nothing(line: Pipeline) -> None:
    shop = new_shop(line)
    line.send_event(invoice_event("invoice.sent", shop, "inv-3"))
    line.send_event(invoice_event("invoice.voided", shop, "inv-3"))
    line.drain()
    tick_through(line, [DUE + timedelta(days=n) for n in (1, 30, 60, 90)])
    assert fired(line, shop) == Counter()


def test_a_changed_due_date_moves_the_schedule(line: Pipeline) -> None:
    shop = new_shop(line)
    line.send_event(invoice_event("invoice.sent", shop, "inv-4"))
    line.send_event(
        invoice_event("invoice.due_date_changed", shop, "inv-4", due_date=(DUE + timedelta(days=10)).isoformat())
    )
    line.drain()
    tick_through(line, [DUE + timedelta(days=1), DUE + timedelta(days=10)])
    assert fired(line, shop) == Counter()
    tick_through(line, [DUE + timedelta(days=11)])
    assert fired(line, shop) == Counter({"invoice_overdue_email": 1})


def test_a_worker_restart_mid_schedule_fires_each_step_exactly_once(line: Pipeline, tmp_path: Path) -> None:
    shop = new_shop(line, switch_on=("invoice_30day_escalation",))
    line.send_event(invoice_event("invoice.sent", shop, "inv-5"))
    line.drain()
    overdue_tick = line.tick(at(DUE + timedelta(days=1)))
    line.drain()
    assert fired(line, shop) == Counter({"invoice_overdue_email": 1})

    old = line.workers.pop()
    old.stop()
    line.workers.append(start_worker(line, tmp_path / "worker-restarted.log"))
    line.tick(at(DUE + timedelta(days=1), 10), tick_id=overdue_tick)  # the same tick, redelivered
    tick_through(line, [DUE + timedelta(days=2), DUE + timedelta(days=30), DUE + timedelta(days=31)])
    assert fired(line, shop) == Counter({"invoice_overdue_email": 1, "invoice_30day_escalation": 1})
    wait_for(lambda: len(mail_to(line, shop)) >= 3, timeout=60, what="the emails")
    sent = Counter(str(m["X-Streamapp-Action-Id"]) for m in mail_to(line, shop))
    assert all(n == 1 for n in sent.values()), sent
    assert len(sent) == 3  # invoice sent, overdue, 30 days


def test_the_forecast_lists_what_will_fire(line: Pipeline, tmp_path: Path, zygote: Zygote) -> None:
    shop = new_shop(line, switch_on=("payment_due_soon_email",))
    line.send_event(invoice_event("invoice.sent", shop, "inv-6"))
    line.send_event(invoice_event("invoice.sent", shop, "inv-7"))
    line.send_event(invoice_event("invoice.voided", shop, "inv-7"))
    line.drain()
    cli = Cli(command_env(line.settings), tmp_path, zygote)
    horizon = (DUE - date.today()).days + 20  # up to 20 days after the due date: not the 90-day step
    rows = [r.split() for r in cli.ok("invoices", "upcoming", "--shop", shop, "--days", str(horizon)).splitlines()]
    assert rows[0] == ["WHEN", "RULE", "CHANNEL", "INVOICE", "CUSTOMER", "DUE", "DATE"]
    assert [(r[0], r[3], r[5], r[6]) for r in rows[1:]] == [
        ("2027-06-12", "payment_due_soon_email", "INV-2031", "Ann"),
        ("2027-06-16", "invoice_overdue_email", "INV-2031", "Ann"),
    ]
    assert cli.ok("invoices", "upcoming", "--shop", shop) == f"shop {shop} has no reminders due in the next 7 days\n"


def changelog(line: Pipeline, prefix: str) -> list[tuple[str, dict[str, Any] | None]]:
    """(key, value) of every record of the invoices table's changelog whose key starts with ``prefix``
    (None: a tombstone), oldest first on each partition."""
    records = asyncio.run(read_all(line.bootstrap, topic_name(line.settings, INVOICES_CHANGELOG)))
    found = [(json.loads(r.key), None if r.value is None else json.loads(r.value)) for r in records if r.key]
    return [(key, value) for key, value in found if key.startswith(prefix)]


def test_a_closed_invoice_is_removed_after_its_retention_and_its_late_events_bring_nothing_back(
    line: Pipeline, tmp_path: Path
) -> None:
    shop = new_shop(line)
    key = f"{shop}:inv-8"
    sent = invoice_event("invoice.sent", shop, "inv-8")
    paid = invoice_event("invoice.paid", shop, "inv-8")
    line.send_event(sent)
    line.send_event(paid)
    line.drain()
    closed = datetime.fromisoformat(paid["occurred_at"])
    line.tick(closed + timedelta(days=180) - timedelta(minutes=1))  # the default retention: 180 days
    line.drain()
    [*_, (_, kept)] = changelog(line, key)
    assert kept is not None and kept["status"] == "paid" and kept["closed_at"] == closed.isoformat()

    line.tick(closed + timedelta(days=180))
    line.drain()
    [*_, (_, last)] = changelog(line, key)
    assert last is None, "removed: a tombstone on the changelog"
    [(_, mark)] = changelog(line, f"{shop}:~removed/")
    assert mark is not None and mark["removed_through"] == closed.isoformat()
    written = len(changelog(line, key))

    old = line.workers.pop()
    old.stop()
    line.workers.append(start_worker(line, tmp_path / "worker-after-removal.log"))
    # Late: the invoice's own events again, long after it was paid (a producer's redelivery, a replay).
    line.send_event(sent)
    line.send_event(paid)
    line.send_event(invoice_event("invoice.voided", shop, "inv-8", occurred_at=closed.isoformat()))
    line.drain()
    tick_through(line, [DUE + timedelta(days=n) for n in (1, 30, 90)])
    assert fired(line, shop) == Counter(), "the overdue email and the 90-day alert (on by default) did not start"
    assert len(changelog(line, key)) == written, "nothing re-created, and the restored worker held nothing to remove"

    # An invoice of the shop sent after that one closed is a new invoice, as ever.
    line.send_event(invoice_event("invoice.sent", shop, "inv-9"))
    line.drain()
    tick_through(line, [DUE + timedelta(days=91)])
    assert fired(line, shop) == Counter({"invoice_overdue_email": 1, "invoice_90day_admin_alert": 1})
