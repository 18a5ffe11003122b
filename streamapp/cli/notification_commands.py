"""Admin notifications and toasts: read helpers over the ``notifications`` table, and their commands.

The rows are written by :mod:`streamapp.sinks.notifications`: one per admin for a
"notify all admins" action, one shop-wide row (``admin_id`` NULL) for a toast or for a
shop without admins. What an admin sees is their own rows plus the shop-wide ones.

Read state lives on the row, so a shop-wide row has one read state for the whole
shop: when one admin marks it read, it is read for every admin. Per-admin read state
of shop-wide rows would need a table of reads; the dashboard has not asked for it.

Time comes in as ``now`` (default: the wall clock) so that toast expiry is testable
without waiting. The commands follow :mod:`streamapp.cli.shop_commands`'s conventions: bad input is
a ConfigurationError (one line, exit 2), an unreachable database a RetryableError (one
line, exit 1), results on stdout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import click

from streamapp.cli import common
from streamapp.errors import ConfigurationError
from streamapp.queries import Queryable

#: notification_id is a PostgreSQL bigint: a larger number could never name a row.
_MAX_ID = 2**63 - 1

_COLUMNS = (
    "notification_id, action_id, shop_id, admin_id, kind, rule_key, title, text, "
    "occurred_at, created_at, expires_at, read_at"
)
# "$2 IS NULL OR ...": one statement for the shop-wide view (no admin) and an admin's view
# (their rows plus the shop-wide ones).
_SCOPE = "shop_id = $1 AND ($2::text IS NULL OR admin_id = $2 OR admin_id IS NULL)"
_LIST = f"""
SELECT {_COLUMNS} FROM notifications
WHERE {_SCOPE}
  AND (NOT $3::boolean OR read_at IS NULL)
  AND ($4::boolean OR expires_at IS NULL OR expires_at > $5)
ORDER BY created_at DESC, notification_id DESC
LIMIT $6
"""  # noqa: S608 - the f-string joins constants; every value is a parameter
_OWNED = f"SELECT notification_id FROM notifications WHERE {_SCOPE} AND notification_id = ANY($3::bigint[])"  # noqa: S608
_MARK_READ = f"""
UPDATE notifications SET read_at = $4
WHERE {_SCOPE}
  AND read_at IS NULL
  AND ($3::bigint[] IS NULL OR notification_id = ANY($3))
RETURNING notification_id
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class Notification:
    """One admin notification or toast; ``admin_id`` None: addressed to the whole shop."""

    notification_id: int
    action_id: str
    shop_id: str
    admin_id: str | None
    kind: str
    rule_key: str
    title: str
    text: str
    occurred_at: datetime
    created_at: datetime
    expires_at: datetime | None
    read_at: datetime | None

    def expired(self, now: datetime) -> bool:
        """True for a toast whose time is up (notifications never expire)."""
        return self.expires_at is not None and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        """The fields, datetimes as ISO 8601 strings: what ``list --json`` prints."""
        return {
            name: value.isoformat() if isinstance(value, datetime) else value for name, value in asdict(self).items()
        }


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


async def list_notifications(
    conn: Queryable,
    shop_id: str,
    *,
    admin_id: str | None = None,
    unread_only: bool = False,
    include_expired: bool = False,
    limit: int = 50,
    now: datetime | None = None,
) -> list[Notification]:
    """The shop's latest ``limit`` notifications and toasts, newest first.

    ``admin_id`` given: that admin's list, their own rows plus the shop-wide ones; None:
    every row of the shop (each admin's copy included). Toasts that expired at ``now``
    are left out unless ``include_expired``.
    """
    rows = await conn.fetch(_LIST, shop_id, admin_id, unread_only, include_expired, _now(now), limit)
    return [Notification(**dict(row)) for row in rows]


async def mark_read(
    conn: Queryable,
    shop_id: str,
    notification_ids: Sequence[int] | None,
    admin_id: str | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """Mark notifications read; the number that were unread. ``notification_ids`` None: all of them.

    The scope is the one :func:`list_notifications` shows: the shop, or with ``admin_id``
    that admin's rows plus the shop-wide ones. Ids outside it are refused with a
    ConfigurationError naming them, and then nothing is marked. A row already read keeps
    its first ``read_at`` and is not counted.
    """
    ids = None if notification_ids is None else sorted(set(notification_ids))
    if ids is not None:
        if not ids:
            return 0
        owned = {row["notification_id"] for row in await conn.fetch(_OWNED, shop_id, admin_id, ids)}
        foreign = [str(i) for i in ids if i not in owned]
        if foreign:
            whose = f" for admin {admin_id}" if admin_id is not None else ""
            plural = "s" if len(foreign) > 1 else ""
            raise ConfigurationError(f"shop {shop_id} has no notification{plural} {', '.join(foreign)}{whose}")
    # The UPDATE is scoped by itself: the check above only names the culprits.
    marked = await conn.fetch(_MARK_READ, shop_id, admin_id, ids, _now(now))
    return len(marked)


# -- commands ----------------------------------------------------------------------------------
admin_option = click.option(
    "--admin",
    "admin",
    type=common.ID,
    default=None,
    metavar="ADMIN",
    help="Admin id: their notifications plus the shop-wide ones (default: the whole shop's).",
)


@click.group()
def notifications() -> None:
    """Admin notifications and toasts on the shop's dashboard."""
    common.quiet_libraries()


def _state(notification: Notification, now: datetime) -> str:
    if notification.expired(now):
        return "expired"
    return "unread" if notification.read_at is None else "read"


@notifications.command("list")
@common.shop_option
@admin_option
@click.option("--unread", is_flag=True, help="Only the unread ones.")
@click.option("--all", "include_expired", is_flag=True, help="Also toasts that have expired.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Newest N.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the notification records.")
def notifications_list(
    *, shop: str, admin: str | None, unread: bool, include_expired: bool, limit: int, as_json: bool
) -> None:
    """The latest notifications and toasts, newest first: id, time, recipient, kind, rule, state, title.

    Recipient "(shop)" is a shop-wide row: a toast, or a notification of a shop without admins.
    """
    settings = common.settings(database=True)
    now = datetime.now(UTC)
    found = common.run(
        common.query(
            settings,
            lambda conn: list_notifications(
                conn,
                shop,
                admin_id=admin,
                unread_only=unread,
                include_expired=include_expired,
                limit=limit,
                now=now,
            ),
        )
    )
    if as_json:
        click.echo(json.dumps([n.to_json() for n in found], indent=2))
        return
    if not found:
        unread_word = "unread " if unread else ""
        whose = f" for admin {admin}" if admin is not None else ""
        click.echo(f"shop {shop} has no {unread_word}notifications{whose}")
        return
    rows = [
        [
            str(n.notification_id),
            common.when(n.created_at),
            n.admin_id or "(shop)",
            n.kind,
            n.rule_key,
            _state(n, now),
            n.title,
        ]
        for n in found
    ]
    common.table(["ID", "TIME", "TO", "KIND", "RULE", "STATE", "TITLE"], rows)


@notifications.command("read")
@common.shop_option
@admin_option
@click.argument("ids", nargs=-1, type=click.IntRange(1, _MAX_ID), metavar="[ID]...")
@click.option("--all", "all_unread", is_flag=True, help="Mark every unread one read.")
def notifications_read(*, shop: str, admin: str | None, ids: tuple[int, ...], all_unread: bool) -> None:
    """Mark notifications read, by ID (see `notifications list`) or --all.

    A shop-wide notification or toast has one read state: marked read by one admin, it is read for all.
    """
    if ids and all_unread:
        raise ConfigurationError("give notification IDs or --all, not both")
    if not ids and not all_unread:
        raise ConfigurationError("give the IDs of the notifications to mark read, or --all")
    settings = common.settings(database=True)
    wanted = None if all_unread else list(ids)
    count = common.run(common.query(settings, lambda conn: mark_read(conn, shop, wanted, admin)))
    plural = "" if count == 1 else "s"
    already = len(set(ids)) - count
    rest = f" ({already} already read)" if ids and already else ""
    click.echo(f"marked {count} notification{plural} read{rest}")


def register(cli: click.Group) -> None:
    """Add the ``notifications`` group to the main ``streamapp`` group."""
    cli.add_command(notifications)
