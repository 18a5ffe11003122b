"""Consumes ``orders`` and ``job-status``: the print-shop automation catalog.

One agent per topic, each ``concurrency=1`` (faust-streaming #606, see
``agents/actions.py``). No table: a catalog decision needs only the event and the
shop's configuration, so events are judged where they arrive, in partition order.
Invoice events arrive on ``payments`` and take the same path from ``agents/payments.py``.
"""

from __future__ import annotations

import logging

from faust import StreamT
from pydantic import TypeAdapter

from schemas.actions import Lineage
from schemas.events import CatalogEvent, JobStatusEvent, OrdersEvent
from streamapp import automation
from streamapp.app import app, runtime
from streamapp.ingest import decode_or_dead_letter

logger = logging.getLogger(__name__)

#: How long an event waits for shop-config to catch up with it before it is judged anyway.
CONFIG_WAIT_SECONDS = 5.0

_orders = TypeAdapter[CatalogEvent](OrdersEvent)
_job_status = TypeAdapter[CatalogEvent](JobStatusEvent)
ORDER_TYPES = frozenset({"order.submitted", "reorder.requested", "lead.created"})
JOB_STATUS_TYPES = frozenset({"job.status_changed", "artwork.declined", "artwork.resubmitted", "job.tracking_added"})

topics = runtime.topics
metrics = runtime.metrics


async def react(event: CatalogEvent, lineage: Lineage) -> None:
    """Publish the actions of every catalog rule ``event`` fires."""
    if not await runtime.shop_config.wait_until(event.occurred_at, CONFIG_WAIT_SECONDS):
        metrics.config_waits.inc()
        logger.warning("shop-config lags event_id=%s by more than %ss", event.event_id, CONFIG_WAIT_SECONDS)
    shop = automation.shop_view(runtime.shop_config.store, event.shop_id)
    decision = automation.decide(event, shop, lineage, toast_ttl=runtime.settings.toast_ttl_seconds)
    for rule_key, reason in decision.skipped:
        metrics.catalog_skips.labels(rule_key, reason).inc()
        if reason == "no_phone":
            logger.info("%s not sent for event_id=%s: the customer has no phone number", rule_key, event.event_id)
    for action in decision.actions:
        await topics.actions.send(key=action.action_id.encode(), value=action.model_dump_json().encode())
        metrics.actions.labels(action.trigger, action.effect.channel).inc()


@app.agent(topics.orders, concurrency=1)
async def react_to_orders(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        found = await decode_or_dead_letter(event.message, _orders, ORDER_TYPES)
        if found is not None:
            await react(*found)


@app.agent(topics.job_status, concurrency=1)
async def react_to_job_status(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        found = await decode_or_dead_letter(event.message, _job_status, JOB_STATUS_TYPES)
        if found is not None:
            await react(*found)
