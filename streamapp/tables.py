"""Tables whose changelog a zombie worker cannot corrupt.

At-least-once Kafka has no fencing: a worker frozen past its session timeout (a long GC
or VM pause, SIGSTOP) loses its partitions, but when it wakes it still processes the
messages it had buffered and writes their table values to the changelog before it hears
that it was replaced. Those writes land *after* the new owner's newer values for the same
keys. The new owner's table in memory is unaffected, but the next worker to restore the
partition from the changelog (after any later rebalance) would take the zombie's stale
value as the latest: a customer's order count would go back, a credit at a count reached
again would be taken for a duplicate, and a later credit would never be earned.

The fence: every value written carries, per source topic, the offset of the latest input
message of that topic that wrote the key (:data:`SOURCES`; the write's own topic gets its
message's offset, the others keep what the held value had). A table's partition is its
inputs' partition (every source topic is co-partitioned with the changelog), so offsets of one
topic compare. Restoring a partition skips a value that is behind the one it already holds for
that key in any source topic. A key written from two topics (``order-counts``: from ``payments``
directly and from the re-key hop) is fenced on both: a zombie's value inherits the older offsets
it held and loses to the new owner's on at least one of them.

The same rule skips the writes of an ordinary replay (a new owner reprocessing input the
old owner had already written for): harmless, since processing is deterministic and the
replay's content is what the newer value already holds. A partition's input offsets must
only grow: reset the app's internal topics and its changelogs together (``faust reset``).
A value of the first format carries one offset (:data:`SOURCE_OFFSET`, of the table's one
source topic then); it is fenced as the offsets of a topic of its own, which later writes keep.

Removing a key (``del table[key]``, while processing a message like a write) sends a tombstone,
which a restore always applies. A tombstone carries no offsets, so the fence of a removed key is
gone once the restore has passed it: a zombie's write after the tombstone, restored in a later
chunk, brings the key back. A table that removes keys must tolerate that (the invoices table does:
a resurrected closed invoice is removed again by the next tick; an open one would take a zombie
frozen for the whole retention).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import faust
from faust import current_event
from faust.types import EventT, Message

from streamapp.batches import Record

logger = logging.getLogger(__name__)

#: The key, in every value of a fenced table, of ``{source topic: offset of the input that last wrote it}``.
SOURCES = "_sources"
#: The key of the first format's one input offset; read as the offsets of topic :data:`FIRST_FORMAT`.
SOURCE_OFFSET = "_source_offset"
FIRST_FORMAT = ""

_NOT_HELD = object()


class FencedTable(faust.Table):  # type: ignore[type-arg]  # faust is untyped
    """A table of dict values, each stamped with its inputs' offsets; see the module docstring."""

    def __setitem__(self, key: Any, value: dict[str, Any]) -> None:
        event = current_event()
        if event is None:
            raise RuntimeError(f"table {self.name}: values are written while processing a message")
        super().__setitem__(key, self._stamped(event.message, key, value))

    def write(self, message: Message, key: Any, value: dict[str, Any]) -> Record:
        """Set ``key`` as ``table[key] = value`` does while ``message`` is processed, but leave the
        changelog record to the caller: it is returned, for a batch to send (:mod:`streamapp.batches`).

        The record goes to the changelog partition of ``message``'s partition, which is the key's
        (a table is co-partitioned with its inputs), serialized as Faust serializes the table's.
        """
        stamped = self._stamped(message, key, value)
        self.data[key] = stamped
        changelog = self.changelog_topic
        return Record(
            topic=changelog.get_topic_name(),
            key=changelog.prepare_key(key, self.key_serializer)[0],
            value=(
                # What Faust's "json" codec writes for a dict of str and int, without its codec chain.
                json.dumps(stamped, separators=(",", ":")).encode()
                if self.value_serializer == "json"
                else changelog.prepare_value(stamped, self.value_serializer)[0]
            ),
            partition=message.partition,
            table=self,
        )

    def _stamped(self, message: Message, key: Any, value: dict[str, Any]) -> dict[str, Any]:
        sources = dict(stamp(self.data.get(key)) or {})
        sources[message.topic] = message.offset
        stamped = {**value, SOURCES: sources}
        stamped.pop(SOURCE_OFFSET, None)
        return stamped

    def __delitem__(self, key: Any) -> None:
        """Remove ``key``: a tombstone on the changelog (a restore applies it, see :func:`fresh_changes`)."""
        if current_event() is None:
            raise RuntimeError(f"table {self.name}: keys are removed while processing a message")
        super().__delitem__(key)

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        fresh, stale = fresh_changes(batch, self.data.get, self._to_key)
        if stale:
            logger.info("table %s: skipped %d changelog values older than the ones held", self.name, stale)
        super().apply_changelog_batch(fresh)


def fresh_changes(
    batch: Iterable[EventT[Any]], stored: Any, to_key: Any = lambda key: key
) -> tuple[list[EventT[Any]], int]:
    """The changelog events of ``batch`` that are not behind what ``stored(key)`` (or an
    earlier event of the batch) holds for their key; and how many were skipped."""
    latest: dict[Any, dict[str, int] | None] = {}
    fresh: list[EventT[Any]] = []
    stale = 0
    for event in batch:
        key = to_key(event.key)
        written = stamp(event.value)
        held = latest.get(key, _NOT_HELD)
        if held is _NOT_HELD:
            held = stamp(stored(key))
        if written is None:
            # A tombstone or an unstamped value applies. The batch keeps the key's fence: a zombie's
            # stale value after a deletion is still skipped here, though not in a later restore chunk,
            # which finds nothing held.
            fresh.append(event)
            continue
        if held is not None and behind(written, held):  # type: ignore[arg-type]
            stale += 1
            continue
        latest[key] = written
        fresh.append(event)
    return fresh, stale


def stamp(value: Any) -> dict[str, int] | None:
    """The source offsets ``value`` carries, or None (a tombstone, an unstamped value)."""
    if not isinstance(value, dict):
        return None
    sources = value.get(SOURCES)
    if sources is not None:
        return sources  # type: ignore[no-any-return]
    first = value.get(SOURCE_OFFSET)
    return None if first is None else {FIRST_FORMAT: first}


def behind(written: dict[str, int], held: dict[str, int]) -> bool:
    """Whether ``written`` lags ``held`` on some source topic (an offset it lacks counts as lagging)."""
    return any(written.get(topic, -1) < offset for topic, offset in held.items())


def fenced_table(app: faust.App, name: str, *, partitions: int) -> FencedTable:
    """Define fenced table ``name`` on ``app`` (as ``app.Table`` would, with no default)."""
    table = FencedTable(app, name=name, default=None, beacon=app.tables.beacon, partitions=partitions)
    app.tables.add(table)
    return table
