"""Tables whose changelog a zombie worker cannot corrupt.

At-least-once Kafka has no fencing: a worker frozen past its session timeout (a long GC
or VM pause, SIGSTOP) loses its partitions, but when it wakes it still processes the
messages it had buffered and writes their table values to the changelog before it hears
that it was replaced. Those writes land *after* the new owner's newer values for the same
keys. The new owner's table in memory is unaffected, but the next worker to restore the
partition from the changelog (after any later rebalance) would take the zombie's stale
value as the latest: a customer's order count would go back, a credit at a count reached
again would be taken for a duplicate, and a later credit would never be earned.

The fence: every value written carries the offset of the input message that produced it
(:data:`SOURCE_OFFSET`; the table's partition is the input's, so the offsets compare), and
restoring a partition skips a value older than the one it already holds for that key.
The same rule skips the writes of an ordinary replay (a new owner reprocessing input the
old owner had already written for): harmless, since processing is deterministic and the
replay's content is what the newer value already holds. A partition's input offsets must
only grow: reset the app's internal topics and its changelogs together (``faust reset``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import faust
from faust import current_event
from faust.types import EventT

logger = logging.getLogger(__name__)

#: The key, in every value of a fenced table, of the input offset that wrote it.
SOURCE_OFFSET = "_source_offset"


class FencedTable(faust.Table):  # type: ignore[type-arg]  # faust is untyped
    """A table of dict values, each stamped with its input's offset; see the module docstring."""

    def __setitem__(self, key: Any, value: dict[str, Any]) -> None:
        event = current_event()
        if event is None:
            raise RuntimeError(f"table {self.name}: values are written while processing a message")
        super().__setitem__(key, {**value, SOURCE_OFFSET: event.message.offset})

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        fresh, stale = fresh_changes(batch, self.data.get, self._to_key)
        if stale:
            logger.info("table %s: skipped %d changelog values older than the ones held", self.name, stale)
        super().apply_changelog_batch(fresh)


def fresh_changes(
    batch: Iterable[EventT[Any]], stored: Any, to_key: Any = lambda key: key
) -> tuple[list[EventT[Any]], int]:
    """The changelog events of ``batch`` that are not older than what ``stored(key)`` (or an
    earlier event of the batch) holds for their key; and how many were skipped."""
    latest: dict[Any, int] = {}
    fresh: list[EventT[Any]] = []
    stale = 0
    for event in batch:
        written = _offset(event.value)
        if written is not None:
            key = to_key(event.key)
            held = latest[key] if key in latest else _offset(stored(key))
            if held is not None and written < held:
                stale += 1
                continue
            latest[key] = written
        fresh.append(event)
    return fresh, stale


def _offset(value: Any) -> int | None:
    return value.get(SOURCE_OFFSET) if isinstance(value, dict) else None


def fenced_table(app: faust.App, name: str, *, partitions: int) -> FencedTable:
    """Define fenced table ``name`` on ``app`` (as ``app.Table`` would, with no default)."""
    table = FencedTable(app, name=name, default=None, beacon=app.tables.beacon, partitions=partitions)
    app.tables.add(table)
    return table
