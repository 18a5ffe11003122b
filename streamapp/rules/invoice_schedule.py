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

Which invoices a tick visits (:func:`next_visit`, kept by :mod:`streamapp.rules.invoice_index`):
an open invoice at the moment of its earliest step not yet fired or skipped whose rule is on,
computed with the shop's configuration (:class:`ShopSchedule`); a step of a rule that is off
waits for a change of that configuration, which has every open invoice of the shop visited again.
A paid or voided invoice is visited when its retention ends.

**Retention** (:func:`removable`): a paid or voided invoice is removed from the table (a
changelog tombstone) by the first tick at least the retention (``STREAMAPP_INVOICE_RETENTION_DAYS``,
default 180) after the ``occurred_at`` of the event that closed it (``closed_at``; a state closed
before that was recorded gets the moment of the first tick that sees it). The tick that removes
it raises the shop's *removal mark* on that partition (:func:`removal_mark`, table key
:func:`removed_key`) to that ``closed_at``, if higher.

**Late events** (:func:`apply_event`): an event for an invoice the table does not hold (or an
``invoice.sent`` for one known only by a due-date change) that occurred no later than the shop's
removal mark may belong to an invoice already removed, and changes nothing: a late
``invoice.paid`` or ``invoice.voided`` re-creates nothing, a late ``invoice.sent`` does not start
the reminders of an invoice closed long ago. Every event of a removed invoice occurred at or
before its closing (the billing system closes an invoice last), hence at or before the mark. The
price: a genuinely new invoice whose events arrive more than the retention after a later-closed
invoice of the same shop was closed (at least the retention late, then) is ignored too. An event
that occurred after the mark is a new invoice's, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
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
#: How long a paid or voided invoice is kept by default (``STREAMAPP_INVOICE_RETENTION_DAYS``).
DEFAULT_RETENTION = timedelta(days=180)
#: The moment of "visit it at the next tick".
AT_ONCE = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ShopSchedule:
    """What of a shop's configuration moves the steps of its invoices: its time zone, its
    due-soon days and which of the schedule's rules are on."""

    zone_key: str = "UTC"
    due_soon_days: int = DEFAULT_DUE_SOON_DAYS
    enabled: frozenset[str] = frozenset()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.zone_key)


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


def next_visit(state: Mapping[str, Any], shop: ShopSchedule, retention: timedelta) -> datetime | None:
    """The earliest moment a tick may have something to do for ``state``'s invoice, under ``shop``'s
    configuration; None when nothing happens to it until an event or a change of that configuration.

    An open invoice: the moment of its earliest step not fired or skipped whose rule is on (a tick
    then decides with :func:`due_steps`, which may fire or skip it; nothing of a step comes before
    its moment). A paid or voided one: the end of its retention (:data:`AT_ONCE` when its
    ``closed_at`` is not recorded: the next tick records it). Anything else: None.
    """
    status = state.get("status")
    if status in FINAL:
        closed = closed_at(state)
        return AT_ONCE if closed is None else _plus(closed, retention)
    if status != "open" or state.get("due_date") is None:
        return None
    done = set(state.get("fired", {})) | set(state.get("skipped", {}))
    steps = schedule(date.fromisoformat(state["due_date"]), shop.zone, shop.due_soon_days)
    return next((step.at for step in steps if step.rule not in done and step.rule in shop.enabled), None)


def closed_at(state: Mapping[str, Any]) -> datetime | None:
    """When the event that paid or voided the invoice occurred (None: not recorded, or not closed)."""
    moment = state.get("closed_at")
    return None if moment is None else datetime.fromisoformat(moment)


def with_closed_at(state: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """A closed ``state`` that lacks ``closed_at`` (written before it was recorded), closed at ``now``:
    its retention counts from the first tick that sees it. None when there is nothing to add."""
    if state.get("status") not in FINAL or state.get("closed_at") is not None:
        return None
    return {**state, "closed_at": now.isoformat()}


def removable(state: Mapping[str, Any], now: datetime, retention: timedelta) -> bool:
    """Whether a tick at ``now`` removes ``state``'s invoice: paid or voided at least ``retention`` ago."""
    closed = closed_at(state) if state.get("status") in FINAL else None
    end = None if closed is None else _plus(closed, retention)
    return end is not None and end <= now


def _plus(moment: datetime, delta: timedelta) -> datetime | None:
    try:
        return moment + delta
    except OverflowError:  # past year 9999: never
        return None


def removed_key(shop_id: str, partition: int) -> str:
    """Table key of ``shop_id``'s removal mark on ``partition`` (``~`` is never in an invoice id)."""
    return f"{shop_id}:~removed/{partition}"


def removal_mark(mark: Mapping[str, Any] | None, removed: Mapping[str, Any], partition: int) -> dict[str, Any]:
    """The shop's removal mark once ``removed`` (a closed invoice's state) is removed: the latest
    ``closed_at`` of the invoices it removed on ``partition``."""
    held = removal_moment(mark)
    closed = closed_at(removed)
    latest = closed if held is None or (closed is not None and closed > held) else held
    return {
        "shop_id": removed["shop_id"],
        "partition": partition,
        "removed_through": None if latest is None else latest.isoformat(),
    }


def removal_moment(mark: Mapping[str, Any] | None) -> datetime | None:
    """The moment up to which ``mark`` says invoices of its shop were closed and removed."""
    moment = None if mark is None else mark.get("removed_through")
    return None if moment is None else datetime.fromisoformat(moment)


def invoice_key(event: InvoiceEvent) -> str:
    """Table and message key of an invoice: ``<shop_id>:<invoice_id>``."""
    invoice_id = event.invoice.invoice_id if isinstance(event, InvoiceSent | InvoicePaid) else event.invoice_id
    return f"{event.shop_id}:{invoice_id}"


#: Statuses no event changes any more.
FINAL = frozenset({"paid", "voided"})


def apply_event(
    state: Mapping[str, Any] | None,
    event: InvoiceEvent,
    *,
    partition: int,
    zone: ZoneInfo,
    removed_through: datetime | None = None,
) -> dict[str, Any] | None:
    """The invoice's state after ``event``; None when nothing changes.

    Paid and voided are final: a late or redelivered ``invoice.sent`` never reopens the
    invoice; closing records when (``closed_at``: the event's ``occurred_at``). A due date
    change of an invoice not seen yet is kept, so that the ``invoice.sent`` arriving after it
    cannot bring back the old date. ``removed_through`` is the shop's removal mark on this
    partition: an event that occurred no later than it does not create an invoice, nor open one
    known only by a due date change (see "Late events" above).
    """
    if state is not None and state.get("status") in FINAL:
        return None
    creates = state is None or (isinstance(event, InvoiceSent) and state.get("status") == "unsent")
    if creates and removed_through is not None and event.occurred_at <= removed_through:
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
        status = "paid" if isinstance(event, InvoicePaid) else "voided"
        return {**base, "status": status, "closed_at": event.occurred_at.isoformat()}
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
