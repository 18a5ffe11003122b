"""Consumes ``payments``: Order Count Events.

Two agents, each ``concurrency=1`` because each updates a table or emits
messages (faust-streaming #606: with more, a commit can pass an in-flight message):

1. ``route_payments`` decodes each message. Bad input goes to ``dead-letters``
   with the reason and the original bytes; a valid ``payment.succeeded`` is
   re-keyed by customer onto the internal ``<app_id>-payments-by-customer`` topic;
   ``invoice.sent`` and ``invoice.paid`` go to the automation catalog (``agents/catalog.py``),
   and every invoice event is re-keyed by invoice onto ``<app_id>-invoices`` (``agents/invoices.py``).
2. ``count_orders`` counts each customer's distinct paid orders in a
   changelog-backed table and publishes the actions of the rules that fire.
"""

from __future__ import annotations

import logging

from faust import StreamT
from pydantic import TypeAdapter

from agents import catalog
from schemas.actions import Lineage
from schemas.events import (
    InvoiceDueDateChanged,
    InvoicePaid,
    InvoiceSent,
    InvoiceVoided,
    PaymentFailed,
    PaymentsEvent,
    PaymentSucceeded,
)
from schemas.internal import RoutedInvoice, RoutedPayment
from streamapp.app import app, runtime
from streamapp.ingest import decode_or_dead_letter
from streamapp.invoices import invoice_key
from streamapp.order_count import apply_payment, customer_key, decide
from streamapp.tables import fenced_table

logger = logging.getLogger(__name__)

PAYMENT_TYPES = frozenset(
    {
        "payment.succeeded",
        "payment.failed",
        "invoice.sent",
        "invoice.paid",
        "invoice.voided",
        "invoice.due_date_changed",
    }
)
CONFIG_WAIT_SECONDS = catalog.CONFIG_WAIT_SECONDS

PaymentsEventT = PaymentSucceeded | PaymentFailed | InvoiceSent | InvoicePaid | InvoiceVoided | InvoiceDueDateChanged
_payments = TypeAdapter[PaymentsEventT](PaymentsEvent)
topics = runtime.topics
metrics = runtime.metrics

#: ``<shop_id>:<customer_id>`` -> ``{"count": n, "orders": {order_id: [event_id, n]}}``
order_counts = fenced_table(app, "order-counts", partitions=runtime.settings.topic_partitions)


@app.agent(topics.payments, concurrency=1)
async def route_payments(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        found = await decode_or_dead_letter(event.message, _payments, PAYMENT_TYPES)
        if found is not None:
            await _route(*found)


async def _route(event: PaymentsEventT, lineage: Lineage) -> None:
    if isinstance(event, InvoiceSent | InvoicePaid):
        await catalog.react(event, lineage)  # the catalog's invoice emails: no state needed
    if isinstance(event, InvoiceSent | InvoicePaid | InvoiceVoided | InvoiceDueDateChanged):
        # ...and the invoice's schedule of reminders: state per invoice, on its partition.
        invoice = RoutedInvoice(lineage=lineage, event=event)
        await topics.invoices.send(key=invoice_key(event).encode(), value=invoice.model_dump_json().encode())
        return
    if not isinstance(event, PaymentSucceeded):
        return  # payment.failed: valid, and nothing counts on it
    routed = RoutedPayment(lineage=lineage, event=event)
    key = customer_key(event.shop_id, event.customer.customer_id)
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
