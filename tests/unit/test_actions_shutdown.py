"""A stopping worker lets the action in flight finish for a grace period, then cancels it so that
it can be handed back (``agents.actions.perform_unless_stopped``); without Kafka or a database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from faust.types import Message

from agents.actions import perform_batch, perform_unless_stopped
from schemas.actions import Action, AlertEffect, CreditEffect, Lineage
from streamapp.errors import RetryableError
from streamapp.sinks.base import BatchSink, Outcome, Sink

GRACE = 0.3  # seconds: the tests' grace, so that they stay fast


def alert_action() -> Action:
    return Action(
        action_id="act-1",
        shop_id="shop-1",
        customer_id="cust-1",
        rule_id="rule-1",
        rule_name="Alert",
        trigger="order_count",
        order_count=1,
        occurred_at=datetime(2026, 11, 23, tzinfo=UTC),
        effect=AlertEffect(text="hello"),
        lineage=Lineage(event_id="evt-1", topic="payments", partition=0, offset=0),
    )


class SlowSink(Sink):
    """Takes ``seconds`` to deliver; records whether it finished, was cancelled and cleaned up."""

    channel: ClassVar[str] = "alert"

    def __init__(self, seconds: float, failures: list[BaseException] | None = None) -> None:
        self.seconds = seconds
        self.failures = list(failures or [])
        self.calls = 0
        self.cancelled = False
        self.cleaned_up = False

    async def deliver(self, action: Action) -> Outcome:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            await asyncio.sleep(0.05)  # its clean-up (a commit) needs the loop too
            self.cleaned_up = True
            raise
        return "applied"


def stopped() -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


async def test_a_running_worker_waits_for_the_outcome() -> None:
    sink = SlowSink(0.05)
    stopping = asyncio.get_running_loop().create_future()
    assert await perform_unless_stopped(sink, alert_action(), stopping, grace=GRACE) == "applied"
    assert not sink.cancelled


async def test_a_stopping_worker_starts_no_new_action() -> None:
    sink = SlowSink(0.0)
    assert await perform_unless_stopped(sink, alert_action(), stopped(), grace=GRACE) is None
    assert sink.calls == 0


async def test_the_action_in_flight_finishes_within_the_grace() -> None:
    sink = SlowSink(GRACE / 3)
    stopping = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, stopping.set_result, None)
    assert await perform_unless_stopped(sink, alert_action(), stopping, grace=GRACE) == "applied"
    assert not sink.cancelled


async def test_an_action_that_outlasts_the_grace_is_cancelled_and_cleaned_up_before_the_hand_back() -> None:
    sink = SlowSink(3600.0)
    stopping = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.05, stopping.set_result, None)
    started = time.monotonic()
    assert await perform_unless_stopped(sink, alert_action(), stopping, grace=GRACE) is None
    took = time.monotonic() - started
    assert sink.cancelled and sink.cleaned_up
    assert 0.05 + GRACE - 0.02 <= took < 0.05 + GRACE + 1.0, took


async def test_transient_failures_are_retried_until_the_grace_ends_then_handed_back() -> None:
    sink = SlowSink(0.0, failures=[RetryableError("smtp down")] * 100)
    stopping = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.05, stopping.set_result, None)
    # perform() backs off 0.5 s after the first failure: longer than the grace.
    assert await perform_unless_stopped(sink, alert_action(), stopping, grace=GRACE) is None
    assert sink.calls == 1


async def test_a_bug_in_a_sink_propagates() -> None:
    sink = SlowSink(0.0, failures=[KeyError("bug")])
    stopping = asyncio.get_running_loop().create_future()
    with pytest.raises(KeyError):
        await perform_unless_stopped(sink, alert_action(), stopping, grace=GRACE)


async def test_cancelling_the_caller_cancels_the_delivery_and_waits_for_its_clean_up() -> None:
    sink = SlowSink(3600.0)
    stopping = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(perform_unless_stopped(sink, alert_action(), stopping, grace=GRACE))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.cancelled and sink.cleaned_up


class RecordingBatchSink(BatchSink):
    """Records each call: ("many", ids) or ("one", id); stops the worker after ``stop_after`` calls."""

    def __init__(
        self, channel: str, calls: list[tuple[str, Any]], stopping: asyncio.Future[None] | None = None
    ) -> None:
        self.channel = channel  # type: ignore[misc]  # one class, two channels in the test
        self.calls = calls
        self.stopping = stopping

    async def deliver_many(self, actions: Sequence[Action]) -> list[Outcome]:
        self.calls.append(("many" if len(actions) > 1 else "one", [a.action_id for a in actions]))
        if self.stopping is not None and not self.stopping.done():
            self.stopping.set_result(None)
        return ["applied"] * len(actions)


def action_of(channel: str, n: int) -> Action:
    credit = CreditEffect(amount_cents=1, currency="EUR", reason="r")
    effect = AlertEffect(text="hello") if channel == "alert" else credit
    return alert_action().model_copy(update={"action_id": f"act-{n}", "effect": effect})


def message_of(action: Action, offset: int) -> Message:
    return Message("actions", 0, offset, 0.0, 0, [], action.action_id.encode(), action.model_dump_json().encode(), None)


async def test_a_batch_performs_a_segment_of_alerts_and_credits_as_one_statement_per_channel() -> None:
    calls: list[tuple[str, Any]] = []
    sinks: dict[str, Sink] = {
        "alert": RecordingBatchSink("alert", calls),
        "credit": RecordingBatchSink("credit", calls),
    }
    channels = ["alert", "credit", "alert", "credit", "alert"]
    messages = [message_of(action_of(channel, n), n) for n, channel in enumerate(channels)]
    running: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    done = await perform_batch(sinks, None, running, messages, None)  # type: ignore[arg-type]

    assert done is None
    assert calls == [("many", ["act-0", "act-2", "act-4"]), ("many", ["act-1", "act-3"])]


async def test_a_batch_stopped_halfway_through_a_segment_hands_the_whole_segment_back() -> None:
    calls: list[tuple[str, Any]] = []
    stopping: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sinks: dict[str, Sink] = {
        "alert": RecordingBatchSink("alert", calls, stopping),
        "credit": RecordingBatchSink("credit", calls),
    }
    messages = [message_of(action_of(channel, n), n) for n, channel in enumerate(["alert", "alert", "credit"])]

    done = await perform_batch(sinks, None, stopping, messages, None)  # type: ignore[arg-type]

    # The alerts were performed (the stop came during them); the credits were not started, so the
    # segment is handed back whole: its next performer finds the alerts done (duplicates).
    assert done == 0
    assert calls == [("many", ["act-0", "act-1"])]
