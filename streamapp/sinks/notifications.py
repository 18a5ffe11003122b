"""The admin notification and toast sinks: rows of the ``notifications`` table, once per action.

A notification action ("notify all admins") becomes one row per admin named in
``effect.admin_ids``; a shop without admins gets one row addressed to the whole shop
(``admin_id`` NULL). A toast becomes one shop-wide row with an ``expires_at``; an already
expired toast is still recorded (the default listing hides it), so that a worker
catching up on a backlog leaves the same rows as one that kept up.

Idempotence is per action, not per row: **the first delivery that writes an action's rows
decides who is notified**. A later delivery of the same ``action_id`` inserts nothing and
returns ``"duplicate"``, even if its ``admin_ids`` differ. Identical redeliveries (the
normal case: Kafka delivering the same message again) are covered by the table's unique
``(action_id, admin_id)`` alone. Differing lists only arise when the rule engine decides an
action again after the shop's admins changed (a replay); inserting "the missing admins"
then would notify new admins about old events, and would give an admin two copies when the
first delivery was shop-wide (no admins yet), because an admin's list also shows the
shop-wide rows. So a replay adds nothing.

To make "the first delivery decides" exact when two workers deliver the same action at the
same moment with different lists, each delivery takes a transaction-scoped advisory lock
on the action (two-key form, namespaced by :data:`LOCK_NAMESPACE`) before looking for
existing rows; READ COMMITTED gives the insert after the lock a fresh snapshot that sees
what the previous holder committed. A hash collision between two action ids only makes
them wait for each other for one short transaction.

Neither sink returns ``"failed"``; a database error propagates (see :mod:`streamapp.sinks.base`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import ClassVar, Literal

import asyncpg

from schemas.actions import Action, NotificationEffect, ToastEffect
from streamapp.sinks.base import Outcome, PreviewContext, Sink, effect_of

logger = logging.getLogger(__name__)

Kind = Literal["notification", "toast"]

#: First key of the advisory lock, so these locks never meet another feature's
#: (``b"notf"`` as a 32-bit integer; the second key is the hash of the action id).
LOCK_NAMESPACE = 0x6E6F7466

_LOCK = "SELECT pg_advisory_xact_lock($1::int, hashtext($2))"
# One statement for all of the action's rows. The NOT EXISTS is the per-action rule (see the
# module docstring); ON CONFLICT is the table's own guarantee, kept as the last word.
_INSERT = """
INSERT INTO notifications
    (action_id, shop_id, admin_id, kind, rule_key, title, text, occurred_at, expires_at)
SELECT $1, $2, recipient.admin_id, $3, $4, $5, $6, $7, $8
FROM unnest($9::text[]) AS recipient (admin_id)
WHERE NOT EXISTS (SELECT 1 FROM notifications WHERE action_id = $1)
ON CONFLICT ON CONSTRAINT notifications_once DO NOTHING
RETURNING notification_id
"""


async def _insert_once(
    pool: asyncpg.Pool,
    action: Action,
    *,
    kind: Kind,
    recipients: list[str | None],
    template_key: str,
    title: str,
    text: str,
    expires_at: datetime | None,
) -> int:
    """Insert one row per recipient unless the action has rows already; the number inserted."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK, LOCK_NAMESPACE, action.action_id)
        inserted = await conn.fetch(
            _INSERT,
            action.action_id,
            action.shop_id,
            kind,
            template_key,
            title,
            text,
            action.occurred_at,
            expires_at,
            recipients,
        )
    return len(inserted)


class NotificationSink(Sink):
    """Notifies the shop's admins: one row per admin, or one shop-wide row when it has none."""

    channel: ClassVar[str] = "notification"

    @classmethod
    def preview(cls, action: Action, context: PreviewContext) -> str:
        """Who is notified, the title and the text."""
        effect = effect_of(action, NotificationEffect)
        audience = (
            f"each admin ({', '.join(effect.admin_ids)})" if effect.admin_ids else "the shop (no admins configured)"
        )
        return f"To: {audience}\nTitle: {effect.title}\n\n{effect.text}\n"

    async def deliver(self, action: Action) -> Outcome:
        effect = effect_of(action, NotificationEffect)
        # dict.fromkeys: an admin named twice is notified once (the unique key would refuse it anyway).
        recipients: list[str | None] = list(dict.fromkeys(effect.admin_ids)) or [None]
        inserted = await _insert_once(
            self.pool,
            action,
            kind="notification",
            recipients=recipients,
            template_key=effect.template_key,
            title=effect.title,
            text=effect.text,
            expires_at=None,
        )
        if not inserted:
            logger.info("notification %s already delivered", action.action_id)
            return "duplicate"
        logger.info(
            "notification %s delivered to shop %s: %d row(s)%s",
            action.action_id,
            action.shop_id,
            inserted,
            "" if effect.admin_ids else " (no admins: shop-wide)",
        )
        return "applied"


class ToastSink(Sink):
    """Shows a short-lived toast on the shop's dashboard: one shop-wide row with its expiry."""

    channel: ClassVar[str] = "toast"

    @classmethod
    def preview(cls, action: Action, context: PreviewContext) -> str:
        """The title, the text, and how long it shows after the event."""
        effect = effect_of(action, ToastEffect)
        shown = effect.expires_at - action.occurred_at
        return f"Toast: {effect.title}\n{effect.text}\n(shown for {_duration(shown)} after the event)\n"

    async def deliver(self, action: Action) -> Outcome:
        effect = effect_of(action, ToastEffect)
        inserted = await _insert_once(
            self.pool,
            action,
            kind="toast",
            recipients=[None],
            template_key=effect.template_key,
            title=effect.title,
            text=effect.text,
            expires_at=effect.expires_at,
        )
        if not inserted:
            logger.info("toast %s already shown", action.action_id)
            return "duplicate"
        logger.info("toast %s shown to shop %s until %s", action.action_id, action.shop_id, effect.expires_at)
        return "applied"


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} seconds"
