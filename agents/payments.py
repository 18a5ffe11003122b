"""Consumes ``payments``: Order Count Events.

Two consumers, each alone on its input, because each updates a table or emits messages
(faust-streaming #606: with more, a commit can pass an in-flight message):

1. ``route_payments`` takes ``payments`` a batch at a time, below Faust's streams
   (:mod:`streamapp.batches`: every message is acked only once the broker has confirmed all
   the batch's records). It decodes each message; bad input goes to ``dead-letters`` with the
   reason and the original bytes. A valid ``payment.succeeded`` keyed by its customer
   (``<shop_id>:<customer_id>``, the topic contract) on the partition the default partitioner
   gives that key is counted right here: its partition is the customer's partition of the
   ``order-counts`` table. Any other ``payment.succeeded`` (keyed otherwise, or placed by
   another partitioner) is re-keyed by customer onto the internal
   ``<app_id>-payments-by-customer`` topic and counted from there, and counted in
   ``streamapp_payments_rekeyed``. ``invoice.sent`` and ``invoice.paid`` go to the automation
   catalog (``judge_catalog_event``), and every invoice event is re-keyed by invoice onto
   ``<app_id>-invoices`` (``agents/invoices.py``).
2. ``count_orders``, a batch path too, counts the re-keyed payments.

Both count a customer's distinct paid orders in the changelog-backed ``order-counts`` table
(its values fenced on both source topics: :mod:`streamapp.tables`) and publish the actions of
the rules that fire.
"""

from __future__ import annotations

import asyncio

from aiokafka.partitioner import murmur2
from faust.types import Message
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
from streamapp.agent_steps import action_record, decode_or_dead_letter, judge_catalog_event, wait_for_config
from streamapp.app import app, runtime
from streamapp.batches import Effects, raw_channel, run_batches
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
#: Held by a batch that writes ``order-counts`` from its first write until its records are confirmed
#: (:func:`streamapp.batches.run_batches`), so that neither consumer ever reads the other's writes
#: before they are on the changelog: the changelog stays a prefix of the writes, and a restore never
#: holds a count without the markers (or the earlier counts) it was built on. Without it, a worker
#: killed between the two confirmations lost a credit: a re-keyed payment counted on top of a batch
#: whose records never reached the broker, and the replay counted that batch's orders again.
order_counts_writes = asyncio.Lock()


payments_in = raw_channel(app, topics.payments)


@app.task  # type: ignore[untyped-decorator]
async def route_payments() -> None:
    """``payments``, a batch at a time (:mod:`streamapp.batches`: acked once its effects are confirmed)."""
    await run_batches(app, payments_in, _route_batch, lock=order_counts_writes)


async def _route_batch(messages: list[Message], effects: Effects) -> None:
    found = []
    for message in messages:
        decoded = await decode_or_dead_letter(message, _payments, PAYMENT_TYPES)
        if decoded is not None:
            found.append((message, *decoded))
    if not found:
        return
    # One wait for the batch: shop-config as fresh as its latest event is as fresh as each event.
    latest = max(found, key=lambda item: item[1].occurred_at)
    await wait_for_config(latest[1].occurred_at, f"event_id={latest[1].event_id} (and the events before it)")
    for message, event, lineage in found:
        if isinstance(event, PaymentSucceeded) and _counted_here(message, event):
            await _count_in_batch(message, event, lineage, effects)
        else:
            await _route(event, lineage)


def _counted_here(message: Message, event: PaymentSucceeded) -> bool:
    """Whether ``message`` is on its customer's partition of ``order-counts``: keyed by the customer
    (the topic contract) on the partition the default partitioner gives that key."""
    key = customer_key(event.shop_id, event.customer.customer_id).encode()
    return message.key == key and message.partition == customer_partition(key, runtime.settings.topic_partitions)


async def _count_in_batch(message: Message, event: PaymentSucceeded, lineage: Lineage, effects: Effects) -> None:
    """Count ``event`` on its customer's partition (``message``'s) and decide the rules that fire: the
    table's changelog records and the actions go to the batch's ``effects``."""
    counted = apply_payment(order_counts.data.get, event)
    for key, state in counted.writes:
        effects.add(order_counts.write(message, key, state))
    if counted.count is None:
        return
    for action in decide(event, counted.count, runtime.shop_config.store.view(event.shop_id), lineage):
        effects.add(action_record(action))


async def _route(event: PaymentsEventT, lineage: Lineage) -> None:
    """An event the batch does not count itself: an invoice event, a failed payment, a payment
    that is not on its customer's partition (re-keyed)."""
    if isinstance(event, InvoiceSent | InvoicePaid):
        await judge_catalog_event(event, lineage)  # the catalog's invoice emails: no state needed
    if isinstance(event, InvoiceSent | InvoicePaid | InvoiceVoided | InvoiceDueDateChanged):
        # ...and the invoice's schedule of reminders: state per invoice, on its partition.
        invoice = RoutedInvoice(lineage=lineage, event=event)
        await topics.invoices.send(key=invoice_key(event).encode(), value=invoice.model_dump_json().encode())
        return
    if not isinstance(event, PaymentSucceeded):
        return  # payment.failed: valid, and nothing counts on it
    runtime.metrics.payments_rekeyed.inc()
    routed = RoutedPayment(lineage=lineage, event=event)
    key = customer_key(event.shop_id, event.customer.customer_id).encode()
    await topics.payments_by_customer.send(key=key, value=routed.model_dump_json().encode())


def customer_partition(key: bytes, partitions: int) -> int:
    """The partition the default partitioner (Kafka's Java client's, aiokafka's, Faust's) gives ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


rekeyed_in = raw_channel(app, topics.payments_by_customer)


@app.task  # type: ignore[untyped-decorator]
async def count_orders() -> None:
    """The re-keyed payments, a batch at a time, counted as ``route_payments`` counts (one table lock)."""
    await run_batches(app, rekeyed_in, _count_batch, lock=order_counts_writes)


async def _count_batch(messages: list[Message], effects: Effects) -> None:
    # Internal input, written by route_payments: a value that is not a RoutedPayment is a bug, which
    # raises and stops the worker with the batch handed back.
    routed = [(message, RoutedPayment.model_validate_json(message.value or b"")) for message in messages]
    latest = max((payment.event for _, payment in routed), key=lambda event: event.occurred_at)
    await wait_for_config(latest.occurred_at, f"event_id={latest.event_id} (and the events before it)")
    for message, payment in routed:
        await _count_in_batch(message, payment.event, payment.lineage, effects)
