"""Which sink performs each channel: the one list a worker builds its sinks from.

Adding a channel is one line here (see the README, "Adding a channel"). A channel of
:data:`schemas.actions.Effect` missing here is dead-lettered by the worker ("no sink for
channel"); two sinks for one channel refuse to start.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from streamapp.settings import Settings
from streamapp.sinks.alerts import AlertSink
from streamapp.sinks.base import Sink
from streamapp.sinks.email import EmailSink
from streamapp.sinks.ledger import LedgerSink
from streamapp.sinks.notifications import NotificationSink, ToastSink
from streamapp.sinks.payment_link import PaymentLinkSink
from streamapp.sinks.sms import SmsSink

#: Builds one sink from the worker's pool and settings.
SinkFactory = Callable[[asyncpg.Pool, Settings], Sink]


def _database_only(kind: Callable[[asyncpg.Pool], Sink]) -> SinkFactory:
    """A sink that needs nothing but PostgreSQL."""
    return lambda pool, _settings: kind(pool)


#: Every sink a worker runs, one line each, keyed by its ``channel`` when built.
SINKS: tuple[SinkFactory, ...] = (
    _database_only(LedgerSink),
    _database_only(AlertSink),
    _database_only(NotificationSink),
    _database_only(ToastSink),
    EmailSink.build,
    SmsSink.build,
    PaymentLinkSink.build,
)


def build_sinks(pool: asyncpg.Pool, settings: Settings) -> dict[str, Sink]:
    """One sink per channel; a ValueError when two sinks claim one channel. Close each when done."""
    sinks: dict[str, Sink] = {}
    for make in SINKS:
        sink = make(pool, settings)
        if sink.channel in sinks:
            raise ValueError(f"two sinks for channel {sink.channel!r}")
        sinks[sink.channel] = sink
    return sinks
