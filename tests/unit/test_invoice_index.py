"""The due index: a tick visits what is due, and decides exactly what a walk over every invoice would."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from streamapp.rules.invoice_index import DueIndex
from streamapp.rules.invoice_schedule import (
    ADMIN_STEP,
    CUSTOMER_STEPS,
    ShopSchedule,
    due_steps,
    record,
    removable,
    with_closed_at,
)

RULES = (*CUSTOMER_STEPS, ADMIN_STEP)
RETENTION = timedelta(days=180)
DEFAULT = ShopSchedule("America/Chicago", 3, frozenset({"invoice_overdue_email", ADMIN_STEP}))
DUE = date(2026, 12, 15)


def invoice(shop: str = "acme", partition: int = 0, **changes: Any) -> dict[str, Any]:
    base = {"shop_id": shop, "partition": partition, "status": "open", "due_date": DUE.isoformat()}
    return base | {"fired": {}, "skipped": {}} | changes


def at(day: date, hour: int = 9) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def test_a_tick_visits_only_what_has_come() -> None:
    index = DueIndex(RETENTION)
    closed_at = at(DUE).isoformat()
    index.put("acme:open", invoice(), lambda shop: DEFAULT)
    index.put("acme:later", invoice(due_date="2027-09-01"), lambda shop: DEFAULT)
    for n in range(1000):
        index.put(f"acme:paid-{n}", invoice(status="paid", closed_at=closed_at), lambda shop: DEFAULT)
    assert index.due(at(DUE), "t1") == []
    assert index.due(at(DUE + timedelta(days=2)), "t2") == ["acme:open"]
    assert index.due(at(DUE + timedelta(days=2)), "t3") == [], "taken out until the tick puts it back"
    assert len(index.due(at(DUE) + RETENTION, "t4")) == 1000
    assert index.due(at(date(2027, 9, 2)), "t5") == ["acme:later"]


def test_a_redelivered_tick_visits_what_it_fired_again() -> None:
    index = DueIndex(RETENTION)
    index.put("acme:1", invoice(), lambda shop: DEFAULT)
    assert index.due(at(DUE + timedelta(days=1)), "t1") == ["acme:1"]
    index.put("acme:1", invoice(fired={"invoice_overdue_email": "t1"}), lambda shop: DEFAULT)
    assert index.due(at(DUE + timedelta(days=1), 10), "t1") == ["acme:1"], "the same tick, redelivered"
    assert index.due(at(DUE + timedelta(days=1), 10), "t2") == []
    index.put("acme:1", invoice(status="paid", closed_at=at(DUE).isoformat()), lambda shop: DEFAULT)
    assert index.due(at(DUE + timedelta(days=1), 10), "t1") == [], "closed: as the walk did, not visited again"


def test_a_change_of_configuration_has_the_shops_open_invoices_visited() -> None:
    config = {"acme": DEFAULT, "other": DEFAULT}
    index = DueIndex(RETENTION)
    for n in range(3):
        index.put(f"acme:{n}", invoice(), config.__getitem__)
        index.put(f"other:{n}", invoice("other"), config.__getitem__)
    index.put("acme:paid", invoice(status="paid", closed_at=at(DUE).isoformat()), config.__getitem__)
    assert index.reconcile(config.__getitem__) == 0
    config["acme"] = ShopSchedule("America/Chicago", 10, DEFAULT.enabled | {"payment_due_soon_email"})
    assert index.reconcile(config.__getitem__) == 3
    assert index.due(at(DUE - timedelta(days=20)), "t1") == ["acme:0", "acme:1", "acme:2"]
    assert index.reconcile(config.__getitem__) == 0


def test_an_invoice_put_is_indexed_with_the_configuration_its_shop_was_indexed_with() -> None:
    """So that the tick's comparison with the current one never misses a change."""
    config = {"acme": DEFAULT}
    index = DueIndex(RETENTION)
    index.put("acme:1", invoice(), config.__getitem__)
    config["acme"] = ShopSchedule("America/Chicago", 3, DEFAULT.enabled | {"payment_due_soon_email"})
    index.put("acme:2", invoice(), config.__getitem__)  # an event, before the next tick
    assert index.due(at(DUE - timedelta(days=2)), "t1") == []  # as the old configuration says...
    assert index.reconcile(config.__getitem__) == 2  # ...until the tick compares: both are visited
    assert index.due(at(DUE - timedelta(days=2)), "t1") == ["acme:1", "acme:2"]


def test_built_from_the_table_one_index_per_partition() -> None:
    states = [
        ("acme:1", invoice(partition=0)),
        ("acme:2", invoice(partition=1)),
        ("acme:~removed/1", {"shop_id": "acme", "partition": 1, "removed_through": None}),
        ("acme:3", invoice(partition=7)),  # a partition not asked for
    ]
    indexes = DueIndex.build(states, [0, 1], lambda shop: DEFAULT, RETENTION)
    assert {p: len(index) for p, index in indexes.items()} == {0: 1, 1: 1}
    indexes[0].discard("acme:1")
    assert len(indexes[0]) == 0 and indexes[0].due(at(date(2030, 1, 1)), "t") == []


def test_the_index_decides_what_the_walk_over_every_invoice_decides() -> None:
    """Two copies of one partition, ticked through a year with the configuration changing on the way:
    the walk (the tick before the index) and the indexed tick fire, skip and remove the same."""
    rng = random.Random(15)
    shops = [f"shop-{n}" for n in range(4)]
    config = {shop: DEFAULT for shop in shops}
    states: dict[str, dict[str, Any]] = {}
    for n in range(300):
        due = date(2026, 11, 1) + timedelta(days=rng.randrange(200))
        status = rng.choice(["open", "open", "paid", "voided"])
        closed = {"closed_at": at(due).isoformat()} if status != "open" and rng.random() < 0.8 else {}
        states[f"inv-{n}"] = invoice(rng.choice(shops), status=status, due_date=due.isoformat(), **closed)
    walk = {key: dict(state) for key, state in states.items()}
    indexed = {key: dict(state) for key, state in states.items()}
    [index] = DueIndex.build(indexed.items(), [0], config.__getitem__, RETENTION).values()
    index.config_version = 0
    changes = {
        20: ("shop-1", ShopSchedule("Pacific/Kiritimati", 3, frozenset(RULES))),
        45: ("shop-2", ShopSchedule("America/Chicago", 30, DEFAULT.enabled | {"payment_due_soon_email"})),
        60: ("shop-1", ShopSchedule("Pacific/Pago_Pago", 1, frozenset({"invoice_60day_escalation"}))),
        90: ("shop-3", ShopSchedule("America/Chicago", 3, frozenset())),
        130: ("shop-3", ShopSchedule("Asia/Tokyo", 3, frozenset(RULES))),
    }
    moment = datetime(2026, 10, 1, tzinfo=UTC)
    seen: Counter[str] = Counter()
    for n in range(400):
        moment += timedelta(hours=rng.choice([1, 7, 20, 30]))
        if n in changes:
            shop, schedule = changes[n]
            config[shop] = schedule
            index.config_version = None  # the store's version moved
        tick = f"t{n}"
        did_walk = [step for key in sorted(walk) for step in _visit(walk, key, moment, tick, config)]
        if index.config_version is None:
            index.reconcile(config.__getitem__)
            index.config_version = 0
        did_indexed = []
        for key in index.due(moment, tick):
            did_indexed += _visit(indexed, key, moment, tick, config)
            if key in indexed:
                index.put(key, indexed[key], config.__getitem__)
            else:
                index.discard(key)
        assert did_indexed == did_walk, f"tick {n} at {moment}"
        seen.update(what for what, *_ in did_walk)
    assert indexed == walk
    assert all(seen[what] > 0 for what in ("fired", "skipped", "stamped", "removed")), seen


def _visit(
    states: dict[str, dict[str, Any]], key: str, now: datetime, tick: str, config: dict[str, ShopSchedule]
) -> list[tuple[str, str, str]]:
    """What one tick does to one invoice, as the agent does it: (what, key, rule)."""
    state = states[key]
    if state["status"] != "open":
        stamped = with_closed_at(state, now)
        if stamped is not None:
            states[key] = stamped
            return [("stamped", key, "")]
        if removable(state, now, RETENTION):
            del states[key]
            return [("removed", key, "")]
        return []
    shop = config[state["shop_id"]]
    enabled = dict.fromkeys(shop.enabled)
    due = due_steps(state, now, shop.zone, enabled_since=enabled, due_soon_days=shop.due_soon_days)
    states[key] = record(state, due, tick)
    return [("fired", key, step.rule) for step in due.fire] + [("skipped", key, step.rule) for step, _ in due.skip]
