"""Timeouts that count only the time this process was running.

A provider's answer can arrive while the worker is frozen (SIGSTOP, a VM or container
pause, a long stall). A plain timeout then fires the moment the worker wakes, before the
answer already waiting in the socket is read: the sink counts a message the provider
accepted as a failed attempt and sends it again. The reliability suite saw exactly that:
a worker frozen past its session timeout mid-send texted or emailed a customer twice.

:func:`awake_for` waits in short steps and counts each step as at most
:data:`MAX_STEP` seconds, so a pause costs almost nothing of the budget and the answer is
read first. A provider that really does not answer still times out after about
``seconds`` of the worker's own running time (a little later on a starved machine).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

#: How often the watch looks at the clock.
STEP = 0.25
#: The most one step counts for: a longer gap means the process was not running.
MAX_STEP = 0.5
#: What the inner client's own timeout should be: only a backstop for what :func:`awake_for` misses.
BACKSTOP_SECONDS = 300.0


async def awake_for(seconds: float, awaitable: Awaitable[T], *, abandon_after: float = 1.0) -> T:
    """The result of ``awaitable``, or TimeoutError once it took ``seconds`` of running time.

    On timeout (or cancellation) the work is cancelled and given ``abandon_after`` seconds to
    finish cancelling (a client may try to say goodbye to a server that does not answer).
    """
    task = asyncio.ensure_future(awaitable)
    awake = 0.0
    last = time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(STEP, max(seconds - awake, 0.001)))
            if done:
                return task.result()
            now = time.monotonic()
            awake += min(now - last, MAX_STEP)
            last = now
            if awake >= seconds:
                raise TimeoutError(f"no answer within {seconds:g}s")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=abandon_after)
