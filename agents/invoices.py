"""Consumes ``<app_id>-invoices``: each invoice's state, and its reminders as time passes.

One agent, ``concurrency=1`` (faust-streaming #606), over a topic that carries both the
invoice events (re-keyed by invoice in ``agents/payments.py``) and the clock's ticks, one
per partition. Time thus arrives as messages, in order with the events of the partition:

- an invoice event updates the invoice's state in the changelog-backed ``invoices`` table;
- a tick walks the invoices of its partition and fires the reminders and escalations that
  are due (:mod:`streamapp.rules.invoice_schedule`), marking each as fired by that tick in the same write.
  A redelivered tick (a crash before its offset was committed) finds its marks and decides
  those actions again, with the same ids, so nothing is lost and the sinks drop doubles.

``STREAMAPP_CLOCK=wall`` (the default): the leader sends a tick every
``STREAMAPP_TICK_SECONDS``. ``external``: ticks come from elsewhere (the tests' controlled clock).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from faust import StreamT
from pydantic import TypeAdapter

from schemas.actions import Action, Lineage
from schemas.internal import InvoicesMessage, RoutedInvoice, Tick
from streamapp.agent_steps import publish, wait_for_config
from streamapp.app import app, runtime
from streamapp.rules import automation, invoice_schedule, wording
from streamapp.rules.catalog import BY_KEY
from streamapp.rules.config_store import CatalogShop
from streamapp.rules.money import format_money
from streamapp.tables import fenced_table

logger = logging.getLogger(__name__)

#: The catalog rules the schedule fires.
SCHEDULED_RULES = (*invoice_schedule.CUSTOMER_STEPS, invoice_schedule.ADMIN_STEP)

_MESSAGE = TypeAdapter[RoutedInvoice | Tick](InvoicesMessage)
settings = runtime.settings
topics = runtime.topics

#: ``<shop_id>:<invoice_id>`` -> the invoice's state (see :func:`streamapp.rules.invoice_schedule.apply_event`).
invoice_table = fenced_table(app, "invoices", partitions=settings.topic_partitions)


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
            continue
        invoice_event = item.event
        key = invoice_schedule.invoice_key(invoice_event)
        state = invoice_schedule.apply_event(
            invoice_table.get(key), invoice_event, partition=message.partition, zone=_zone(invoice_event.shop_id)
        )
        if state is not None:
            invoice_table[key] = state


async def _tick(tick: Tick, topic: str, partition: int, offset: int) -> None:
    await wait_for_config(tick.now, f"tick_id={tick.tick_id}")
    lineage = Lineage(event_id=tick.tick_id, topic=topic, partition=partition, offset=offset)
    for key, state in list(invoice_table.items()):
        if state.get("partition") == partition and state.get("status") == "open":
            await _tick_invoice(key, state, tick, lineage)


async def _tick_invoice(key: str, state: dict[str, Any], tick: Tick, lineage: Lineage) -> None:
    """Fire what is due for one invoice (and what this very tick fired before, if redelivered)."""
    store = runtime.shop_config.store
    shop = store.catalog_view(state["shop_id"])
    profile = store.profile(state["shop_id"])
    due_soon_days = profile.due_soon_days if profile else invoice_schedule.DEFAULT_DUE_SOON_DAYS
    enabled_since = {}
    for rule_key in SCHEDULED_RULES:
        rule_state = automation.rule_state(BY_KEY[rule_key], shop)
        if rule_state.enabled:
            enabled_since[rule_key] = rule_state.since
    again = invoice_schedule.fired_by(state, tick.tick_id)
    due = invoice_schedule.due_steps(
        state, tick.now, shop.time_zone, enabled_since=enabled_since, due_soon_days=due_soon_days
    )
    if due.fire or due.skip:
        state = invoice_schedule.record(state, due, tick.tick_id)
        invoice_table[key] = state
        for step, reason in due.skip:
            logger.info("invoice %s: %s skipped (%s)", key, step.rule, reason)
    for rule_key in [*again, *(step.rule for step in due.fire)]:
        action = _action(rule_key, state, shop, tick, lineage)
        await publish(action)


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
