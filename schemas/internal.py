"""streamapp's internal topics: events re-keyed for a table, with their lineage, and clock ticks.

``<app_id>-payments-by-customer`` (key ``<shop_id>:<customer_id>``) and
``<app_id>-invoices`` (key ``<shop_id>:<invoice_id>``; ticks have no key and go to
every partition). Written and read only by streamapp workers; documented for
operators, not a public contract.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.actions import Lineage
from schemas.common import Identifier, Outgoing
from schemas.events import InvoiceDueDateChanged, InvoicePaid, InvoiceSent, InvoiceVoided, PaymentSucceeded


class RoutedPayment(Outgoing):
    """A valid ``payment.succeeded`` event on its way to the customer's partition."""

    lineage: Lineage
    event: PaymentSucceeded


class RoutedInvoice(Outgoing):
    """An invoice event on its way to the invoice's partition."""

    kind: Literal["event"] = "event"
    lineage: Lineage
    event: Annotated[InvoiceSent | InvoicePaid | InvoiceVoided | InvoiceDueDateChanged, Field(discriminator="type")]


class Tick(Outgoing):
    """The clock: "it is now ``now``", sent to every partition of ``<app_id>-invoices``.

    Time reaches the invoice table as messages, in order with the invoice events of each
    partition: a tick is processed once per partition (at least once, with the same id
    when redelivered), and tests drive a controlled clock by sending their own.
    """

    kind: Literal["tick"] = "tick"
    tick_id: Identifier
    now: AwareDatetime


InvoicesMessage = Annotated[RoutedInvoice | Tick, Field(discriminator="kind")]
