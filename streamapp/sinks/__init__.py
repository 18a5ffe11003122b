"""Sinks: perform the effects of actions, idempotent on ``action_id`` (see :mod:`streamapp.sinks.base`)."""

from __future__ import annotations

from streamapp.sinks.alerts import AlertSink
from streamapp.sinks.base import Outcome, Sink
from streamapp.sinks.email import EmailSink
from streamapp.sinks.ledger import LedgerSink
from streamapp.sinks.notifications import NotificationSink, ToastSink
from streamapp.sinks.payment_link import PaymentLinkSink
from streamapp.sinks.sms import SmsSink

__all__ = [
    "AlertSink",
    "EmailSink",
    "LedgerSink",
    "NotificationSink",
    "Outcome",
    "PaymentLinkSink",
    "Sink",
    "SmsSink",
    "ToastSink",
]
