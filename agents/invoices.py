"""Consumes ``<app_id>-invoices``: each invoice's state, and its reminders as time passes.

One agent, ``concurrency=1`` (faust-streaming #606), over a topic that carries both the
invoice events (re-keyed by invoice in ``agents/payments.py``) and the clock's ticks, one
per partition. Time thus arrives as messages, in order with the events of the partition:

- an invoice event updates the invoice's state in the changelog-backed ``invoices`` table (an
  event for an invoice already removed changes nothing: "Late events" in
  :mod:`streamapp.rules.invoice_schedule`);
- a tick visits the invoices of its partition that have something due (the partition's
  :class:`~streamapp.rules.invoice_index.DueIndex`), fires the reminders and escalations that are
  due (:mod:`streamapp.rules.invoice_schedule`), marking each as fired by that tick in the same
  write, and removes the paid and voided invoices whose retention has ended (a tombstone).
  A redelivered tick (a crash before its offset was committed) finds its marks and decides
  those actions again, with the same ids, so nothing is lost and the sinks drop doubles.

The indexes are derived from the table, in memory: after every restore of the table (start,
rebalance) they are dropped, and the next tick builds them all in one pass over the table; every
write of this agent keeps the index of its partition in step. A tick first compares each shop's
schedule configuration with the one its invoices were indexed with (only when the configuration
changed at all), so a changed time zone, due-soon days or rule switch is never missed.

``STREAMAPP_CLOCK=wall`` (the default): the leader sends a tick every
``STREAMAPP_TICK_SECONDS``. ``external``: ticks come from elsewhere (the tests' controlled clock).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from faust import StreamT
from pydantic import TypeAdapter

from schemas.actions import Action, Lineage
from schemas.events import InvoiceEvent
from schemas.internal import InvoicesMessage, RoutedInvoice, Tick
from streamapp.agent_steps import publish, wait_for_config
from streamapp.app import app, runtime
from streamapp.rules import automation, invoice_schedule, wording
from streamapp.rules.catalog import BY_KEY
from streamapp.rules.config_store import CatalogShop
from streamapp.rules.invoice_index import DueIndex
from streamapp.rules.money import format_money
from streamapp.tables import fenced_table

logger = logging.getLogger(__name__)

#: The catalog rules the schedule fires.
SCHEDULED_RULES = (*invoice_schedule.CUSTOMER_STEPS, invoice_schedule.ADMIN_STEP)

_MESSAGE = TypeAdapter[RoutedInvoice | Tick](InvoicesMessage)
settings = runtime.settings
topics = runtime.topics

#: ``<shop_id>:<invoice_id>`` -> the invoice's state (see :func:`streamapp.rules.invoice_schedule.apply_event`);
#: ``<shop_id>:~removed/<partition>`` -> the shop's removal mark on that partition.
invoice_table = fenced_table(app, "invoices", partitions=settings.topic_partitions)
RETENTION = timedelta(days=settings.invoice_retention_days)
#: Partition -> which of its invoices a tick visits; empty until the first tick after a restore.
_indexes: dict[int, DueIndex] = {}


@invoice_table.on_recover
async def _forget_indexes() -> None:
    """The table was restored (start, rebalance): the next tick derives the indexes from it anew."""
    _indexes.clear()


def _zone(shop_id: str) -> ZoneInfo:
    profile = runtime.shop_config.store.profile(shop_id)
    return ZoneInfo(profile.time_zone if profile else "UTC")


@app.agent(topics.invoices, concurrency=1)
async def schedule_invoices(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        message = event.message
        item = _MESSAGE.validate_json(message.value or b"")
        if isinstance(item, Tick):
            await _tick(item, message.topic, message.partition, message.offset)
        else:
            _apply(item.event, message.partition)


def _apply(invoice_event: InvoiceEvent, partition: int) -> None:
    key = invoice_schedule.invoice_key(invoice_event)
    held = invoice_table.get(key)
    mark = invoice_table.get(invoice_schedule.removed_key(invoice_event.shop_id, partition))
    state = invoice_schedule.apply_event(
        held,
        invoice_event,
        partition=partition,
        zone=_zone(invoice_event.shop_id),
        removed_through=invoice_schedule.removal_moment(mark),
    )
    if state is not None:
        invoice_table[key] = state
        _track(partition, key, state)
    elif held is None or held.get("status") == "unsent":
        logger.info(
            "invoice %s: %s (event_id=%s) occurred before the shop's last removed invoice closed: ignored",
            key,
            invoice_event.type,
            invoice_event.event_id,
        )


def _track(partition: int, key: str, state: dict[str, Any] | None) -> None:
    """Keep the partition's index (if built) in step with a write of ``key`` (None: removed)."""
    index = _indexes.get(partition)
    if index is not None:
        if state is None:
            index.discard(key)
        else:
            index.put(key, state, _schedule_of)


def _index(partition: int) -> DueIndex:
    """The partition's index; after a restore, every partition's, built in one pass over the table."""
    if not _indexes:
        started = time.monotonic()
        partitions = range(settings.topic_partitions)
        _indexes.update(DueIndex.build(invoice_table.items(), partitions, _schedule_of, RETENTION))
        logger.info(
            "invoices: %d invoices of %d partitions indexed in %.3f s",
            sum(len(index) for index in _indexes.values()),
            len(_indexes),
            time.monotonic() - started,
        )
    return _indexes.setdefault(partition, DueIndex(RETENTION))


class _ShopNow:
    """One shop's configuration as the schedule reads it, at one tick."""

    def __init__(self, shop_id: str) -> None:
        store = runtime.shop_config.store
        self.shop = store.catalog_view(shop_id)
        profile = store.profile(shop_id)
        due_soon_days = profile.due_soon_days if profile else invoice_schedule.DEFAULT_DUE_SOON_DAYS
        self.enabled_since: dict[str, datetime | None] = {}
        for rule_key in SCHEDULED_RULES:
            rule_state = automation.rule_state(BY_KEY[rule_key], self.shop)
            if rule_state.enabled:
                self.enabled_since[rule_key] = rule_state.since
        self.schedule = invoice_schedule.ShopSchedule(
            self.shop.time_zone.key, due_soon_days, frozenset(self.enabled_since)
        )


def _schedule_of(shop_id: str) -> invoice_schedule.ShopSchedule:
    return _ShopNow(shop_id).schedule


async def _tick(tick: Tick, topic: str, partition: int, offset: int) -> None:
    await wait_for_config(tick.now, f"tick_id={tick.tick_id}")
    lineage = Lineage(event_id=tick.tick_id, topic=topic, partition=partition, offset=offset)
    index = _index(partition)
    version = runtime.shop_config.store.version
    if index.config_version != version:
        requeued = index.reconcile(_schedule_of)
        index.config_version = version
        if requeued:
            logger.info("invoices: %d of partition %d to visit again (shop configuration changed)", requeued, partition)
    shops: dict[str, _ShopNow] = {}
    for key in index.due(tick.now, tick.tick_id):
        state = invoice_table.get(key)
        if state is None:
            index.discard(key)
        elif state.get("status") == "open":
            if state["shop_id"] not in shops:
                shops[state["shop_id"]] = _ShopNow(state["shop_id"])
            await _tick_invoice(key, state, tick, lineage, shops[state["shop_id"]])
        else:
            _retire(key, state, tick, partition)


async def _tick_invoice(key: str, state: dict[str, Any], tick: Tick, lineage: Lineage, config: _ShopNow) -> None:
    """Fire what is due for one invoice (and what this very tick fired before, if redelivered)."""
    again = invoice_schedule.fired_by(state, tick.tick_id)
    due = invoice_schedule.due_steps(
        state,
        tick.now,
        config.shop.time_zone,
        enabled_since=config.enabled_since,
        due_soon_days=config.schedule.due_soon_days,
    )
    if due.fire or due.skip:
        state = invoice_schedule.record(state, due, tick.tick_id)
        invoice_table[key] = state
        for step, reason in due.skip:
            logger.info("invoice %s: %s skipped (%s)", key, step.rule, reason)
    _track(lineage.partition, key, state)
    for rule_key in [*again, *(step.rule for step in due.fire)]:
        action = _action(rule_key, state, config.shop, tick, lineage)
        await publish(action)


def _retire(key: str, state: dict[str, Any], tick: Tick, partition: int) -> None:
    """A paid or voided invoice: removed once its retention has ended (the shop's mark raised first)."""
    stamped = invoice_schedule.with_closed_at(state, tick.now)
    if stamped is not None:
        invoice_table[key] = stamped
        _track(partition, key, stamped)
    elif invoice_schedule.removable(state, tick.now, RETENTION):
        mark_key = invoice_schedule.removed_key(state["shop_id"], partition)
        invoice_table[mark_key] = invoice_schedule.removal_mark(invoice_table.get(mark_key), state, partition)
        del invoice_table[key]
        _track(partition, key, None)
        logger.info("invoice %s: removed, %d days after it was %s", key, RETENTION.days, state.get("status"))
    else:
        _track(partition, key, state)


def _action(rule_key: str, state: dict[str, Any], shop: CatalogShop, tick: Tick, lineage: Lineage) -> Action:
    """The action of one scheduled step, rendered with the invoice's variables as of the tick."""
    rule = BY_KEY[rule_key]
    customer = state["customer"]
    due_date = date.fromisoformat(state["due_date"])
    today = tick.now.astimezone(shop.time_zone).date()
    available = {
        "shop_name": shop.shop_name,
        "customer_name": customer["name"],
        "customer_email": customer["email"],
        "invoice_number": state["invoice_number"],
        "invoice_link": state["invoice_url"],
        "total_due": format_money(state["total_due_cents"], state["currency"]),
        "due_date": wording.long_date(due_date),
        "days_until_due": str((due_date - today).days),
        "days_overdue": str((today - due_date).days),
    }
    recipient = automation.Recipient(
        customer["customer_id"], customer["name"], customer["email"], customer.get("phone")
    )
    # Once per invoice: the id names the invoice, not the tick that happened to fire it.
    origin = automation.Origin(f"invoice.{state['invoice_id']}", tick.now, lineage)
    variables = wording.rule_variables(rule, available)
    return automation.build_action(rule, shop, variables, recipient, origin, toast_ttl=settings.toast_ttl_seconds)


if settings.clock == "wall":

    @app.timer(interval=settings.tick_seconds, on_leader=True)  # type: ignore[untyped-decorator]
    async def wall_clock() -> None:
        """Tick every partition of the invoices topic with the time now."""
        tick = Tick(tick_id=uuid.uuid4().hex, now=datetime.now(UTC))
        for partition in range(settings.topic_partitions):
            await topics.invoices.send(value=tick.model_dump_json().encode(), partition=partition)
