"""The fenced table: a zombie worker's late changelog writes do not win a restore."""

from __future__ import annotations

import weakref
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust import streams

from streamapp.tables import SOURCE_OFFSET, FencedTable, fenced_table, fresh_changes


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

    def __init__(self, offset: int) -> None:
        self.message = SimpleNamespace(offset=offset, partition=0, topic="t")


def test_a_write_is_stamped_with_the_offset_of_the_message_being_processed(table: FencedTable) -> None:
    sent: list[Any] = []

    def send_changelog(partition: int | None, key: Any, value: Any, *args: Any) -> Any:
        sent.append((key, value))
        return SimpleNamespace(message=SimpleNamespace(partition=0))

    table.send_changelog = send_changelog  # type: ignore[method-assign]
    table.partition_for_key = lambda key: 0  # type: ignore[method-assign]
    event = _Event(77)
    token = streams._current_event.set(weakref.ref(event))
    try:
        table["c1"] = {"count": 1}
    finally:
        streams._current_event.reset(token)
    assert table.data["c1"] == {"count": 1, SOURCE_OFFSET: 77}
    assert sent == [("c1", {"count": 1, SOURCE_OFFSET: 77})]


def test_a_write_outside_a_message_is_refused(table: FencedTable) -> None:
    with pytest.raises(RuntimeError, match="while processing a message"):
        table["c1"] = {"count": 1}
