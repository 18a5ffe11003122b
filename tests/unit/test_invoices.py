"""An invoice's schedule of reminders and escalations, on a controlled clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from streamapp.rules.invoice_schedule import due_steps, fired_by, record, schedule, upcoming

CHICAGO = ZoneInfo("America/Chicago")
DUE = date(2026, 12, 15)
#: What is on by default: the overdue email and the 90-day admin alert.
DEFAULTS: dict[str, datetime | None] = {"invoice_overdue_email": None, "invoice_90day_admin_alert": None}
EVERYTHING: dict[str, datetime | None] = dict.fromkeys(
    [
        "payment_due_soon_email",
        "invoice_overdue_email",
        "invoice_30day_escalation",
        "invoice_60day_escalation",
        "invoice_90day_admin_alert",
    ]
)


def invoice(**changes: Any) -> dict[str, Any]:
    return {"status": "open", "due_date": DUE.isoformat(), "fired": {}, "skipped": {}} | changes


def local(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=CHICAGO)


def run(state: dict[str, Any], moments: list[datetime], enabled: dict[str, datetime | None]) -> list[tuple[str, str]]:
    """Tick the clock through ``moments``; (tick, rule) of everything fired."""
    fired: list[tuple[str, str]] = []
    for n, moment in enumerate(moments):
        due = due_steps(state, moment, CHICAGO, enabled_since=enabled)
        state.update(record(state, due, f"t{n}"))
        fired += [(f"t{n}", step.rule) for step in due.fire]
    return fired


def days(start: date, count: int, hour: int = 9) -> list[datetime]:
    return [local(start + timedelta(days=n), hour) for n in range(count)]


def test_the_schedule_counts_days_in_the_shop_time_zone() -> None:
    steps = {step.rule: step for step in schedule(DUE, CHICAGO)}
    assert steps["payment_due_soon_email"].day == date(2026, 12, 12)
    assert steps["invoice_overdue_email"].at == local(date(2026, 12, 16))
    assert steps["invoice_overdue_email"].at.astimezone(UTC) == datetime(2026, 12, 16, 6, tzinfo=UTC)
    assert steps["invoice_30day_escalation"].day == date(2027, 1, 14)
    assert steps["invoice_60day_escalation"].day == date(2027, 2, 13)
    assert steps["invoice_90day_admin_alert"].day == date(2027, 3, 15)
    assert schedule(DUE, CHICAGO, due_soon_days=7)[0].day == date(2026, 12, 8)


def test_each_step_fires_once_on_its_day() -> None:
    state = invoice()
    fired = run(state, days(date(2026, 12, 1), 110), EVERYTHING)
    day_of = {rule: (date(2026, 12, 1) + timedelta(days=int(tick[1:]))) for tick, rule in fired}
    assert day_of == {
        "payment_due_soon_email": date(2026, 12, 12),
        "invoice_overdue_email": date(2026, 12, 16),
        "invoice_30day_escalation": date(2027, 1, 14),
        "invoice_60day_escalation": date(2027, 2, 13),
        "invoice_90day_admin_alert": date(2027, 3, 15),
    }
    assert len(fired) == 5


def test_not_before_midnight_in_the_shop_time_zone() -> None:
    state = invoice()
    just_before = local(date(2026, 12, 15), 23, 59)  # 05:59 UTC on the 16th
    assert due_steps(state, just_before, CHICAGO, enabled_since=DEFAULTS).fire == []
    [step] = due_steps(state, local(date(2026, 12, 16)), CHICAGO, enabled_since=DEFAULTS).fire
    assert step.rule == "invoice_overdue_email"


def test_paid_or_voided_invoices_fire_nothing_more() -> None:
    for status in ("paid", "voided"):
        state = invoice(status=status)
        assert run(state, days(date(2026, 12, 1), 110), EVERYTHING) == []


def test_payment_before_the_due_date_cancels_the_rest() -> None:
    state = invoice()
    fired = run(state, days(date(2026, 12, 10), 4), EVERYTHING)  # the due-soon email goes out on the 12th
    state["status"] = "paid"
    fired += run(state, days(date(2026, 12, 14), 100), EVERYTHING)
    assert [rule for _, rule in fired] == ["payment_due_soon_email"]


def test_a_changed_due_date_moves_what_has_not_fired() -> None:
    state = invoice()
    run(state, days(date(2026, 12, 10), 4), EVERYTHING)  # due soon: fired on the 12th
    state["due_date"] = date(2027, 1, 15).isoformat()
    fired = run(state, days(date(2026, 12, 14), 40), EVERYTHING)
    assert [rule for _, rule in fired] == ["invoice_overdue_email"]
    overdue = date(2026, 12, 14) + timedelta(days=int(fired[0][0][1:]))
    assert overdue == date(2027, 1, 16), "moved with the due date; the due-soon email does not come again"


def test_a_rule_switched_on_after_its_day_does_not_fire_for_it() -> None:
    state = invoice()
    run(state, days(date(2026, 12, 20), 2), {})  # everything off, past the overdue day
    late = {
        "invoice_overdue_email": local(date(2026, 12, 21), 12),
        "invoice_30day_escalation": local(date(2026, 12, 21)),
    }
    due = due_steps(state, local(date(2026, 12, 21), 13), CHICAGO, enabled_since=late)
    assert due.fire == []
    assert [(step.rule, why) for step, why in due.skip] == [("invoice_overdue_email", "switched on after its day")]
    state.update(record(state, due, "t9"))
    fired = run(state, days(date(2026, 12, 22), 30), late)
    assert [rule for _, rule in fired] == ["invoice_30day_escalation"], "switched on before its day: it fires"


def test_a_jump_over_several_emails_sends_only_the_latest() -> None:
    state = invoice()
    due = due_steps(state, local(date(2027, 2, 1)), CHICAGO, enabled_since=EVERYTHING)
    assert [step.rule for step in due.fire] == ["invoice_30day_escalation"]
    assert sorted(step.rule for step, _ in due.skip) == ["invoice_overdue_email", "payment_due_soon_email"]


def test_a_redelivered_tick_decides_the_same_steps_again_and_a_later_one_nothing() -> None:
    state = invoice()
    due = due_steps(state, local(date(2026, 12, 16), 9), CHICAGO, enabled_since=DEFAULTS)
    state.update(record(state, due, "tick-42"))
    assert fired_by(state, "tick-42") == ["invoice_overdue_email"]
    assert fired_by(state, "tick-43") == []
    assert due_steps(state, local(date(2026, 12, 16), 10), CHICAGO, enabled_since=DEFAULTS).fire == []


def test_the_forecast_lists_what_is_coming() -> None:
    state = invoice()
    coming = upcoming(state, local(date(2026, 12, 10)), local(date(2026, 12, 17)), CHICAGO)
    assert [(step.rule, step.day) for step in coming] == [
        ("payment_due_soon_email", date(2026, 12, 12)),
        ("invoice_overdue_email", date(2026, 12, 16)),
    ]
    assert upcoming(invoice(status="paid"), local(date(2026, 12, 10)), local(date(2027, 4, 1)), CHICAGO) == []
