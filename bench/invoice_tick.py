"""What one invoice tick costs, walking every invoice (before) and through the due index (after):
`python bench/invoice_tick.py [--invoices 200000] [--due 50] [--shops 500]`.

A measurement, not a test, of the pure decision code the agent runs (no Kafka, no table): one
partition holding ``--invoices`` invoices, most of them paid or voided (within their retention) or
open with nothing due for weeks, and ``--due`` open ones whose overdue email is due at the tick.

- **walk**: what the tick did before the index, for every invoice stored: its shop's schedule
  configuration, and ``due_steps`` for the open ones;
- **index**: building the index from the table (done once after each restore of the table), then
  one tick: what is due, ``due_steps`` for those, and putting them back; and a tick after a change
  of one shop's configuration (its open invoices are visited once).

Both decide the same actions; the script checks that. Median of ``--runs`` ticks, each on a fresh
copy of the states (a tick records what it fired).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.config import ShopProfile
from streamapp.rules import automation
from streamapp.rules.catalog import BY_KEY
from streamapp.rules.config_store import ConfigStore
from streamapp.rules.invoice_index import DueIndex
from streamapp.rules.invoice_schedule import (
    ADMIN_STEP,
    CUSTOMER_STEPS,
    DEFAULT_RETENTION,
    ShopSchedule,
    due_steps,
    record,
)

NOW = datetime(2027, 3, 1, 15, tzinfo=UTC)


def states(invoices: int, due: int, shops: int) -> dict[str, dict[str, Any]]:
    """A partition's invoices: ``due`` open ones due yesterday, the rest closed or not due for weeks."""
    rng = random.Random(15)
    found: dict[str, dict[str, Any]] = {}
    today = NOW.date()
    for n in range(invoices):
        shop = f"shop-{n % shops}"
        if n < due:
            due_date, status = today - timedelta(days=1), "open"
        elif rng.random() < 0.7:
            due_date, status = today - timedelta(days=rng.randrange(5, 170)), rng.choice(["paid", "voided"])
        else:
            due_date, status = today + timedelta(days=rng.randrange(14, 60)), "open"
        state: dict[str, Any] = {
            "shop_id": shop,
            "invoice_id": f"inv-{n}",
            "partition": 0,
            "status": status,
            "due_date": due_date.isoformat(),
            "fired": {},
            "skipped": {},
        }
        if status != "open":
            state["closed_at"] = datetime.combine(due_date, datetime.min.time(), UTC).isoformat()
        found[f"{shop}:inv-{n}"] = state
    return found


def config_store(shops: int) -> ConfigStore:
    """Every shop's profile, as the worker's configuration follower holds it."""
    store = ConfigStore()
    for n in range(shops):
        profile = ShopProfile(shop_id=f"shop-{n}", name=f"Shop {n}", time_zone="America/Chicago", updated_at=NOW)
        store.apply(f"shop:shop-{n}:shop-{n}".encode(), profile.model_dump_json().encode())
    return store


def shop_now(store: ConfigStore, shop_id: str) -> tuple[ShopSchedule, dict[str, datetime | None]]:
    """A shop's schedule configuration, read from the store as the agent reads it."""
    shop = store.catalog_view(shop_id)
    profile = store.profile(shop_id)
    enabled_since = {}
    for rule_key in (*CUSTOMER_STEPS, ADMIN_STEP):
        rule_state = automation.rule_state(BY_KEY[rule_key], shop)
        if rule_state.enabled:
            enabled_since[rule_key] = rule_state.since
    days = profile.due_soon_days if profile else 3
    return ShopSchedule(shop.time_zone.key, days, frozenset(enabled_since)), enabled_since


def schedules(store: ConfigStore) -> Callable[[str], ShopSchedule]:
    return lambda shop_id: shop_now(store, shop_id)[0]


def visit(table: dict[str, dict[str, Any]], key: str, store: ConfigStore, tick: str) -> list[str]:
    state = table[key]
    config, enabled_since = shop_now(store, state["shop_id"])
    due = due_steps(state, NOW, config.zone, enabled_since=enabled_since, due_soon_days=config.due_soon_days)
    if due.fire or due.skip:
        table[key] = record(state, due, tick)
    return [f"{key}/{step.rule}" for step in due.fire]


def walk(table: dict[str, dict[str, Any]], store: ConfigStore) -> list[str]:
    """The tick before the index: every invoice stored, and each open one's shop configuration."""
    fired: list[str] = []
    for key, state in list(table.items()):
        if state.get("partition") == 0 and state.get("status") == "open":
            fired += visit(table, key, store, "t1")
    return fired


def indexed(table: dict[str, dict[str, Any]], index: DueIndex, store: ConfigStore) -> list[str]:
    """The tick with the index (no retention ends at this tick)."""
    fired: list[str] = []
    schedule_of = schedules(store)
    if index.config_version != store.version:
        index.reconcile(schedule_of)
        index.config_version = store.version
    for key in index.due(NOW, "t1"):
        fired += visit(table, key, store, "t1")
        index.put(key, table[key], schedule_of)
    return fired


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def one_run(base: dict[str, dict[str, Any]], shops: int, due: int) -> dict[str, float]:
    """Time each variant once, on fresh copies of ``base``."""
    store = config_store(shops)
    table = {key: dict(state) for key, state in base.items()}
    walk_s, before = timed(lambda: walk(table, store))
    table = {key: dict(state) for key, state in base.items()}
    schedule_of = schedules(store)
    build_s, built = timed(lambda: DueIndex.build(table.items(), [0], schedule_of, DEFAULT_RETENTION))
    index = built[0]
    index.config_version = store.version
    tick_s, after = timed(lambda: indexed(table, index, store))
    assert sorted(before) == sorted(after) and len(after) == due, (len(before), len(after))
    profile = ShopProfile(shop_id="shop-1", name="Shop 1", time_zone="Asia/Tokyo", due_soon_days=7, updated_at=NOW)
    store.apply(b"shop:shop-1:shop-1", profile.model_dump_json().encode())
    changed_s, _ = timed(lambda: indexed(table, index, store))
    return {"walk": walk_s, "build": build_s, "tick": tick_s, "changed": changed_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--invoices", type=int, default=200_000)
    parser.add_argument("--due", type=int, default=50)
    parser.add_argument("--shops", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base = states(args.invoices, args.due, args.shops)
    runs = [one_run(base, args.shops, args.due) for _ in range(args.runs)]
    median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    open_1 = sum(1 for s in base.values() if s["shop_id"] == "shop-1" and s["status"] == "open")
    print(
        f"{args.invoices:,} invoices on one partition, {args.due} due at the tick, {args.shops} shops;",
        f"median of {args.runs} runs",
    )
    print(f"walk over every invoice (before)     {median['walk'] * 1000:10.1f} ms a tick")
    print(f"index: one tick (after)              {median['tick'] * 1000:10.3f} ms a tick")
    print(
        f"index: tick after a shop's time zone changed ({open_1} open invoices visited)",
        f"{median['changed'] * 1000:.3f} ms",
    )
    print(f"index: built from the table          {median['build'] * 1000:10.1f} ms, once after each restore")
    print(f"walk / indexed tick                  {median['walk'] / median['tick']:10.0f}x")


if __name__ == "__main__":
    main()
