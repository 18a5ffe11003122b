"""awake_for: a timeout that counts only the time the process was running."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from streamapp.timeouts import awake_for


async def answer_after(seconds: float, value: str = "250 ok") -> str:
    await asyncio.sleep(seconds)
    return value


async def test_an_answer_in_time_is_returned() -> None:
    assert await awake_for(1.0, answer_after(0.05)) == "250 ok"


async def test_silence_times_out_after_about_the_budget() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no answer within 0\.6s"):
        await awake_for(0.6, answer_after(30))
    assert 0.55 <= time.monotonic() - started < 1.5


async def test_an_answer_that_came_while_the_loop_was_frozen_is_read_not_timed_out() -> None:
    # The answer is due after 0.3 s, the budget is 1 s, and the loop is frozen for 2 s in between
    # (as a SIGSTOPped worker is): the answer is read, the freeze is not counted as silence.
    async def freeze() -> None:
        await asyncio.sleep(0.1)
        time.sleep(2.0)  # blocks the loop: nothing runs, the clock goes on

    freezer = asyncio.ensure_future(freeze())
    started = time.monotonic()
    assert await awake_for(1.0, answer_after(0.3)) == "250 ok"
    assert time.monotonic() - started >= 2.0
    await freezer


async def test_a_real_sigstop_does_not_turn_an_answer_into_a_timeout() -> None:
    # The process stops itself for 1.5 s (a forked helper sends SIGCONT) while an answer due
    # at 0.2 s is awaited with a 1 s budget.
    pid = os.getpid()
    waker = os.fork()
    if waker == 0:  # pragma: no cover - the child only wakes the parent
        time.sleep(1.6)
        os.kill(pid, signal.SIGCONT)
        os._exit(0)

    async def stop_soon() -> None:
        await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGSTOP)

    stopper = asyncio.ensure_future(stop_soon())
    started = time.monotonic()
    assert await awake_for(1.0, answer_after(0.2)) == "250 ok"
    assert time.monotonic() - started >= 1.5, "the process was not stopped: nothing was tested"
    await stopper
    os.waitpid(waker, 0)


async def test_cancelling_the_wait_cancels_the_work() -> None:
    work = asyncio.ensure_future(answer_after(30))
    waiting = asyncio.ensure_future(awake_for(5, work))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert work.cancelled()
