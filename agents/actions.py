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

Acks are manual (``stream.enable_acks = False``): an action is acked only once performed.
Faust acks the event in flight whenever it closes a stream iterator that an agent abandoned
(the agent crashed or was cancelled mid-action), and its next commit then passes an action
that was never performed; ``tests/reliability/test_graceful_shutdown.py`` lost credits
that way when a sink raised.

Shutdown is bounded. Faust's stop waits, without limit, until every message a stream
took is acked (``Consumer.wait_empty``), and ``perform`` retries forever: a worker told
to stop while SMTP refused or hung never exited. Now, once the worker stops, the action
in flight gets :data:`SHUTDOWN_GRACE` seconds to finish; after that it is cancelled and
*handed back*: left unacked, so its offset is not committed and the partition's next
owner performs it, and taken out of the set Faust waits for. An unexpected exception
(a bug, a missing table) hands the action back the same way and stops the worker: going
on past it would commit its offset with the next action's (faust-streaming #606: a
commit passes a single unacked message at the head of the acked ones).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import asyncpg
from faust import StreamT
from faust.types import EventT, Message
from pydantic import ValidationError

from schemas.actions import Action
from streamapp import queries
from streamapp.agent_steps import reject_message
from streamapp.app import app, runtime
from streamapp.db import durability_warnings
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.sinks.base import Outcome, Sink
from streamapp.sinks.deliveries import backoff
from streamapp.sinks.registry import build_sinks

logger = logging.getLogger(__name__)

#: What a worker waits out instead of dropping: unreachable providers and databases.
TRANSIENT = (
    RetryableError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)

#: Seconds a stopping worker lets the action in flight finish before handing it back. Long
#: enough for a healthy provider to answer (no copy is sent twice by a routine stop), short
#: enough that the worker exits well inside the usual 30 s before an orchestrator's SIGKILL.
SHUTDOWN_GRACE = 5.0
#: How often a delivery past its grace is cancelled (a second apart) before it is handed back anyway.
CANCEL_ROUNDS = 3

settings = runtime.settings
topics = runtime.topics
metrics = runtime.metrics


async def _pool() -> asyncpg.Pool:
    if settings.database_url is None:
        raise ConfigurationError("DATABASE_URL is not set: the sinks need PostgreSQL")
    attempt = 0
    while True:
        try:
            pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
        except TRANSIENT as exc:
            attempt += 1
            logger.warning("PostgreSQL unreachable (attempt %d): %s", attempt, type(exc).__name__)
            await asyncio.sleep(backoff(attempt))
            continue
        for warning in await durability_warnings(pool):
            logger.warning("PostgreSQL: %s", warning)
        return pool


async def perform(sink: Sink, action: Action) -> Outcome:
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


async def perform_unless_stopped(
    sink: Sink, action: Action, stopping: asyncio.Future[None], grace: float = SHUTDOWN_GRACE
) -> Outcome | None:
    """:func:`perform`, or None if ``stopping`` is done before it starts or ``grace`` seconds before
    it ends: then the delivery is cancelled (the sink records what it attempted) and the caller must
    hand the action back. Exceptions of the sink other than transient ones propagate."""
    if stopping.done():
        return None
    work = asyncio.ensure_future(perform(sink, action))
    try:
        await asyncio.wait((work, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            await asyncio.wait((work,), timeout=grace)
        if work.done():
            return work.result()
        return None
    finally:
        # The sink's clean-up (its transaction) finishes before the action is handed back, but a
        # clean-up that waits on a peer that stopped answering is cancelled again: aiosmtplib, when
        # cancelled, sends QUIT and waits up to its 30 s timeout for the answer.
        for _ in range(CANCEL_ROUNDS):
            if work.done():
                break
            work.cancel()
            await asyncio.wait((work,), timeout=1.0)
        if not work.done():
            logger.error("%s action_id=%s: delivery still running after cancelling it", sink.channel, action.action_id)


def _hand_back(message: Message) -> None:
    """Leave ``message`` unacked, so its offset is never committed by this worker, and stop Faust's
    shutdown from waiting for it (``Consumer.wait_empty`` waits for every unacked message)."""
    app.consumer.unacked.discard(message)


async def _handle(
    event: EventT[bytes], sinks: Mapping[str, Sink], pool: asyncpg.Pool, stopping: asyncio.Future[None]
) -> bool:
    """Perform (or dead-letter) the action of ``event``; False if it must be handed back (stopping)."""
    message = event.message
    try:
        action = Action.model_validate_json(message.value or b"")
    except ValidationError as exc:
        await reject_message(message, "invalid_event", f"not an action: {exc}")
        return True
    channel = action.effect.channel
    if channel not in sinks:
        await reject_message(message, "invalid_event", f"no sink for channel {channel!r} in this worker")
        return True
    outcome = await perform_unless_stopped(sinks[channel], action, stopping)
    if outcome is None:
        logger.warning(
            "%s action_id=%s at %s@%s handed back: the worker is stopping",
            channel,
            action.action_id,
            message.partition,
            message.offset,
        )
        return False
    metrics.deliveries.labels(channel, outcome).inc()
    logger.info("%s action_id=%s at %s@%s %s", channel, action.action_id, message.partition, message.offset, outcome)
    if outcome == "failed" and sinks[channel].dead_letters_failures:
        delivery = await queries.get_delivery(pool, action.action_id)
        reason = delivery.last_error if delivery is not None and delivery.last_error else "failed"
        await reject_message(message, "effect_failed", f"{channel} {action.action_id}: {reason}")
    return True


@app.agent(topics.actions, concurrency=1)
async def perform_actions(stream: StreamT[bytes]) -> None:
    stream.enable_acks = False  # acked below, once performed: see the module docstring
    stopping = asyncio.ensure_future(app.wait_until_stopped())
    pool = await _pool()
    sinks: dict[str, Sink] = {}
    try:
        sinks = build_sinks(pool, settings)
        async for event in stream.events():
            try:
                done = await _handle(event, sinks, pool, stopping)
            except Exception as exc:
                _hand_back(event.message)
                logger.exception(
                    "action at %s@%s handed back; stopping the worker", event.message.partition, event.message.offset
                )
                # Not re-raised: Faust would restart this agent, which would go on past the action.
                await app.crash(exc)
                return
            except BaseException:  # cancelled: the worker is stopping
                _hand_back(event.message)
                raise
            if not done:
                _hand_back(event.message)
                return
            await stream.ack(event)
    finally:
        stopping.cancel()
        for sink in sinks.values():
            await sink.close()
        await pool.close()
