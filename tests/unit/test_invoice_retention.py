"""When a tick must visit an invoice, when a closed one is removed, and what a late event for a
removed invoice does (pure: :mod:`streamapp.rules.invoice_schedule`)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter

from schemas.events import InvoiceEvent
from streamapp.rules.invoice_schedule import (
    AT_ONCE,
    CUSTOMER_STEPS,
    DAYS_AFTER,
    ShopSchedule,
    apply_event,
    due_steps,
    next_visit,
    record,
    removable,
    removal_mark,
    removal_moment,
    removed_key,
    with_closed_at,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
CHICAGO = ZoneInfo("America/Chicago")
DUE = date(2026, 12, 15)
RULES = (*CUSTOMER_STEPS, "invoice_90day_admin_alert")
DEFAULTS = ShopSchedule("America/Chicago", 3, frozenset({"invoice_overdue_email", "invoice_90day_admin_alert"}))
RETENTION = timedelta(days=180)
_EVENT = TypeAdapter[InvoiceEvent](InvoiceEvent)


def invoice(**changes: Any) -> dict[str, Any]:
    base = {"shop_id": "acme", "partition": 0, "status": "open", "due_date": DUE.isoformat(), "fired": {}}
    return base | {"skipped": {}} | changes


def local(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=CHICAGO)


def event(kind: str, occurred_at: datetime, **changes: Any) -> InvoiceEvent:
    raw: dict[str, Any] = json.loads((EXAMPLES / "invoice.sent.json").read_text())
    raw |= {"type": kind, "occurred_at": occurred_at.isoformat()}
    if kind == "invoice.paid":
        raw["amount_paid_cents"] = 42000
    if kind in {"invoice.voided", "invoice.due_date_changed"}:
        raw["invoice_id"] = raw.pop("invoice")["invoice_id"]
    return _EVENT.validate_python(raw | changes)


# -- when a tick visits --------------------------------------------------------------------
def test_an_open_invoice_is_visited_at_its_earliest_step_whose_rule_is_on() -> None:
    assert next_visit(invoice(), DEFAULTS, RETENTION) == local(DUE + timedelta(days=1))
    with_due_soon = ShopSchedule("America/Chicago", 7, DEFAULTS.enabled | {"payment_due_soon_email"})
    assert next_visit(invoice(), with_due_soon, RETENTION) == local(DUE - timedelta(days=7))
    overdue_done = invoice(fired={"invoice_overdue_email": "t1"})
    assert next_visit(overdue_done, DEFAULTS, RETENTION) == local(DUE + timedelta(days=90))
    in_tokyo = ShopSchedule("Asia/Tokyo", 3, DEFAULTS.enabled)
    assert next_visit(invoice(), in_tokyo, RETENTION) == datetime(2026, 12, 16, tzinfo=ZoneInfo("Asia/Tokyo"))


def test_an_invoice_with_nothing_on_or_left_waits_for_an_event_or_a_change_of_configuration() -> None:
    assert next_visit(invoice(), ShopSchedule("America/Chicago"), RETENTION) is None
    all_done = invoice(fired=dict.fromkeys(DEFAULTS.enabled, "t1"))
    assert next_visit(all_done, DEFAULTS, RETENTION) is None
    assert next_visit(invoice(status="unsent", due_date=None), DEFAULTS, RETENTION) is None
    assert next_visit({"shop_id": "acme", "removed_through": None}, DEFAULTS, RETENTION) is None  # a removal mark


@pytest.mark.parametrize("zone", ["America/Chicago", "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"])
@pytest.mark.parametrize("due_soon_days", [1, 3, 60])
@pytest.mark.parametrize(
    "fired", [(), ("payment_due_soon_email",), ("invoice_overdue_email", "invoice_30day_escalation")]
)
def test_nothing_is_due_before_the_moment_and_something_is_at_it(
    zone: str, due_soon_days: int, fired: tuple[str]
) -> None:
    """The index's moment is exact for the configuration it was computed with: never late, never early."""
    shop = ShopSchedule(zone, due_soon_days, frozenset(RULES))
    state = invoice(fired=dict.fromkeys(fired, "t0"))
    moment = next_visit(state, shop, RETENTION)
    assert moment is not None
    enabled = dict.fromkeys(shop.enabled)
    before = due_steps(
        state, moment - timedelta(microseconds=1), shop.zone, enabled_since=enabled, due_soon_days=due_soon_days
    )
    at = due_steps(state, moment, shop.zone, enabled_since=enabled, due_soon_days=due_soon_days)
    assert before.fire == [] and before.skip == []
    assert at.fire or at.skip
    # After the tick at the moment records what it decided, the next moment is later.
    later = next_visit(record(state, at, "t1"), shop, RETENTION)
    assert later is None or later > moment


# -- retention -----------------------------------------------------------------------------
def test_closing_records_when_and_the_invoice_is_removable_a_retention_later() -> None:
    paid_at = datetime(2026, 12, 20, 15, tzinfo=UTC)
    state = apply_event(invoice(), event("invoice.paid", paid_at), partition=0, zone=CHICAGO)
    assert state is not None and state["status"] == "paid" and state["closed_at"] == paid_at.isoformat()
    assert next_visit(state, DEFAULTS, RETENTION) == paid_at + RETENTION
    assert not removable(state, paid_at + RETENTION - timedelta(seconds=1), RETENTION)
    assert removable(state, paid_at + RETENTION, RETENTION)
    voided = apply_event(None, event("invoice.voided", paid_at), partition=0, zone=CHICAGO)
    assert voided is not None and voided["status"] == "voided" and removable(voided, paid_at + RETENTION, RETENTION)


def test_open_and_unsent_invoices_are_never_removed() -> None:
    far = datetime(2100, 1, 1, tzinfo=UTC)
    assert not removable(invoice(), far, RETENTION)
    assert not removable(invoice(status="unsent", closed_at="2020-01-01T00:00:00+00:00"), far, RETENTION)


def test_a_closed_invoice_of_the_first_format_counts_its_retention_from_the_first_tick_that_sees_it() -> None:
    old = invoice(status="voided")  # written before closed_at was recorded
    assert next_visit(old, DEFAULTS, RETENTION) == AT_ONCE
    tick = datetime(2027, 1, 1, tzinfo=UTC)
    assert not removable(old, tick, RETENTION)
    stamped = with_closed_at(old, tick)
    assert stamped is not None and next_visit(stamped, DEFAULTS, RETENTION) == tick + RETENTION
    assert with_closed_at(stamped, tick + RETENTION) is None
    assert with_closed_at(invoice(), tick) is None


def test_the_removal_mark_keeps_the_latest_closing() -> None:
    early = invoice(status="paid", closed_at="2026-01-01T00:00:00+00:00")
    late = invoice(status="voided", closed_at="2026-03-01T00:00:00+00:00")
    mark = removal_mark(None, late, 2)
    assert mark == {"shop_id": "acme", "partition": 2, "removed_through": "2026-03-01T00:00:00+00:00"}
    assert removal_moment(removal_mark(mark, early, 2)) == datetime(2026, 3, 1, tzinfo=UTC)
    assert removal_moment(None) is None
    assert removed_key("acme", 2) == "acme:~removed/2"


# -- late events ---------------------------------------------------------------------------
def test_late_events_of_a_removed_invoice_recreate_nothing() -> None:
    sent_at = datetime(2026, 11, 23, 22, tzinfo=UTC)
    paid_at = sent_at + timedelta(days=5)
    mark = paid_at  # the invoice was paid, then removed: the shop's mark is its closing
    for kind, occurred in [
        ("invoice.sent", sent_at),
        ("invoice.paid", paid_at),
        ("invoice.voided", paid_at),
        ("invoice.due_date_changed", sent_at),
    ]:
        changes = {"due_date": "2026-12-20"} if kind == "invoice.due_date_changed" else {}
        late = event(kind, occurred, **changes)
        assert apply_event(None, late, partition=0, zone=CHICAGO, removed_through=mark) is None, kind
    # Known only by a due date change that came after the removal: a late invoice.sent does not open it.
    unsent = {"shop_id": "acme", "invoice_id": "inv-2031", "status": "unsent", "due_date_override": "2026-12-20"}
    assert apply_event(unsent, event("invoice.sent", sent_at), partition=0, zone=CHICAGO, removed_through=mark) is None


def test_events_after_the_mark_are_a_new_invoices() -> None:
    mark = datetime(2026, 11, 28, 22, tzinfo=UTC)
    new = apply_event(
        None, event("invoice.sent", mark + timedelta(seconds=1)), partition=0, zone=CHICAGO, removed_through=mark
    )
    assert new is not None and new["status"] == "open"
    # An invoice the table holds is never judged by the mark: an old payment still closes it.
    paid = apply_event(
        invoice(), event("invoice.paid", mark - timedelta(days=30)), partition=0, zone=CHICAGO, removed_through=mark
    )
    assert paid is not None and paid["status"] == "paid"
    # ...and without a mark (no invoice of the shop removed on the partition) everything applies as before.
    assert apply_event(None, event("invoice.sent", mark - timedelta(days=900)), partition=0, zone=CHICAGO) is not None


def test_a_step_rule_table_covers_every_scheduled_rule() -> None:
    assert set(RULES) == {"payment_due_soon_email", *DAYS_AFTER}
