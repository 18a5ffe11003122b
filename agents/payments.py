"""Consumes ``payments``: Order Count Events.

Two agents, each ``concurrency=1`` because each updates a table or emits
messages (faust-streaming #606: with more, a commit can pass an in-flight message):

1. ``route_payments`` decodes each message. Bad input goes to ``dead-letters``
   with the reason and the original bytes; a valid ``payment.succeeded`` is
   re-keyed by customer onto the internal ``<app_id>-payments-by-customer`` topic.
2. ``count_orders`` counts each customer's distinct paid orders in a
   changelog-backed table and publishes the actions of the rules that fire.
"""

from __future__ import annotations

import logging

from faust import StreamT
from faust.types import EventT
from pydantic import TypeAdapter

from schemas.actions import Lineage
from schemas.deadletter import DeadLetter
from schemas.events import PaymentFailed, PaymentsEvent, PaymentSucceeded
from schemas.internal import RoutedPayment
from streamapp.app import app, runtime
from streamapp.decode import decode
from streamapp.order_count import apply_payment, customer_key, decide

logger = logging.getLogger(__name__)

PAYMENT_TYPES = frozenset({"payment.succeeded", "payment.failed"})
CONFIG_WAIT_SECONDS = 5.0

_payments = TypeAdapter[PaymentSucceeded | PaymentFailed](PaymentsEvent)
topics = runtime.topics
metrics = runtime.metrics

#: ``<shop_id>:<customer_id>`` -> ``{"count": n, "orders": {order_id: [event_id, n]}}``
order_counts = app.Table("order-counts", default=None, partitions=runtime.settings.topic_partitions)


@app.agent(topics.payments, concurrency=1)
async def route_payments(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        await _route(event)


async def _route(event: EventT[bytes]) -> None:
    message = event.message
    outcome = decode(
        _payments,
        PAYMENT_TYPES,
        key=message.key,
        value=message.value,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
    if isinstance(outcome, DeadLetter):
        metrics.dead_letters.labels(message.topic, outcome.reason).inc()
        logger.warning(
            "dead-lettered topic=%s partition=%s offset=%s reason=%s: %s",
            message.topic,
            message.partition,
            message.offset,
            outcome.reason,
            outcome.detail,
        )
        await topics.dead_letters.send(key=message.key, value=outcome.model_dump_json().encode())
        return
    metrics.events.labels(message.topic, outcome.type).inc()
    if not isinstance(outcome, PaymentSucceeded):
        return  # payment.failed: valid, and nothing counts on it
    routed = RoutedPayment(
        lineage=Lineage(
            event_id=outcome.event_id, topic=message.topic, partition=message.partition, offset=message.offset
        ),
        event=outcome,
    )
    key = customer_key(outcome.shop_id, outcome.customer.customer_id)
    await topics.payments_by_customer.send(key=key.encode(), value=routed.model_dump_json().encode())


@app.agent(topics.payments_by_customer, concurrency=1)
async def count_orders(stream: StreamT[bytes]) -> None:
    async for value in stream:
        routed = RoutedPayment.model_validate_json(value)
        event = routed.event
        key = customer_key(event.shop_id, event.customer.customer_id)
        counted = apply_payment(order_counts.get(key), event)
        if counted.state is not None:
            order_counts[key] = counted.state
        if counted.count is None:
            continue
        if not await runtime.shop_config.wait_until(event.occurred_at, CONFIG_WAIT_SECONDS):
            metrics.config_waits.inc()
            logger.warning("shop-config lags event_id=%s by more than %ss", event.event_id, CONFIG_WAIT_SECONDS)
        for action in decide(event, counted.count, runtime.shop_config.store.view(event.shop_id), routed.lineage):
            await topics.actions.send(key=action.action_id.encode(), value=action.model_dump_json().encode())
            metrics.actions.labels(action.trigger, action.effect.channel).inc()
