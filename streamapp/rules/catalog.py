"""The print-shop automation catalog: every automatic trigger, its channel and variables.

One table of data, read by the code: not 24 code paths. Each rule has the stable
key of the product document, the trigger that fires it, the channel it speaks on,
whether it is on by default, and the variables its templates may use (with a
description and an example, which double as preview and validation data).
Default templates live in ``templates/<channel>/<key>/``.

The event-driven triggers are issue 5's; the time-based ones (``invoice.*_due``,
``invoice.overdue_*``) and Stripe payment links are issue 6's and are listed here
so the catalog is whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from schemas.actions import RENDERED

#: A channel catalog rules speak on: one of :data:`PARTS`.
Channel = str

#: Template parts per channel, each a file ``<part>.j2`` in the rule's folder: what each effect
#: of :data:`schemas.actions.RENDERED` declares, so a new channel adds itself.
PARTS: dict[Channel, tuple[str, ...]] = {channel: kind.PARTS for channel, kind in RENDERED.items()}

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True)
class Variable:
    """A variable a template may use."""

    name: str
    description: str
    example: str


@dataclass(frozen=True)
class Trigger:
    """What fires a rule: an event type (and, for status changes, the status it moves to).

    ``scheduled`` triggers fire from the passing of time (invoice reminders), not from
    an event; ``needs`` names an integration the rule cannot work without.
    """

    key: str
    description: str
    variables: tuple[Variable, ...]
    to_status: str | None = None
    scheduled: bool = False
    needs: Literal["stripe"] | None = None


@dataclass(frozen=True)
class CatalogRule:
    """One automatic rule of the catalog."""

    key: str
    description: str
    trigger: Trigger
    channel: Channel
    on_by_default: bool

    def __post_init__(self) -> None:
        if self.channel not in PARTS:
            raise ValueError(f"{self.key}: no channel {self.channel!r}; catalog rules speak on {', '.join(PARTS)}")

    def template_path(self, part: str) -> Path:
        """The default template file of ``part`` (see :data:`PARTS`)."""
        return TEMPLATES_DIR / self.channel / self.key / f"{part}.j2"


def _v(name: str, description: str, example: str) -> Variable:
    return Variable(name, description, example)


SHOP_NAME = _v("shop_name", "The shop's display name", "Acme Print Co.")
CUSTOMER_NAME = _v("customer_name", "The customer's name", "Ann Lee")
CUSTOMER_EMAIL = _v("customer_email", "The customer's email address", "ann@example.com")
PORTAL_LINK = _v("portal_link", "Link to the customer's portal", "https://acme.example/portal/c-42")
JOB = (
    _v("job_number", "The job's number", "J-1042"),
    _v("job_name", "The job's name", "500 business cards"),
)
INVOICE = (
    _v("invoice_number", "The invoice's number", "INV-2031"),
    _v("invoice_link", "Link to view the invoice", "https://acme.example/invoices/INV-2031"),
    _v("total_due", "Amount due, formatted", "$420.00"),
    _v("due_date", "Due date, in the shop's time zone", "December 15, 2026"),
)
CUSTOMER = (SHOP_NAME, CUSTOMER_NAME, CUSTOMER_EMAIL)

ORDER_SUBMITTED = Trigger(
    "order.submitted",
    "A customer submitted a new order",
    (
        *CUSTOMER,
        PORTAL_LINK,
        _v("order_number", "The order's number", "O-5531"),
        _v("order_total", "The order's total, formatted", "$129.00"),
    ),
)


def _status_vars(from_status: str, to_status: str) -> tuple[Variable, ...]:
    """The variables of a status change; the examples are a move from ``from_status`` to ``to_status``."""
    return (
        *CUSTOMER,
        PORTAL_LINK,
        *JOB,
        _v("from_status", "The status the job left (empty for a job's first status)", from_status),
        _v("to_status", "The status the job entered", to_status),
    )


STATUS_VARS = _status_vars("Art Approval Sent", "In Production")
JOB_STATUS_CHANGED = Trigger("job.status_changed", "A job's status changed", STATUS_VARS)
ART_APPROVAL_SENT = Trigger(
    "job.status_changed",
    'A job moved to "Art Approval Sent"',
    (
        *_status_vars("Order Received", "Art Approval Sent"),
        _v("review_link", "Link to review and approve the artwork", "https://acme.example/art/J-1042"),
    ),
    to_status="Art Approval Sent",
)
IN_PRODUCTION = Trigger("job.status_changed", 'A job moved to "In Production"', STATUS_VARS, to_status="In Production")
COMPLETED = Trigger(
    "job.status_changed",
    'A job moved to "Completed Order"',
    (*_status_vars("In Production", "Completed Order"), *INVOICE[:2]),
    to_status="Completed Order",
)
ART_DECLINED = Trigger(
    "artwork.declined",
    "The customer declined the artwork",
    (
        SHOP_NAME,
        CUSTOMER_NAME,
        *JOB,
        _v("decline_reason", "What the customer said", "Please make the logo bigger"),
    ),
)
ART_RESUBMITTED = Trigger(
    "artwork.resubmitted",
    "Artwork re-submitted for approval after a decline",
    (
        *CUSTOMER,
        *JOB,
        _v("review_link", "Link to review and approve the artwork", "https://acme.example/art/J-1042"),
    ),
)
TRACKING_ADDED = Trigger(
    "job.tracking_added",
    "Tracking numbers were added to a job",
    (
        *CUSTOMER,
        PORTAL_LINK,
        *JOB,
        _v("carrier", "The shipping carrier", "UPS"),
        _v("tracking_numbers", "Tracking numbers, comma-separated", "1Z999AA10123456784"),
    ),
)
INVOICE_SENT = Trigger("invoice.sent", "An invoice was marked as Sent", (*CUSTOMER, *INVOICE))
INVOICE_PAID = Trigger(
    "invoice.paid",
    "An invoice was marked as Paid",
    (
        *CUSTOMER,
        *INVOICE[:2],
        _v("amount_paid", "Amount paid, formatted", "$420.00"),
        _v("paid_on", "Payment date, in the shop's time zone", "December 2, 2026"),
    ),
)
PAYMENT_LINK = Trigger(
    "invoice.sent",
    "An unpaid invoice was sent: offer a Stripe Checkout link",
    (
        *CUSTOMER,
        *INVOICE,
        _v("payment_link", "Stripe Checkout link for the invoice", "https://checkout.stripe.com/c/pay/cs_test_123"),
    ),
    needs="stripe",
)
DUE_SOON = Trigger(
    "invoice.due_soon",
    "An invoice's due date is near (days are shop configuration)",
    (
        *CUSTOMER,
        *INVOICE,
        _v("days_until_due", "Days until the due date", "3"),
    ),
    scheduled=True,
)


def _overdue(key: str, description: str, days: int) -> Trigger:
    variables = (*CUSTOMER, *INVOICE, _v("days_overdue", "Days past the due date", str(days)))
    return Trigger(key, description, variables, scheduled=True)


OVERDUE = _overdue("invoice.overdue", "An invoice is past its due date", 1)
OVERDUE_30 = _overdue("invoice.overdue_30", "An invoice is 30 or more days overdue", 30)
OVERDUE_60 = _overdue("invoice.overdue_60", "An invoice is 60 or more days overdue", 60)
OVERDUE_90 = _overdue("invoice.overdue_90", "An invoice is 90 or more days overdue", 90)
LEAD_CREATED = Trigger(
    "lead.created",
    "A new lead was created, from the website or manually",
    (
        SHOP_NAME,
        _v("lead_name", "The lead's name", "Bo Chen"),
        _v("lead_email", "The lead's email address", "bo@example.com"),
        _v("lead_phone", "The lead's phone number", "+15551234567"),
        _v("lead_source", "website or manual", "website"),
        _v("lead_message", "What the lead wrote", "Quote for 200 T-shirts?"),
    ),
)
REORDER_REQUESTED = Trigger(
    "reorder.requested",
    "A customer asked to reorder through the portal",
    (
        SHOP_NAME,
        CUSTOMER_NAME,
        CUSTOMER_EMAIL,
        *JOB,
        _v("notes", "The customer's notes", "Same as last time, 1000 this time"),
    ),
)

RULES: tuple[CatalogRule, ...] = (
    CatalogRule(
        "order_received_email", "Confirm a new order with a link to the portal", ORDER_SUBMITTED, "email", True
    ),
    CatalogRule("art_approval_email", "Send the artwork review link", ART_APPROVAL_SENT, "email", True),
    CatalogRule("art_resubmit_email", "Send the updated artwork review link", ART_RESUBMITTED, "email", True),
    CatalogRule(
        "production_started_email", "Tell the customer the order is being produced", IN_PRODUCTION, "email", True
    ),
    CatalogRule("job_complete_email", "Send the invoice link of a completed job", COMPLETED, "email", True),
    CatalogRule("tracking_shipped_email", "Send shipping details and tracking numbers", TRACKING_ADDED, "email", True),
    CatalogRule(
        "status_change_email", "Send every status update with the portal link", JOB_STATUS_CHANGED, "email", False
    ),
    CatalogRule("invoice_sent_email", "Send the invoice link and total due", INVOICE_SENT, "email", True),
    CatalogRule("invoice_paid_email", "Send a payment receipt", INVOICE_PAID, "email", True),
    CatalogRule("payment_link_email", "Send a Stripe Checkout payment link", PAYMENT_LINK, "email", False),
    CatalogRule("invoice_overdue_email", "Remind about an overdue invoice", OVERDUE, "email", True),
    CatalogRule("payment_due_soon_email", "Remind that a payment is due soon", DUE_SOON, "email", False),
    CatalogRule("invoice_30day_escalation", "Stern reminder at 30 days overdue", OVERDUE_30, "email", False),
    CatalogRule(
        "invoice_60day_escalation",
        "Final notice at 60 days overdue, warning of collections",
        OVERDUE_60,
        "email",
        False,
    ),
    CatalogRule(
        "art_decline_notification", "Notify all admins that artwork was declined", ART_DECLINED, "notification", True
    ),
    CatalogRule(
        "status_change_toast", "Show a short-lived toast on every status change", JOB_STATUS_CHANGED, "toast", True
    ),
    CatalogRule("lead_new_notification", "Notify all admins of a new lead", LEAD_CREATED, "notification", True),
    CatalogRule(
        "reorder_request_received", "Notify all admins of a reorder request", REORDER_REQUESTED, "notification", True
    ),
    CatalogRule(
        "invoice_90day_admin_alert",
        "Notify all admins at 90 days overdue for manual collection",
        OVERDUE_90,
        "notification",
        True,
    ),
    CatalogRule("job_complete_sms", "Text the customer that the job is complete", COMPLETED, "sms", False),
    CatalogRule("art_approval_sms", "Text the artwork review link", ART_APPROVAL_SENT, "sms", False),
    CatalogRule("tracking_shipped_sms", "Text shipping details", TRACKING_ADDED, "sms", False),
    CatalogRule("invoice_sent_sms", "Text that an invoice was sent", INVOICE_SENT, "sms", False),
    CatalogRule("status_update_sms", "Text every status update", JOB_STATUS_CHANGED, "sms", False),
)

BY_KEY: dict[str, CatalogRule] = {rule.key: rule for rule in RULES}


def sample_variables(rule: CatalogRule) -> dict[str, str]:
    """The example value of each of ``rule``'s variables: preview and validation data."""
    return {variable.name: variable.example for variable in rule.trigger.variables}
