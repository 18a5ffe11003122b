"""The fenced table: a zombie worker's late changelog writes do not win a restore."""

from __future__ import annotations

import weakref
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust import streams

from streamapp.tables import SOURCE_OFFSET, SOURCES, FencedTable, fenced_table, fresh_changes


def change(key: str, value: Any, partition: int = 0) -> Any:
    """A changelog event as a restore sees it."""
    return SimpleNamespace(key=key, value=value, message=SimpleNamespace(partition=partition, value=value))


@pytest.fixture
def table() -> FencedTable:
    app = faust.App(f"fence-{id(object())}", store="memory://", autodiscover=False)
    return fenced_table(app, "counts", partitions=1)


def test_a_zombies_late_write_does_not_win_the_restore(table: FencedTable) -> None:
    # The new owner counted c1's fifth order at input offset 120; the zombie, woken late,
    # wrote its stale count from offset 95 after it.
    table.apply_changelog_batch(
        [change("c1", {"count": 5, SOURCE_OFFSET: 120}), change("c1", {"count": 4, SOURCE_OFFSET: 95})]
    )
    assert table.data["c1"] == {"count": 5, SOURCE_OFFSET: 120}
    # ...also when the stale write comes in a later chunk of the restore.
    table.apply_changelog_batch([change("c1", {"count": 3, SOURCE_OFFSET: 90})])
    assert table.data["c1"]["count"] == 5
    table.apply_changelog_batch([change("c1", {"count": 6, SOURCE_OFFSET: 130})])
    assert table.data["c1"]["count"] == 6


def test_a_replayed_write_of_the_same_offset_applies(table: FencedTable) -> None:
    table.apply_changelog_batch([change("c1", {"count": 5, SOURCE_OFFSET: 120})])
    table.apply_changelog_batch([change("c1", {"count": 5, SOURCE_OFFSET: 120})])
    assert table.data["c1"]["count"] == 5


def test_unstamped_values_and_tombstones_always_apply() -> None:
    held = {"a": {"count": 2, SOURCE_OFFSET: 50}}
    batch = [change("a", {"count": 1}), change("a", None), change("b", {"count": 1, SOURCE_OFFSET: 1})]
    fresh, stale = fresh_changes(batch, held.get)
    assert fresh == batch and stale == 0


def test_each_key_is_fenced_on_its_own() -> None:
    held = {"a": {SOURCE_OFFSET: 50}}
    batch = [change("a", {SOURCE_OFFSET: 40}), change("b", {SOURCE_OFFSET: 40}), change("a", {SOURCE_OFFSET: 60})]
    fresh, stale = fresh_changes(batch, held.get)
    assert [e.value[SOURCE_OFFSET] for e in fresh] == [40, 60] and [e.key for e in fresh] == ["b", "a"]
    assert stale == 1


class _Event:
    """The event being processed (weakly referenced by faust's current_event)."""

    def __init__(self, offset: int, topic: str = "t") -> None:
        self.message = SimpleNamespace(offset=offset, partition=0, topic=topic)


def _write(table: FencedTable, key: str, value: dict[str, Any], event: _Event) -> None:
    token = streams._current_event.set(weakref.ref(event))
    try:
        table[key] = value
    finally:
        streams._current_event.reset(token)


@pytest.fixture
def sent(table: FencedTable) -> list[Any]:
    """What ``table`` sends to its changelog."""
    sent: list[Any] = []

    def send_changelog(partition: int | None, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append((key, value))
        return SimpleNamespace(message=SimpleNamespace(partition=0))

    table.send_changelog = send_changelog  # type: ignore[method-assign]
    table.partition_for_key = lambda key: 0  # type: ignore[method-assign]
    return sent


def test_a_write_is_stamped_with_the_offset_of_the_message_being_processed(table: FencedTable, sent: list[Any]) -> None:
    _write(table, "c1", {"count": 1}, _Event(77))
    assert table.data["c1"] == {"count": 1, SOURCES: {"t": 77}}
    assert sent == [("c1", {"count": 1, SOURCES: {"t": 77}})]


def test_a_write_keeps_the_offsets_of_the_other_source_topics(table: FencedTable, sent: list[Any]) -> None:
    _write(table, "c1", {"count": 1}, _Event(5, "payments"))
    _write(table, "c1", {"count": 2}, _Event(3, "hop"))
    _write(table, "c1", {"count": 3}, _Event(9, "payments"))
    stamps = [value[SOURCES] for _, value in sent]
    assert stamps == [{"payments": 5}, {"payments": 5, "hop": 3}, {"payments": 9, "hop": 3}]


def test_a_first_format_value_keeps_its_offset_as_a_topic_of_its_own(table: FencedTable, sent: list[Any]) -> None:
    table.data["c1"] = {"count": 4, SOURCE_OFFSET: 40}
    _write(table, "c1", {"count": 5, SOURCE_OFFSET: 40}, _Event(7, "payments"))
    assert table.data["c1"] == {"count": 5, SOURCES: {"": 40, "payments": 7}}
    # ...so a zombie still writing the first format from an offset before 40 stays fenced out.
    fresh, stale = fresh_changes([change("c1", {"count": 3, SOURCE_OFFSET: 39})], table.data.get)
    assert fresh == [] and stale == 1


def test_a_key_written_from_two_topics_is_fenced_on_both() -> None:
    # The new owner counted through payments (offset 20) and then the hop (offset 8); a zombie that
    # held the value of payments@20 alone writes from payments@21: it is behind on the hop.
    owner = {"count": 6, SOURCES: {"payments": 20, "hop": 8}}
    zombie = {"count": 6, SOURCES: {"payments": 21}}
    fresh, stale = fresh_changes([change("c1", owner), change("c1", zombie)], {}.get)
    assert [e.value for e in fresh] == [owner] and stale == 1
    # The owner's own later write, ahead on one topic and level on the other, applies.
    later = {"count": 7, SOURCES: {"payments": 21, "hop": 8}}
    fresh, stale = fresh_changes([change("c1", later)], {"c1": owner}.get)
    assert fresh and stale == 0


def test_a_deleted_key_stays_fenced_within_the_batch() -> None:
    held = {"i1": {SOURCES: {"t": 50}}}
    batch = [change("i1", None), change("i1", {SOURCES: {"t": 10}}), change("i1", {SOURCES: {"t": 60}})]
    fresh, stale = fresh_changes(batch, held.get)
    assert [e.value for e in fresh] == [None, {SOURCES: {"t": 60}}] and stale == 1


def test_a_write_outside_a_message_is_refused(table: FencedTable) -> None:
    with pytest.raises(RuntimeError, match="while processing a message"):
        table["c1"] = {"count": 1}


def _delete(table: FencedTable, key: str, event: _Event) -> None:
    token = streams._current_event.set(weakref.ref(event))
    try:
        del table[key]
    finally:
        streams._current_event.reset(token)


def test_a_removal_sends_a_tombstone(table: FencedTable, sent: list[Any]) -> None:
    _write(table, "i1", {"status": "paid"}, _Event(5))
    _delete(table, "i1", _Event(9))
    assert "i1" not in table.data
    assert sent[-1] == ("i1", None)


def test_a_removal_outside_a_message_is_refused(table: FencedTable) -> None:
    table.data["i1"] = {"status": "paid", SOURCES: {"t": 5}}
    with pytest.raises(RuntimeError, match="while processing a message"):
        del table["i1"]
    assert "i1" in table.data


def test_a_restore_removes_a_key_at_its_tombstone_and_keeps_a_later_value(table: FencedTable) -> None:
    table.apply_changelog_batch([change("i1", {SOURCES: {"t": 5}}), change("i1", None)])
    assert "i1" not in table.data
    table.apply_changelog_batch(
        [change("i2", {SOURCES: {"t": 5}}), change("i2", None), change("i2", {SOURCES: {"t": 20}})]
    )
    assert table.data["i2"] == {SOURCES: {"t": 20}}
    table.apply_changelog_batch([change("i2", None)])  # a tombstone in a later chunk of the restore
    assert "i2" not in table.data
