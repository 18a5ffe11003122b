"""Admin notifications and toasts against the real PostgreSQL: the sinks, the queries and the commands."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schemas.actions import Action, Lineage, NotificationEffect, ToastEffect
from streamapp.cli.notification_commands import Notification, list_notifications, mark_read
from streamapp.errors import ConfigurationError
from streamapp.sinks.notifications import LOCK_NAMESPACE, NotificationSink, ToastSink
from tests.harness.cli import Cli as EntryPoint
from tests.harness.waits import eventually
from tests.harness.zygote import Zygote

pytestmark = pytest.mark.integration

SHOP = "shop-1"
OCCURRED_AT = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
#: A fixed "now" for the query helpers, so that toast expiry is tested without waiting.
NOW = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)


def action(effect: NotificationEffect | ToastEffect, *, action_id: str | None = None, shop: str = SHOP) -> Action:
    return Action(
        action_id=action_id or f"act-{uuid.uuid4().hex[:12]}",
        shop_id=shop,
        customer_id=None,  # catalog actions may have no customer (a lead)
        rule_id="art_decline_notification",
        rule_name="Artwork declined",
        trigger="artwork.declined",
        occurred_at=OCCURRED_AT,
        effect=effect,
        lineage=Lineage(event_id="evt-1", topic="job-status", partition=0, offset=7),
    )


def notify(admin_ids: list[str], title: str = "Artwork declined", **kwargs: Any) -> Action:
    effect = NotificationEffect(
        admin_ids=admin_ids, template_key="art_decline_notification", title=title, text="J-1042: make the logo bigger"
    )
    return action(effect, **kwargs)


def toast(expires_at: datetime, title: str = "J-1042 is In Production", **kwargs: Any) -> Action:
    effect = ToastEffect(template_key="status_change_toast", title=title, text="", expires_at=expires_at)
    return action(effect, **kwargs)


async def rows_of(pool: asyncpg.Pool, action_id: str) -> list[tuple[Any, ...]]:
    """(admin_id, kind, rule_key, title, text, occurred_at, expires_at, read_at) of the action's rows."""
    rows = await pool.fetch(
        "SELECT admin_id, kind, rule_key, title, text, occurred_at, expires_at, read_at FROM notifications "
        "WHERE action_id = $1 ORDER BY admin_id NULLS FIRST",
        action_id,
    )
    return [tuple(row) for row in rows]


def summary(found: list[Notification]) -> list[tuple[str | None, str]]:
    return [(n.admin_id, n.title) for n in found]


# -- the sinks ---------------------------------------------------------------------------------
async def test_notify_all_admins_is_one_row_per_admin(pool: asyncpg.Pool) -> None:
    decided = notify(["ann", "ben", "ann"])  # an admin named twice is notified once

    assert await NotificationSink(pool).deliver(decided) == "applied"

    text = "J-1042: make the logo bigger"
    assert await rows_of(pool, decided.action_id) == [
        (admin, "notification", "art_decline_notification", "Artwork declined", text, OCCURRED_AT, None, None)
        for admin in ("ann", "ben")
    ]
    assert summary(await list_notifications(pool, SHOP, admin_id="ann", now=NOW)) == [("ann", "Artwork declined")]
    assert summary(await list_notifications(pool, SHOP, now=NOW)) == [
        ("ben", "Artwork declined"),
        ("ann", "Artwork declined"),
    ]
    assert await list_notifications(pool, "shop-2", now=NOW) == []


async def test_a_shop_without_admins_gets_one_shop_wide_notification(pool: asyncpg.Pool) -> None:
    decided = notify([])

    assert await NotificationSink(pool).deliver(decided) == "applied"
    assert await NotificationSink(pool).deliver(decided) == "duplicate"  # NULLS NOT DISTINCT: still one row

    [row] = await rows_of(pool, decided.action_id)
    assert row[:2] == (None, "notification")
    # Every admin's list shows the shop-wide row next to their own.
    await NotificationSink(pool).deliver(notify(["zoe"], title="For Zoe"))
    assert summary(await list_notifications(pool, SHOP, admin_id="zoe", now=NOW)) == [
        ("zoe", "For Zoe"),
        (None, "Artwork declined"),
    ]
    assert summary(await list_notifications(pool, SHOP, admin_id="yan", now=NOW)) == [(None, "Artwork declined")]


async def test_redelivery_inserts_nothing_more_even_with_other_admins(pool: asyncpg.Pool) -> None:
    sink = NotificationSink(pool)
    first = notify(["ann", "ben"])
    assert await sink.deliver(first) == "applied"

    assert await sink.deliver(first) == "duplicate"
    # The same action decided again after the shop's admins changed: the first delivery decided.
    replayed = notify(["ann", "ben", "cat"], action_id=first.action_id)
    assert await sink.deliver(replayed) == "duplicate"
    assert [row[0] for row in await rows_of(pool, first.action_id)] == ["ann", "ben"]

    # Shop-wide first, admins later: no admin gets a second copy next to the shop-wide row.
    shop_wide = notify([])
    assert await sink.deliver(shop_wide) == "applied"
    assert await sink.deliver(notify(["ann"], action_id=shop_wide.action_id)) == "duplicate"
    assert [row[0] for row in await rows_of(pool, shop_wide.action_id)] == [None]


async def test_concurrent_redeliveries_insert_once(pool: asyncpg.Pool) -> None:
    decided = notify(["ann", "ben", "cat"])

    outcomes = await asyncio.gather(*(NotificationSink(pool).deliver(decided) for _ in range(5)))

    assert sorted(outcomes) == ["applied"] + ["duplicate"] * 4
    assert [row[0] for row in await rows_of(pool, decided.action_id)] == ["ann", "ben", "cat"]


async def test_concurrent_deliveries_with_different_admins_keep_one_list(pool: asyncpg.Pool) -> None:
    """Both deliveries are queued on the action's lock at the same moment; the first one decides."""
    first = notify(["ann", "ben"])
    second = notify(["ann", "cat"], action_id=first.action_id)
    sink = NotificationSink(pool)
    async with pool.acquire() as gate:
        lock = gate.transaction()
        await lock.start()
        await gate.execute("SELECT pg_advisory_xact_lock($1::int, hashtext($2))", LOCK_NAMESPACE, first.action_id)
        both = asyncio.gather(sink.deliver(first), sink.deliver(second))
        try:
            await eventually(
                lambda: pool.fetchval(
                    "SELECT count(*) = 2 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
                ),
                what="both deliveries to wait on the action's lock",
            )
        finally:
            await lock.commit()
            outcomes = await asyncio.wait_for(both, 20)

    assert sorted(outcomes) == ["applied", "duplicate"]
    admins = [row[0] for row in await rows_of(pool, first.action_id)]
    assert admins in (["ann", "ben"], ["ann", "cat"])


async def test_toast_is_shop_wide_and_hidden_once_expired(pool: asyncpg.Pool) -> None:
    expires = NOW + timedelta(minutes=5)
    shown = toast(expires)

    assert await ToastSink(pool).deliver(shown) == "applied"
    assert await ToastSink(pool).deliver(shown) == "duplicate"

    [row] = await rows_of(pool, shown.action_id)
    assert row == (None, "toast", "status_change_toast", "J-1042 is In Production", "", OCCURRED_AT, expires, None)
    [listed] = await list_notifications(pool, SHOP, admin_id="ann", now=NOW)
    assert (listed.kind, listed.expires_at, listed.expired(NOW)) == ("toast", expires, False)

    later = expires + timedelta(seconds=1)
    assert await list_notifications(pool, SHOP, admin_id="ann", now=later) == []
    assert await list_notifications(pool, SHOP, now=expires) == []  # expired at its expires_at exactly
    assert summary(await list_notifications(pool, SHOP, include_expired=True, now=later)) == [
        (None, "J-1042 is In Production")
    ]


async def test_a_sink_refuses_another_channel(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="toast"):
        await NotificationSink(pool).deliver(toast(NOW))
    with pytest.raises(ValueError, match="notification"):
        await ToastSink(pool).deliver(notify(["ann"]))


# -- the queries -------------------------------------------------------------------------------
async def test_list_is_newest_first_limited_and_filters_unread(pool: asyncpg.Pool) -> None:
    for title in ("first", "second", "third"):
        await NotificationSink(pool).deliver(notify(["ann"], title=title))
    [third, second, first] = await list_notifications(pool, SHOP, admin_id="ann", now=NOW)
    assert [n.title for n in (third, second, first)] == ["third", "second", "first"]

    assert [n.title for n in await list_notifications(pool, SHOP, limit=2, now=NOW)] == ["third", "second"]
    assert await mark_read(pool, SHOP, [second.notification_id], now=NOW) == 1
    assert [n.title for n in await list_notifications(pool, SHOP, unread_only=True, now=NOW)] == ["third", "first"]
    [read] = [n for n in await list_notifications(pool, SHOP, now=NOW) if n.title == "second"]
    assert read.read_at == NOW


async def test_mark_read_one_then_all_in_the_admins_scope(pool: asyncpg.Pool) -> None:
    sink = NotificationSink(pool)
    for admins in (["ann", "ben"], ["ann", "ben"], []):
        await sink.deliver(notify(admins))
    await ToastSink(pool).deliver(toast(NOW - timedelta(minutes=1)))  # already expired: still in scope of "all"
    ann = await list_notifications(pool, SHOP, admin_id="ann", include_expired=True, now=NOW)
    assert [n.admin_id for n in ann] == [None, None, "ann", "ann"]

    one = ann[-1].notification_id
    assert await mark_read(pool, SHOP, [one], "ann", now=NOW) == 1
    assert await mark_read(pool, SHOP, [one], "ann", now=NOW + timedelta(hours=1)) == 0  # keeps its first read_at
    assert await mark_read(pool, SHOP, [], "ann", now=NOW) == 0

    assert await mark_read(pool, SHOP, None, "ann", now=NOW) == 3  # ann's other row, the shop-wide one, the toast
    after = await list_notifications(pool, SHOP, include_expired=True, now=NOW)
    assert sorted((n.admin_id or "(shop)", n.kind, n.read_at) for n in after) == [
        ("(shop)", "notification", NOW),
        ("(shop)", "toast", NOW),
        ("ann", "notification", NOW),
        ("ann", "notification", NOW),
        ("ben", "notification", None),
        ("ben", "notification", None),
    ]
    # ben still has both of his rows unread; the shop-wide ones are read for everyone.
    assert [n.admin_id for n in await list_notifications(pool, SHOP, admin_id="ben", unread_only=True, now=NOW)] == [
        "ben",
        "ben",
    ]
    assert await mark_read(pool, SHOP, None, now=NOW) == 2
    assert await list_notifications(pool, SHOP, unread_only=True, include_expired=True, now=NOW) == []


async def test_mark_read_refuses_ids_of_another_shop_or_admin_and_marks_nothing(pool: asyncpg.Pool) -> None:
    await NotificationSink(pool).deliver(notify(["ann", "ben"]))
    await NotificationSink(pool).deliver(notify(["ann"], shop="shop-2"))
    [ben, ann] = await list_notifications(pool, SHOP, now=NOW)
    [elsewhere] = await list_notifications(pool, "shop-2", now=NOW)
    missing = elsewhere.notification_id + 1000

    with pytest.raises(ConfigurationError) as refused:
        await mark_read(pool, SHOP, [ann.notification_id, elsewhere.notification_id, missing], now=NOW)
    assert str(refused.value) == f"shop {SHOP} has no notifications {elsewhere.notification_id}, {missing}"
    with pytest.raises(
        ConfigurationError, match=f"^shop {SHOP} has no notification {ben.notification_id} for admin ann$"
    ):
        await mark_read(pool, SHOP, [ann.notification_id, ben.notification_id], "ann", now=NOW)

    assert await list_notifications(pool, SHOP, unread_only=True, now=NOW) == [ben, ann]
    assert await list_notifications(pool, "shop-2", unread_only=True, now=NOW) == [elsewhere]


# -- the commands, through the real entry point ------------------------------------------------
class Cli(EntryPoint):
    """``streamapp notifications ...`` through the real entry point (its one-line errors and exit codes)."""

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return super().__call__("notifications", *args)


@pytest.fixture
def cli(migrated_url: str, tmp_path: Path, zygote: Zygote) -> Cli:
    async def seed() -> None:
        pool = await asyncpg.create_pool(migrated_url, min_size=1, max_size=2)
        try:
            now = datetime.now(UTC)  # the commands judge expiry by the wall clock
            await NotificationSink(pool).deliver(notify(["ann", "ben"], title="Artwork declined"))
            await ToastSink(pool).deliver(toast(now - timedelta(hours=1), title="Old toast"))
            await ToastSink(pool).deliver(toast(now + timedelta(hours=1), title="Fresh toast"))
        finally:
            await pool.close()

    asyncio.run(seed())
    return Cli({**os.environ, "DATABASE_URL": migrated_url}, tmp_path, zygote)


def columns(table: str) -> list[dict[str, str]]:
    """The rows of a printed table as {header: cell}, cut at the header's column starts."""
    header, *lines = table.splitlines()
    names = header.split()
    starts = [header.index(name) for name in names]
    ends = [*starts[1:], None]
    return [{n: line[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)} for line in lines]


def test_list_command_table_and_json(cli: Cli) -> None:
    table = cli.ok("list", "--shop", SHOP)
    assert table.splitlines()[0].split() == ["ID", "TIME", "TO", "KIND", "RULE", "STATE", "TITLE"]
    assert [(r["TO"], r["KIND"], r["RULE"], r["STATE"], r["TITLE"]) for r in columns(table)] == [
        ("(shop)", "toast", "status_change_toast", "unread", "Fresh toast"),
        ("ben", "notification", "art_decline_notification", "unread", "Artwork declined"),
        ("ann", "notification", "art_decline_notification", "unread", "Artwork declined"),
    ]
    assert all(r["TIME"].endswith(" UTC") and r["ID"].isdigit() for r in columns(table))

    everything = columns(cli.ok("list", "--shop", SHOP, "--all", "--admin", "ann"))
    assert [(r["TO"], r["STATE"], r["TITLE"]) for r in everything] == [
        ("(shop)", "unread", "Fresh toast"),
        ("(shop)", "expired", "Old toast"),
        ("ann", "unread", "Artwork declined"),
    ]

    records = json.loads(cli.ok("list", "--shop", SHOP, "--admin", "ben", "--json", "--limit", "1"))
    assert len(records) == 1 and records[0]["title"] == "Fresh toast"
    assert records[0]["admin_id"] is None and records[0]["kind"] == "toast" and records[0]["read_at"] is None
    assert datetime.fromisoformat(records[0]["expires_at"]) > datetime.now(UTC)
    assert cli.ok("list", "--shop", "shop-9") == "shop shop-9 has no notifications\n"
    assert json.loads(cli.ok("list", "--shop", "shop-9", "--json")) == []


def test_read_command_by_id_and_all(cli: Cli) -> None:
    ids = {r["admin_id"]: r["notification_id"] for r in json.loads(cli.ok("list", "--shop", SHOP, "--json"))}

    assert cli.ok("read", "--shop", SHOP, "--admin", "ann", str(ids["ann"])) == "marked 1 notification read\n"
    assert cli.ok("read", "--shop", SHOP, str(ids["ann"]), str(ids["ben"])) == (
        "marked 1 notification read (1 already read)\n"
    )
    unread = json.loads(cli.ok("list", "--shop", SHOP, "--unread", "--json"))
    assert [r["title"] for r in unread] == ["Fresh toast"]

    assert cli.ok("read", "--shop", SHOP, "--all") == "marked 2 notifications read\n"  # the fresh and the old toast
    assert cli.ok("list", "--shop", SHOP, "--unread", "--admin", "ann") == (
        "shop shop-1 has no unread notifications for admin ann\n"
    )


def test_read_command_refusals_are_one_line(cli: Cli) -> None:
    own = next(r["notification_id"] for r in json.loads(cli.ok("list", "--shop", SHOP, "--json")) if r["admin_id"])
    assert (
        cli.refused("read", "--shop", "shop-2", str(own)) == f"streamapp: error: shop shop-2 has no notification {own}"
    )
    assert cli.refused("read", "--shop", SHOP, "--all", str(own)) == (
        "streamapp: error: give notification IDs or --all, not both"
    )
    assert cli.refused("read", "--shop", SHOP) == (
        "streamapp: error: give the IDs of the notifications to mark read, or --all"
    )
    assert "--admin 'a:b'" in cli.refused("list", "--shop", SHOP, "--admin", "a:b")

    cli.env = {**cli.env, "DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:9/db"}
    line = cli.refused("list", "--shop", SHOP, code=1)
    assert "database" in line and "hunter2" not in line
    del cli.env["DATABASE_URL"]
    assert cli.refused("read", "--shop", SHOP, "--all").startswith("streamapp: error: DATABASE_URL is not set")
