"""Invoices over time: when each reminder and escalation of an invoice is due (pure, no Kafka).

An invoice's schedule follows its due date D, counted in the shop's time zone; each
step becomes due at the start of its day there:

====================================  ==============================================
rule                                  day
====================================  ==============================================
``payment_due_soon_email``            D minus the shop's "due soon" days (default 3)
``invoice_overdue_email``             D + 1
``invoice_30day_escalation``          D + 30
``invoice_60day_escalation``          D + 60 (the final notice, warning of collections)
``invoice_90day_admin_alert``         D + 90 (to every admin)
====================================  ==============================================

Rules of the schedule (:func:`due_steps`):

- each step fires **at most once per invoice**, and never once the invoice is paid or voided;
- a changed due date moves the steps that have not fired yet;
- a rule switched on later does not fire for a step whose day had already begun;
- when the clock jumps over several customer emails at once (a worker down for days,
  an invoice sent long overdue), only the latest of them is sent, so the customer does not
  get four reminders in one minute; the earlier ones are recorded as skipped.

The state of an invoice is one table value (a JSON-able dict), so each change is one
changelog write, and it remembers which tick fired each step: a redelivered tick
decides the same actions again (same ids, the sinks drop duplicates), a later one nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from schemas.events import InvoiceEvent, InvoicePaid, InvoiceSent, InvoiceVoided

#: The customer emails of the schedule, in the order they come.
CUSTOMER_STEPS = (
    "payment_due_soon_email",
    "invoice_overdue_email",
    "invoice_30day_escalation",
    "invoice_60day_escalation",
)
ADMIN_STEP = "invoice_90day_admin_alert"
#: Days after the due date of each step but the first (which is before it).
DAYS_AFTER = {
    "invoice_overdue_email": 1,
    "invoice_30day_escalation": 30,
    "invoice_60day_escalation": 60,
    ADMIN_STEP: 90,
}
DEFAULT_DUE_SOON_DAYS = 3

#: "unsent": only a paid, voided or due-date event was seen so far.
Status = Literal["unsent", "open", "paid", "voided"]


@dataclass(frozen=True)
class Step:
    """One step of an invoice's schedule: its rule and the moment it becomes due."""

    rule: str
    day: date
    at: datetime


def schedule(due_date: date, zone: ZoneInfo, due_soon_days: int = DEFAULT_DUE_SOON_DAYS) -> list[Step]:
    """Every step of an invoice due on ``due_date``, in time order.

    A step whose day is outside the calendar (a valid invoice may be due on 9999-12-31) has
    no place in it: it would come after year 9999, or came before year 1.
    """
    days = {"payment_due_soon_email": _shift(due_date, -due_soon_days)}
    days |= {rule: _shift(due_date, after) for rule, after in DAYS_AFTER.items()}
    steps = [
        Step(rule, day, datetime.combine(day, time(0), tzinfo=zone)) for rule, day in days.items() if day is not None
    ]
    return sorted(steps, key=lambda step: (step.at, step.rule))


def _shift(day: date, days: int) -> date | None:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return None


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    """``moment``'s calendar day in ``zone``; the calendar's last (or first) day when that day is
    past its end: 9999-12-31 late in the evening UTC is already year 10000 further east."""
    try:
        return moment.astimezone(zone).date()
    except OverflowError:
        return date.max if moment.year > 1 else date.min


@dataclass(frozen=True)
class Due:
    """What a tick decides for one invoice: steps to fire now, and steps passed over for good."""

    fire: list[Step]
    skip: list[tuple[Step, str]]


def due_steps(
    state: Mapping[str, Any],
    now: datetime,
    zone: ZoneInfo,
    *,
    enabled_since: Mapping[str, datetime | None],
    due_soon_days: int = DEFAULT_DUE_SOON_DAYS,
) -> Due:
    """The steps of ``state``'s invoice that are due at ``now`` and not yet fired or skipped.

    ``enabled_since`` maps each rule that is on to the moment it was switched on (None:
    on by default); a rule missing from it is off. An off rule's step is neither fired
    nor skipped: if the rule is switched on before its day, it still fires.
    """
    if state.get("status") != "open" or state.get("due_date") is None:
        return Due([], [])
    done = set(state.get("fired", {})) | set(state.get("skipped", {}))
    fire: list[Step] = []
    skip: list[tuple[Step, str]] = []
    for step in schedule(date.fromisoformat(state["due_date"]), zone, due_soon_days):
        if step.rule in done or step.at > now or step.rule not in enabled_since:
            continue
        since = enabled_since[step.rule]
        if since is not None and since > step.at:
            skip.append((step, "switched on after its day"))
            continue
        fire.append(step)
    customer = [step for step in fire if step.rule in CUSTOMER_STEPS]
    for step in customer[:-1]:  # the clock jumped several emails: only the latest goes out
        fire.remove(step)
        skip.append((step, f"superseded by {customer[-1].rule}"))
    return Due(fire, skip)


def record(state: Mapping[str, Any], due: Due, tick_id: str) -> dict[str, Any]:
    """``state`` with ``due``'s steps marked: fired by ``tick_id``, or skipped with the reason."""
    fired = dict(state.get("fired", {})) | {step.rule: tick_id for step in due.fire}
    skipped = dict(state.get("skipped", {})) | {step.rule: reason for step, reason in due.skip}
    return {**state, "fired": fired, "skipped": skipped}


def fired_by(state: Mapping[str, Any], tick_id: str) -> list[str]:
    """The rules that tick ``tick_id`` fired (decided again when that tick is redelivered)."""
    return sorted(rule for rule, tick in state.get("fired", {}).items() if tick == tick_id)


def upcoming(state: Mapping[str, Any], start: datetime, end: datetime, zone: ZoneInfo, **kwargs: Any) -> list[Step]:
    """The steps of an open invoice whose moment falls in ``[start, end)`` and that have not
    fired or been skipped: the forecast of ``streamapp invoices upcoming``."""
    if state.get("status") != "open" or state.get("due_date") is None:
        return []
    done = set(state.get("fired", {})) | set(state.get("skipped", {}))
    steps = schedule(date.fromisoformat(state["due_date"]), zone, **kwargs)
    return [step for step in steps if start <= step.at < end and step.rule not in done]


def invoice_key(event: InvoiceEvent) -> str:
    """Table and message key of an invoice: ``<shop_id>:<invoice_id>``."""
    invoice_id = event.invoice.invoice_id if isinstance(event, InvoiceSent | InvoicePaid) else event.invoice_id
    return f"{event.shop_id}:{invoice_id}"


#: Statuses no event changes any more.
FINAL = frozenset({"paid", "voided"})


def apply_event(
    state: Mapping[str, Any] | None, event: InvoiceEvent, *, partition: int, zone: ZoneInfo
) -> dict[str, Any] | None:
    """The invoice's state after ``event``; None when nothing changes.

    Paid and voided are final: a late or redelivered ``invoice.sent`` never reopens the
    invoice. A due date change of an invoice not seen yet is kept, so that the
    ``invoice.sent`` arriving after it cannot bring back the old date.
    """
    if state is not None and state.get("status") in FINAL:
        return None
    if isinstance(event, InvoiceSent):
        return _sent(state, event, partition, zone)
    base: dict[str, Any] = (
        dict(state)
        if state is not None
        else {
            "shop_id": event.shop_id,
            "invoice_id": event.invoice.invoice_id if isinstance(event, InvoicePaid) else event.invoice_id,
            "partition": partition,
            "customer": event.customer.model_dump(mode="json"),
            "status": "unsent",
            "fired": {},
            "skipped": {},
        }
    )
    if isinstance(event, InvoicePaid | InvoiceVoided):
        return {**base, "status": "paid" if isinstance(event, InvoicePaid) else "voided"}
    where = "due_date_override" if base["status"] == "unsent" else "due_date"
    return {**base, where: event.due_date.isoformat()}


def _sent(state: Mapping[str, Any] | None, event: InvoiceSent, partition: int, zone: ZoneInfo) -> dict[str, Any]:
    invoice = event.invoice
    due = invoice.due_date or local_day(event.occurred_at, zone)  # due upon receipt
    known = dict(state or {})
    details = {
        "shop_id": event.shop_id,
        "invoice_id": invoice.invoice_id,
        "partition": partition,
        "customer": event.customer.model_dump(mode="json"),
        "invoice_number": invoice.invoice_number,
        "invoice_url": invoice.invoice_url,
        "total_due_cents": invoice.total_due_cents,
        "currency": invoice.currency,
        "due_date": known.get("due_date_override") or known.get("due_date") or due.isoformat(),
        "status": "open",
    }
    return {"fired": {}, "skipped": {}, **known, **details}
