"""Consumes ``actions``: one agent performs every effect through the sink of its channel
(email, SMS, admin notification, toast, Stripe payment link, ledger credit, dashboard alert).

One agent, ``concurrency=1``, and no other stream on this topic: faust-streaming
#606 commits past a message that is still in flight whenever acks arrive out of
order, which is what several streams over one partition (more actors, or several
agents on one topic) produce. A SIGKILLed worker then loses the in-flight actions
for good; ``tests/integration/test_worker_crash.py`` caught exactly that with one
agent per channel. In order, one at a time, the committed offset never passes an
action that was not performed.

Nothing is dropped: a retryable failure (provider or database unreachable) is
retried with capped backoff until it succeeds; the offset is not committed meanwhile.
The price: while SMTP is down, credits and alerts behind an email wait too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection

import asyncpg
from faust import StreamT
from faust.types import Message
from pydantic import ValidationError

from schemas.actions import Action
from schemas.deadletter import Reason
from streamapp import queries
from streamapp.app import app, runtime
from streamapp.decode import dead_letter
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.sinks import (
    AlertSink,
    EmailSink,
    LedgerSink,
    NotificationSink,
    PaymentLinkSink,
    Sink,
    SmsSink,
    ToastSink,
)
from streamapp.sinks.email import backoff

logger = logging.getLogger(__name__)

#: What a worker waits out instead of dropping: unreachable providers and databases.
TRANSIENT = (
    RetryableError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)

#: Channels whose permanent failures also go to the dead-letter topic (an operator must act:
#: a payment link Stripe refused). An opted-out SMS or a bounced email is an answer, not an error.
DEAD_LETTER_FAILURES = frozenset({"payment_link"})

settings = runtime.settings
topics = runtime.topics
metrics = runtime.metrics


async def _pool() -> asyncpg.Pool:
    if settings.database_url is None:
        raise ConfigurationError("DATABASE_URL is not set: the sinks need PostgreSQL")
    attempt = 0
    while True:
        try:
            return await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
        except TRANSIENT as exc:
            attempt += 1
            logger.warning("PostgreSQL unreachable (attempt %d): %s", attempt, type(exc).__name__)
            await asyncio.sleep(backoff(attempt))


async def perform(sink: Sink, action: Action) -> str:
    """Deliver until the sink gives an outcome; transient failures are waited out, never dropped."""
    attempt = 0
    while True:
        try:
            return await sink.deliver(action)
        except TRANSIENT as exc:
            attempt += 1
            metrics.deliveries.labels(sink.channel, "retry").inc()
            logger.warning(
                "%s action_id=%s not delivered (attempt %d), retrying: %s",
                sink.channel,
                action.action_id,
                attempt,
                exc,
            )
            await asyncio.sleep(backoff(attempt))


async def _actions(stream: StreamT[bytes], channels: Collection[str]) -> AsyncIterator[tuple[Action, Message]]:
    """Each action of the stream with its position; what no sink here can perform is dead-lettered."""
    async for event in stream.events():
        message = event.message
        try:
            action = Action.model_validate_json(message.value or b"")
        except ValidationError as exc:
            detail = f"not an action: {exc}"
        else:
            if action.effect.channel in channels:
                yield action, message
                continue
            detail = f"no sink for channel {action.effect.channel!r} in this worker"
        await _dead_letter(message, "invalid_event", detail)


async def _dead_letter(message: Message, reason: Reason, detail: str) -> None:
    letter = dead_letter(
        reason,
        detail,
        key=message.key,
        value=message.value,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
    metrics.dead_letters.labels(message.topic, letter.reason).inc()
    await topics.dead_letters.send(key=message.key, value=letter.model_dump_json().encode())


@app.agent(topics.actions, concurrency=1)
async def perform_actions(stream: StreamT[bytes]) -> None:
    pool = await _pool()
    sms = SmsSink(pool, settings)
    payment_links = PaymentLinkSink(pool, settings)
    try:
        every: tuple[Sink, ...] = (
            LedgerSink(pool),
            AlertSink(pool),
            EmailSink(pool, settings),
            sms,
            NotificationSink(pool),
            ToastSink(pool),
            payment_links,
        )
        sinks = {sink.channel: sink for sink in every}
        async for action, message in _actions(stream, sinks):
            channel = action.effect.channel
            outcome = await perform(sinks[channel], action)
            metrics.deliveries.labels(channel, outcome).inc()
            logger.info(
                "%s action_id=%s at %s@%s %s", channel, action.action_id, message.partition, message.offset, outcome
            )
            if outcome == "failed" and channel in DEAD_LETTER_FAILURES:
                delivery = await queries.get_delivery(pool, action.action_id)
                reason = delivery.last_error if delivery is not None and delivery.last_error else "failed"
                await _dead_letter(message, "effect_failed", f"{channel} {action.action_id}: {reason}")
    finally:
        await sms.close()
        await payment_links.close()
        await pool.close()
