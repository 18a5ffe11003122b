"""Workarounds for faust-streaming bugs that lose messages; applied once by the app factory.

Both concern how a worker (re)starts consuming its stream partitions after a
rebalance, and both were found by ``tests/integration/test_worker_crash.py``: a
worker replacing a SIGKILLed one skipped a dozen actions per partition. Faust's
consumer advances its ``_read_offset`` for a message even when it did not deliver
it (flow suspended), and then drops any re-fetched message below that offset
("DROPPED MESSAGE ROFF", logged only at dev level). Related upstream reports:
faust-streaming #216 and #221, whose fixes do not cover these paths.

**1. Stream partitions fetched before recovery starts.**
On a rebalance, ``Consumer.on_partitions_assigned`` marks every assigned partition
*active* (fetchable); the app pauses them only later, after several awaits, and
resumes stream partitions once table recovery has sought them to their committed
offsets. In that window the fetcher pulls stream partitions from wherever aiokafka
positioned them. That stale batch is still being drained when the recovery seek
resets ``_read_offset``; draining it pushes ``_read_offset`` forward again, and the
messages re-fetched after the seek fall below it and are dropped ("DROPPED MESSAGE
ROFF", logged only at dev level). The related upstream reports are
faust-streaming #216 and #221; their fixes do not cover this path.
``tests/integration/test_worker_crash.py`` reproduced it: a worker replacing a
SIGKILLed one skipped a dozen actions per partition.

The fix: newly assigned partitions start paused. Nothing is fetched for them until
recovery resumes them: changelogs to rebuild tables, stream partitions at the end.

**2. Stream partitions resumed before the seek and before flow resumes.**
``Recovery.on_recovery_completed`` and ``Recovery._resume_streams`` resume the
stream partitions, *then* seek them to their committed offsets, *then* resume the
flow. What is fetched in between meets a suspended flow: not delivered, yet counted
as read. The fix: those two methods run as they are, except that resuming stream
partitions is held back until they return, after the seek and after the flow is on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer

logger = logging.getLogger(__name__)

_APPLIED = "_streamapp_assigned_paused"


def start_assigned_partitions_paused() -> None:
    """Make ``Consumer.on_partitions_assigned`` leave newly assigned partitions paused (idempotent)."""
    original: Callable[..., Awaitable[None]] = Consumer.on_partitions_assigned
    if getattr(original, _APPLIED, False):
        return

    @functools.wraps(original)
    async def on_partitions_assigned(self: Consumer, assigned: Any, *args: Any, **kwargs: Any) -> None:
        # Paused before the original computes the active set (assigned minus paused).
        self._paused_partitions.update(assigned)
        await original(self, assigned, *args, **kwargs)

    setattr(on_partitions_assigned, _APPLIED, True)
    Consumer.on_partitions_assigned = on_partitions_assigned  # type: ignore[method-assign]
    logger.debug("faust fix applied: assigned partitions start paused")


def _hold_stream_resume(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(original)
    async def wrapper(self: Recovery, *args: Any, **kwargs: Any) -> None:
        consumer = self.app.consumer
        held: list[set[Any]] = []
        # An instance attribute shadows the method for the duration of the call only.
        consumer.resume_partitions = lambda tps: held.append(set(tps))  # type: ignore[method-assign]
        try:
            await original(self, *args, **kwargs)
        finally:
            del consumer.resume_partitions
        for tps in held:
            consumer.resume_partitions(tps)

    setattr(wrapper, _APPLIED, True)
    return wrapper


def resume_streams_after_seek_and_flow() -> None:
    """Hold back stream-partition resumes in recovery until seek and flow are done (idempotent)."""
    for name in ("on_recovery_completed", "_resume_streams"):
        original = getattr(Recovery, name)
        if not getattr(original, _APPLIED, False):
            setattr(Recovery, name, _hold_stream_resume(original))


def apply() -> None:
    """Apply every workaround in this module (idempotent)."""
    start_assigned_partitions_paused()
    resume_streams_after_seek_and_flow()
