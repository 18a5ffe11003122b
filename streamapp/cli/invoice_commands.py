"""``streamapp invoices upcoming``: the reminders and escalations due in the coming days.

A forecast read from the invoices table: its compacted changelog topic
(``<app_id>-invoices-changelog``), read to its end, is the table as the workers have it.
It lists, for each open invoice of the shop, the steps that have not fired, whose rule is
on (and was on before the step's day), and whose moment comes before the horizon; a step
whose moment has passed is "due now" (it fires at the next tick).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import click
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamapp import shop_config
from streamapp.cli import common
from streamapp.errors import ConfigurationError
from streamapp.rules import automation, invoice_schedule
from streamapp.rules.catalog import BY_KEY
from streamapp.rules.config_store import CatalogShop
from streamapp.settings import Settings
from streamapp.topics import INVOICES_CHANGELOG, topic_name

_POLL_MS = 200


async def read_invoices(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every invoice's state: the changelog of the invoices table, read once to its end."""
    topic = topic_name(settings, INVOICES_CHANGELOG)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    states: dict[str, dict[str, Any]] = {}
    try:
        if topic not in await consumer.topics():  # fetches the cluster's metadata
            raise ConfigurationError(f"topic {topic} does not exist; run `streamapp topics create`")
        # `topics create` made it with STREAMAPP_TOPIC_PARTITIONS partitions, and refuses any other count.
        assigned = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        remaining = {tp for tp in assigned if ends[tp] > 0}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=_POLL_MS)).items():
                for record in records:
                    key = _key(record.key)
                    if record.value is None:
                        states.pop(key, None)
                    else:
                        states[key] = json.loads(record.value)
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return states


def _key(raw: bytes | None) -> str:
    text = (raw or b"").decode("utf-8", errors="replace")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, str) else text


def forecast(
    states: dict[str, dict[str, Any]], shop: CatalogShop, due_soon_days: int, now: datetime, days: int
) -> list[tuple[datetime, str, dict[str, Any]]]:
    """(moment, rule, invoice state) of every step due before ``now + days``, soonest first."""
    horizon = now + timedelta(days=days)
    found: list[tuple[datetime, str, dict[str, Any]]] = []
    for state in states.values():
        if state.get("shop_id") != shop.shop_id:
            continue
        past = datetime(1970, 1, 1, tzinfo=UTC)
        for step in invoice_schedule.upcoming(state, past, horizon, shop.time_zone, due_soon_days=due_soon_days):
            rule_state = automation.rule_state(BY_KEY[step.rule], shop)
            if rule_state.enabled and (rule_state.since is None or rule_state.since <= step.at):
                found.append((step.at, step.rule, state))
    return sorted(found, key=lambda item: (item[0], item[1]))


@click.group("invoices")
def invoices_group() -> None:
    """Invoices over time: reminders and escalations."""
    common.quiet_libraries()


@invoices_group.command("upcoming")
@common.shop_option
@click.option("--days", type=click.IntRange(1, 366), default=7, show_default=True, help="How far to look ahead.")
def invoices_upcoming(shop: str, days: int) -> None:
    """The reminders and escalations due to fire in the coming days, soonest first."""
    settings = common.settings(kafka=True)
    store = common.run(shop_config.load(settings))
    states = common.run(read_invoices(settings))
    view = store.catalog_view(shop)
    profile = store.profile(shop)
    due_soon_days = profile.due_soon_days if profile else invoice_schedule.DEFAULT_DUE_SOON_DAYS
    now = datetime.now(UTC)
    coming = forecast(states, view, due_soon_days, now, days)
    if not coming:
        click.echo(f"shop {shop} has no reminders due in the next {days} days")
        return
    rows = [
        [
            "due now" if moment <= now else _local(moment, view.time_zone),
            rule,
            BY_KEY[rule].channel,
            str(state.get("invoice_number", state.get("invoice_id"))),
            str(state.get("customer", {}).get("name", "")),
            str(state.get("due_date", "")),
        ]
        for moment, rule, state in coming
    ]
    common.table(["WHEN", "RULE", "CHANNEL", "INVOICE", "CUSTOMER", "DUE DATE"], rows)


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def register(cli: click.Group) -> None:
    """Add the invoices commands to the main ``streamapp`` group."""
    cli.add_command(invoices_group)
