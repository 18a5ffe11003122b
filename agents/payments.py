"""Consumes ``payments``: Order Count Events.

Two agents, each ``concurrency=1`` because each updates a table or emits
messages (faust-streaming #606: with more, a commit can pass an in-flight message):

1. ``route_payments`` decodes each message. Bad input goes to ``dead-letters``
   with the reason and the original bytes; a valid ``payment.succeeded`` is
   re-keyed by customer onto the internal ``<app_id>-payments-by-customer`` topic;
   ``invoice.sent`` and ``invoice.paid`` go to the automation catalog (``judge_catalog_event``),
   and every invoice event is re-keyed by invoice onto ``<app_id>-invoices`` (``agents/invoices.py``).
2. ``count_orders`` counts each customer's distinct paid orders in a
   changelog-backed table and publishes the actions of the rules that fire.
"""

from __future__ import annotations

from faust import StreamT
from pydantic import TypeAdapter

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
from streamapp.agent_steps import decode_or_dead_letter, judge_catalog_event, publish, wait_for_config
from streamapp.app import app, runtime
from streamapp.rules.invoice_schedule import invoice_key
from streamapp.rules.order_count import apply_payment, customer_key, decide
from streamapp.tables import fenced_table

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

PaymentsEventT = PaymentSucceeded | PaymentFailed | InvoiceSent | InvoicePaid | InvoiceVoided | InvoiceDueDateChanged
_payments = TypeAdapter[PaymentsEventT](PaymentsEvent)
topics = runtime.topics

#: ``<shop_id>:<customer_id>`` -> ``{"count": n}``, and ``<shop_id>:<customer_id>/<order_id>`` -> the order's
#: marker ``{"event_id": e, "count": n}`` (see :mod:`streamapp.rules.order_count`).
order_counts = fenced_table(app, "order-counts", partitions=runtime.settings.topic_partitions)


@app.agent(topics.payments, concurrency=1)
async def route_payments(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        found = await decode_or_dead_letter(event.message, _payments, PAYMENT_TYPES)
        if found is not None:
            await _route(*found)


async def _route(event: PaymentsEventT, lineage: Lineage) -> None:
    if isinstance(event, InvoiceSent | InvoicePaid):
        await judge_catalog_event(event, lineage)  # the catalog's invoice emails: no state needed
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
        counted = apply_payment(order_counts.get, event)
        for key, state in counted.writes:
            order_counts[key] = state
        if counted.count is None:
            continue
        await wait_for_config(event.occurred_at, f"event_id={event.event_id}")
        for action in decide(event, counted.count, runtime.shop_config.store.view(event.shop_id), routed.lineage):
            await publish(action)
