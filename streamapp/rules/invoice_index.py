"""Which invoices of a partition a tick must visit: an index by the moment each may next have
something to do (pure, in memory, derived from the invoices table).

A tick used to walk every invoice stored; with the index it visits only

- the invoices whose moment (:func:`~streamapp.rules.invoice_schedule.next_visit`) has come:
  a step whose rule is on, or the end of a closed invoice's retention;
- the invoices that tick itself fired a step of, when it is redelivered (their ``fired`` marks
  name it), so that it decides the same actions again with the same ids;
- every open invoice of a shop whose schedule configuration (time zone, due-soon days, rules on)
  changed since their moments were computed (:meth:`DueIndex.reconcile`).

So a tick costs time in proportion to what is due, and to the invoices of the shops whose
configuration changed, never to the invoices stored. The index is never ahead of the table: every
moment it holds for an open invoice was computed with the configuration :meth:`DueIndex.reconcile`
last saw for its shop, which the tick brings up to date before it asks what is due, and a tick
re-decides each invoice it visits with :func:`~streamapp.rules.invoice_schedule.due_steps` (a visit
that finds nothing due costs a lookup; an index that was early is never wrong).

The index lives in the worker's memory and is derived from the table; the agent builds it anew
(:meth:`DueIndex.build`) whenever the table was restored, and keeps it in step with every write.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from streamapp.rules.invoice_schedule import AT_ONCE, ShopSchedule, next_visit

#: A shop's schedule configuration as it is now.
ScheduleOf = Callable[[str], ShopSchedule]


class DueIndex:
    """The invoices of one partition by the moment a tick must next visit each."""

    def __init__(self, retention: timedelta) -> None:
        self.retention = retention
        #: The configuration version the shops' schedules were last compared with (the agent's to keep).
        self.config_version: int | None = None
        self._heap: list[tuple[datetime, str]] = []  # (moment, key); an entry not in _at is stale
        self._at: dict[str, datetime] = {}
        self._open: dict[str, set[str]] = {}  # shop -> its open invoices
        self._shop_of: dict[str, str] = {}
        self._schedules: dict[str, ShopSchedule] = {}  # shop -> what its open invoices' moments were computed with
        self._fired: dict[str, set[str]] = {}  # tick id -> open invoices it fired a step of
        self._ticks_of: dict[str, set[str]] = {}
        self._building = False

    @classmethod
    def build(
        cls, states: Iterable[tuple[str, Any]], partitions: Iterable[int], schedule_of: ScheduleOf, retention: timedelta
    ) -> dict[int, DueIndex]:
        """The index of each of ``partitions``, from the table's (key, state) pairs: one pass."""
        indexes = {partition: cls(retention) for partition in partitions}
        for index in indexes.values():
            index._building = True  # the heap is made once at the end: linear, not n log n
        for key, state in states:
            partition = state.get("partition") if isinstance(state, Mapping) else None
            if isinstance(partition, int) and partition in indexes:
                indexes[partition].put(key, state, schedule_of)
        for index in indexes.values():
            index._building = False
            index._heapify()
        return indexes

    def __len__(self) -> int:
        """How many invoices have a moment."""
        return len(self._at)

    def put(self, key: str, state: Mapping[str, Any], schedule_of: ScheduleOf) -> None:
        """Index ``key`` as ``state`` (just written to the table) says."""
        self.discard(key)
        shop = state.get("shop_id")
        if state.get("status") == "open" and isinstance(shop, str):
            if shop not in self._schedules:
                self._schedules[shop] = schedule_of(shop)
            self._open.setdefault(shop, set()).add(key)
            self._shop_of[key] = shop
            ticks = set(state.get("fired", {}).values())
            for tick in ticks:
                self._fired.setdefault(tick, set()).add(key)
            if ticks:
                self._ticks_of[key] = ticks
            moment = next_visit(state, self._schedules[shop], self.retention)
        else:
            moment = next_visit(state, ShopSchedule(), self.retention)  # closed: the schedule plays no part
        if moment is not None:
            self._set_moment(key, moment)

    def discard(self, key: str) -> None:
        """Forget ``key`` (its invoice was removed, or is about to be indexed anew)."""
        self._at.pop(key, None)
        shop = self._shop_of.pop(key, None)
        if shop is not None:
            keys = self._open[shop]
            keys.discard(key)
            if not keys:
                del self._open[shop], self._schedules[shop]
        for tick in self._ticks_of.pop(key, ()):
            fired = self._fired[tick]
            fired.discard(key)
            if not fired:
                del self._fired[tick]

    def due(self, now: datetime, tick_id: str) -> list[str]:
        """The invoices tick ``tick_id`` at ``now`` visits, in key order. Their moments are taken
        out: the tick puts each back as the state it leaves (or discards it)."""
        keys = set(self._fired.get(tick_id, ()))
        while self._heap and self._heap[0][0] <= now:
            moment, key = heapq.heappop(self._heap)
            if self._at.get(key) == moment:
                del self._at[key]
                keys.add(key)
        return sorted(keys)

    def reconcile(self, schedule_of: ScheduleOf) -> int:
        """Compare each shop's schedule configuration with the one its moments were computed with;
        have every open invoice of a shop whose configuration changed visited at the next tick.
        How many invoices that is."""
        requeued = 0
        for shop, schedule in list(self._schedules.items()):
            current = schedule_of(shop)
            if current != schedule:
                self._schedules[shop] = current
                for key in self._open[shop]:
                    self._set_moment(key, AT_ONCE)
                requeued += len(self._open[shop])
        return requeued

    def _set_moment(self, key: str, moment: datetime) -> None:
        self._at[key] = moment
        if self._building:
            return
        heapq.heappush(self._heap, (moment, key))
        if len(self._heap) > 2 * len(self._at) + 1024:  # drop the entries of moments replaced since
            self._heapify()

    def _heapify(self) -> None:
        self._heap = [(at, key) for key, at in self._at.items()]
        heapq.heapify(self._heap)
