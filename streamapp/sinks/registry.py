"""Which sink performs each channel: the one list a worker builds its sinks from.

Adding a channel is one line here (see the README, "Adding a channel"). A channel of
:data:`schemas.actions.Effect` missing here is dead-lettered by the worker ("no sink for
channel"); two sinks for one channel refuse to start.
"""

from __future__ import annotations

import asyncpg

from streamapp.settings import Settings
from streamapp.sinks.alerts import AlertSink
from streamapp.sinks.base import Sink
from streamapp.sinks.email import EmailSink
from streamapp.sinks.ledger import LedgerSink
from streamapp.sinks.notifications import NotificationSink, ToastSink
from streamapp.sinks.payment_link import PaymentLinkSink
from streamapp.sinks.sms import SmsSink

#: Every sink a worker runs, one line each: its class, which performs ``channel``, is
#: built by ``build(pool, settings)`` and says what it would send by ``preview``.
SINKS: tuple[type[Sink], ...] = (
    LedgerSink,
    AlertSink,
    NotificationSink,
    ToastSink,
    EmailSink,
    SmsSink,
    PaymentLinkSink,
)


def sink_class(channel: str) -> type[Sink] | None:
    """The class of the sink that performs ``channel``, without building it; None if none does."""
    return next((kind for kind in SINKS if kind.channel == channel), None)


def build_sinks(pool: asyncpg.Pool, settings: Settings) -> dict[str, Sink]:
    """One sink per channel; a ValueError when two sinks claim one channel. Close each when done."""
    sinks: dict[str, Sink] = {}
    for kind in SINKS:
        if kind.channel in sinks:
            raise ValueError(f"two sinks for channel {kind.channel!r}")
        sinks[kind.channel] = kind.build(pool, settings)
    return sinks
