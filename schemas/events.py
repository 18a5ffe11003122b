"""Events that upstream services produce to the ``orders``, ``job-status`` and ``payments`` topics.

Message key: ``<shop_id>:<customer_id>`` (UTF-8; a lead has no customer yet:
``<shop_id>:<lead_id>``). streamapp reads the ids from the value, so a wrong or
missing key costs at most an extra hop, never correctness.
Value: one JSON object, discriminated by ``type``. Unknown fields are ignored (a
producer may add fields before streamapp reads them); a missing or invalid field
sends the message to ``dead-letters`` with the reason.

Statuses are the shop's own words; those that have rules of their own (see
:data:`ART_APPROVAL_SENT`, :data:`IN_PRODUCTION`, :data:`COMPLETED_ORDER`) compare
case-insensitively, and the event must then carry what their messages link to.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, Field, model_validator

from schemas.common import Currency, Email, Identifier, Incoming, Name, Phone

#: A link shown to customers: absolute http(s) URL.
Url = Annotated[str, Field(pattern=r"^https?://[^\s]{1,2000}$", max_length=2048)]
#: Free text written by a person (a decline reason, notes, a lead's message).
Text = Annotated[str, Field(max_length=4000)]

ART_APPROVAL_SENT = "Art Approval Sent"
IN_PRODUCTION = "In Production"
COMPLETED_ORDER = "Completed Order"


def same_status(a: str | None, b: str) -> bool:
    """Whether two status names are the same status (case and spacing aside)."""
    return a is not None and " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


class Customer(Incoming):
    """The customer an event is about, as the shop knows them at that moment."""

    customer_id: Identifier
    name: Name
    email: Email
    phone: Phone | None = Field(None, description="E.164, e.g. +15551234567; SMS rules need it.")


class EventBase(Incoming):
    """Fields every event carries."""

    event_id: Identifier = Field(description="Unique per event; a redelivery carries the same id.")
    shop_id: Identifier
    occurred_at: AwareDatetime = Field(description="When it happened at the source (RFC 3339 with offset).")


# -- payments ------------------------------------------------------------------------------------
class PaymentBase(EventBase):
    """Fields every payment event carries."""

    customer: Customer
    order_id: Identifier
    payment_id: Identifier
    amount_cents: int = Field(ge=0)
    currency: Currency = "USD"


class PaymentSucceeded(PaymentBase):
    """A payment for an order was captured. Counts towards the customer's order count once per order."""

    type: Literal["payment.succeeded"]


class PaymentFailed(PaymentBase):
    """A payment attempt failed. Recorded for completeness; it never counts."""

    type: Literal["payment.failed"]
    reason: Annotated[str, Field(max_length=500)] = ""


class Invoice(Incoming):
    """An invoice as the shop sent it."""

    invoice_id: Identifier
    invoice_number: Name
    invoice_url: Url = Field(description="Where the customer views (and pays) it.")
    total_due_cents: int = Field(ge=0)
    currency: Currency = "USD"
    due_date: date | None = Field(None, description="Calendar date in the shop's time zone; null: due on receipt.")


class InvoiceSent(EventBase):
    """An invoice was marked as Sent."""

    type: Literal["invoice.sent"]
    customer: Customer
    invoice: Invoice


class InvoicePaid(EventBase):
    """An invoice was marked as Paid (``occurred_at`` is when)."""

    type: Literal["invoice.paid"]
    customer: Customer
    invoice: Invoice
    amount_paid_cents: int = Field(ge=0)


class InvoiceVoided(EventBase):
    """An invoice was voided: nothing more is asked for it."""

    type: Literal["invoice.voided"]
    customer: Customer
    invoice_id: Identifier


class InvoiceDueDateChanged(EventBase):
    """An invoice's due date changed: its reminders that have not gone out move with it."""

    type: Literal["invoice.due_date_changed"]
    customer: Customer
    invoice_id: Identifier
    due_date: date = Field(description="The new due date, a calendar date in the shop's time zone.")


#: The events that change an invoice's state (and so its schedule of reminders).
InvoiceEvent = InvoiceSent | InvoicePaid | InvoiceVoided | InvoiceDueDateChanged

PaymentsEvent = Annotated[
    PaymentSucceeded | PaymentFailed | InvoiceSent | InvoicePaid | InvoiceVoided | InvoiceDueDateChanged,
    Field(discriminator="type"),
]


# -- orders --------------------------------------------------------------------------------------
class OrderSubmitted(EventBase):
    """A customer submitted a new order."""

    type: Literal["order.submitted"]
    customer: Customer
    order_id: Identifier
    order_number: Name
    total_cents: int = Field(ge=0)
    currency: Currency = "USD"
    portal_url: Url = Field(description="The customer's portal, where the order can be followed.")


class Job(Incoming):
    """A production job."""

    job_id: Identifier
    job_number: Name
    job_name: Name


class ReorderRequested(EventBase):
    """A customer asked, through the portal, to reorder a past job."""

    type: Literal["reorder.requested"]
    customer: Customer
    job: Job = Field(description="The job to be made again.")
    notes: Text = ""


class Lead(Incoming):
    """A prospective customer."""

    lead_id: Identifier
    name: Name
    email: Email | None = None
    phone: Phone | None = None
    message: Text = ""


class LeadCreated(EventBase):
    """A lead was created, from the website's form or by hand."""

    type: Literal["lead.created"]
    lead: Lead
    source: Literal["website", "manual"]


OrdersEvent = Annotated[OrderSubmitted | ReorderRequested | LeadCreated, Field(discriminator="type")]


# -- job-status ----------------------------------------------------------------------------------
class JobEvent(EventBase):
    """Fields every job event carries."""

    customer: Customer
    job: Job


class InvoiceRef(Incoming):
    """The invoice of a job."""

    invoice_number: Name
    invoice_url: Url


class JobStatusChanged(JobEvent):
    """A job moved from one status to another.

    Moving to "Art Approval Sent" needs ``review_url``; to "Completed Order", ``invoice``.
    """

    type: Literal["job.status_changed"]
    from_status: Name | None = Field(None, description="null for a job's first status.")
    to_status: Name
    portal_url: Url
    review_url: Url | None = Field(None, description="Artwork review link; required for Art Approval Sent.")
    invoice: InvoiceRef | None = Field(None, description="The job's invoice; required for Completed Order.")

    @model_validator(mode="after")
    def _status_needs(self) -> Self:
        if same_status(self.to_status, ART_APPROVAL_SENT) and self.review_url is None:
            raise ValueError(f"review_url is required when to_status is {ART_APPROVAL_SENT!r}")
        if same_status(self.to_status, COMPLETED_ORDER) and self.invoice is None:
            raise ValueError(f"invoice is required when to_status is {COMPLETED_ORDER!r}")
        return self


class ArtworkDeclined(JobEvent):
    """The customer declined the artwork of a job."""

    type: Literal["artwork.declined"]
    reason: Text = ""


class ArtworkResubmitted(JobEvent):
    """Updated artwork was sent for approval again after a decline."""

    type: Literal["artwork.resubmitted"]
    review_url: Url


class TrackingAdded(JobEvent):
    """Tracking numbers were added to a shipped job."""

    type: Literal["job.tracking_added"]
    carrier: Name
    tracking_numbers: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1)]
    portal_url: Url


JobStatusEvent = Annotated[
    JobStatusChanged | ArtworkDeclined | ArtworkResubmitted | TrackingAdded,
    Field(discriminator="type"),
]

#: Every event that catalog rules react to.
CatalogEvent = (
    OrderSubmitted
    | ReorderRequested
    | LeadCreated
    | JobStatusChanged
    | ArtworkDeclined
    | ArtworkResubmitted
    | TrackingAdded
    | InvoiceSent
    | InvoicePaid
)
#: Any catalog event, discriminated by ``type`` (what ``streamapp preview --event`` reads).
AnyCatalogEvent = Annotated[CatalogEvent, Field(discriminator="type")]
