"""The faust workaround that gives each fetch a snapshot of the active partitions (fix 3)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import ThreadDelegateConsumer
from faust.types import TP

from streamapp import faust_fixes

ACTIONS_0 = TP("actions", 0)
CHANGELOG_0 = TP("app-order-counts-changelog", 0)


class _Thread:
    """Stands in for the consumer thread; ``while_waiting`` runs as the main loop would meanwhile."""

    def __init__(self, while_waiting: Any = None) -> None:
        self.calls: list[Any] = []
        self.while_waiting = while_waiting

    async def getmany(self, active_partitions: Any, timeout: float) -> dict[Any, Any]:
        if self.while_waiting is not None:
            self.while_waiting()
        self.calls.append(active_partitions)
        return {}


def _getmany(thread: _Thread, active: Any) -> Any:
    faust_fixes.apply()
    consumer = SimpleNamespace(_thread=thread)
    return asyncio.run(ThreadDelegateConsumer._getmany(consumer, active, 1.0))  # type: ignore[arg-type]


def test_a_fetch_keeps_the_partitions_active_when_it_was_issued() -> None:
    live = {CHANGELOG_0}
    thread = _Thread(while_waiting=live.clear)  # recovery ends: the changelog is paused mid-fetch
    _getmany(thread, live)
    assert thread.calls == [frozenset({CHANGELOG_0})]
    assert thread.calls[0] is not live  # an empty live set would mean "every partition" to aiokafka


def test_no_active_partition_fetches_nothing() -> None:
    thread = _Thread()
    assert _getmany(thread, set()) == {}
    assert thread.calls == []


def test_a_client_only_app_still_fetches_every_partition() -> None:
    thread = _Thread()
    _getmany(thread, None)
    assert thread.calls == [None]


def test_apply_is_idempotent() -> None:
    faust_fixes.apply()
    patched = ThreadDelegateConsumer._getmany
    faust_fixes.apply()
    assert ThreadDelegateConsumer._getmany is patched
