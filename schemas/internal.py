"""streamapp's internal repartition topic: events re-keyed by customer, with their lineage.

Topic ``<app_id>-payments-by-customer``, key ``<shop_id>:<customer_id>``. Written
and read only by streamapp workers; documented for operators, not a public contract.
"""

from __future__ import annotations

from schemas.actions import Lineage
from schemas.common import Outgoing
from schemas.events import PaymentSucceeded


class RoutedPayment(Outgoing):
    """A valid ``payment.succeeded`` event on its way to the customer's partition."""

    lineage: Lineage
    event: PaymentSucceeded
