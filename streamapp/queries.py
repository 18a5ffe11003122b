"""Read helpers over the sinks' tables, for the CLI and the dashboard.

Each takes an ``asyncpg.Pool`` or a connection: both have the same fetch methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class Queryable(Protocol):
    """What the helpers need: an ``asyncpg.Pool``, ``Connection`` or pooled connection."""

    async def fetch(self, query: str, *args: object) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: object) -> Any: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert on a shop's dashboard."""

    alert_id: int
    action_id: str
    shop_id: str
    customer_id: str | None
    rule_id: str
    text: str
    occurred_at: datetime
    created_at: datetime
    read_at: datetime | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to one email (later SMS) action."""

    action_id: str
    channel: str
    shop_id: str
    customer_id: str | None
    recipient: str
    status: str
    attempts: int
    last_error: str | None
    provider_message_id: str | None
    created_at: datetime
    updated_at: datetime


async def ledger_balance(db: Queryable, shop_id: str, customer_id: str) -> int:
    """The customer's credit in cents: the sum of their ledger entries, 0 if none.

    Assumes a shop credits in one currency; entries of several currencies would be added up as is.
    """
    total: Any = await db.fetchval(
        "SELECT coalesce(sum(amount_cents), 0)::bigint FROM ledger_entries WHERE shop_id = $1 AND customer_id = $2",
        shop_id,
        customer_id,
    )
    return int(total)


async def list_alerts(db: Queryable, shop_id: str, limit: int = 100) -> list[Alert]:
    """The shop's latest ``limit`` alerts, newest first."""
    rows = await db.fetch(
        "SELECT alert_id, action_id, shop_id, customer_id, rule_id, text, occurred_at, created_at, read_at "
        "FROM alerts WHERE shop_id = $1 ORDER BY created_at DESC, alert_id DESC LIMIT $2",
        shop_id,
        limit,
    )
    return [Alert(**dict(row)) for row in rows]


async def get_delivery(db: Queryable, action_id: str) -> Delivery | None:
    """The delivery row of ``action_id``, None if it was never delivered."""
    row = await db.fetchrow(
        "SELECT action_id, channel, shop_id, customer_id, recipient, status, attempts, last_error, "
        "provider_message_id, created_at, updated_at FROM deliveries WHERE action_id = $1",
        action_id,
    )
    return None if row is None else Delivery(**dict(row))
