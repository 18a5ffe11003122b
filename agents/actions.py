"""Consumes ``actions``: one consumer performs every effect through the sink of its channel
(email, SMS, admin notification, toast, Stripe payment link, ledger credit, dashboard alert).

A batch path (:mod:`streamapp.batches`), alone on this topic: a batch of actions is performed
in partition order, and its messages are acked only once performed. A run of consecutive actions
of one :class:`~streamapp.sinks.base.BatchSink` channel (alerts, credits) is one statement; any
other action is performed alone. Order and one consumer matter: faust-streaming #606 commits past
a message that is still in flight whenever acks arrive out of order, which several streams over
one partition produce; a SIGKILLed worker then loses the in-flight actions for good
(``tests/integration/test_worker_crash.py`` caught exactly that with one agent per channel).

Nothing is dropped: a retryable failure (provider or database unreachable) is
retried with capped backoff until it succeeds; the offset is not committed meanwhile.
The price: while SMTP is down, credits and alerts behind an email wait too.

Shutdown is bounded. Faust's stop waits, without limit, until every message a stream
took is acked (``Consumer.wait_empty``), and ``perform`` retries forever: a worker told
to stop while SMTP refused or hung never exited. Now, once the worker stops, the delivery
in flight gets :data:`SHUTDOWN_GRACE` seconds to finish; after that it is cancelled and its
action *handed back* with the rest of the batch: left unacked, so their offsets are not
committed and the partition's next owner performs them, and taken out of the set Faust waits
for. An unexpected exception (a bug, a missing table) hands the batch back the same way and
stops the worker: going on past it would commit its offset with the next action's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar, cast

import asyncpg
from faust.types import Message
from pydantic import ValidationError

from schemas.actions import Action
from streamapp import queries
from streamapp.agent_steps import reject_message
from streamapp.app import app, runtime
from streamapp.batches import Effects, raw_channel, run_batches
from streamapp.db import durability_warnings
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.sinks.base import BatchSink, Outcome, Sink
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

_T = TypeVar("_T")

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


async def perform_many(sink: BatchSink, actions: list[Action]) -> list[Outcome]:
    """:func:`perform` for a run of actions of one batch sink, in one statement."""
    attempt = 0
    while True:
        try:
            return await sink.deliver_many(actions)
        except TRANSIENT as exc:
            attempt += 1
            metrics.deliveries.labels(sink.channel, "retry").inc()
            logger.warning(
                "%s: %d actions from action_id=%s not delivered (attempt %d), retrying: %s",
                sink.channel,
                len(actions),
                actions[0].action_id,
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
    return await _unless_stopped(lambda: perform(sink, action), sink.channel, action.action_id, stopping, grace)


async def perform_many_unless_stopped(
    sink: BatchSink, actions: list[Action], stopping: asyncio.Future[None], grace: float = SHUTDOWN_GRACE
) -> list[Outcome] | None:
    """:func:`perform_unless_stopped` for a run of actions of one batch sink (:func:`perform_many`)."""
    return await _unless_stopped(
        lambda: perform_many(sink, actions), sink.channel, actions[0].action_id, stopping, grace
    )


async def _unless_stopped(
    start: Callable[[], Awaitable[_T]], channel: str, action_id: str, stopping: asyncio.Future[None], grace: float
) -> _T | None:
    if stopping.done():
        return None
    work = asyncio.ensure_future(start())
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
            logger.error("%s action_id=%s: delivery still running after cancelling it", channel, action_id)


def _parse(message: Message, sinks: Mapping[str, Sink]) -> Action | str:
    """The action in ``message``, or why it is not one this worker can perform (for its dead letter)."""
    try:
        action = Action.model_validate_json(message.value or b"")
    except ValidationError as exc:
        return f"not an action: {exc}"
    if action.effect.channel not in sinks:
        return f"no sink for channel {action.effect.channel!r} in this worker"
    return action


async def perform_batch(
    sinks: Mapping[str, Sink],
    pool: asyncpg.Pool,
    stopping: asyncio.Future[None],
    messages: list[Message],
    effects: Effects,
) -> int | None:
    """Perform (or dead-letter) the actions of ``messages``; None once all are done, or how many
    (a prefix) were done before the worker began stopping: the rest are handed back.

    A segment of consecutive actions of :class:`~streamapp.sinks.base.BatchSink` channels (alerts,
    credits, interleaved as a payment's rules fire them) is performed as one statement per channel;
    every other action alone, in order. A segment stopped halfway is handed back whole (what it did
    is a duplicate to its next performer). An unexpected exception is logged with the action it
    stopped at and propagates: the batch is handed back.
    """
    items = [(message, _parse(message, sinks)) for message in messages]
    index = 0
    try:
        while index < len(items):
            message, parsed = items[index]
            if isinstance(parsed, str):
                await reject_message(message, "invalid_event", parsed)
                index += 1
                continue
            end = index + 1
            if isinstance(sinks[parsed.effect.channel], BatchSink):
                while end < len(items) and _batched(items[end][1], sinks):
                    end += 1
            segment = [(item_message, cast(Action, action)) for item_message, action in items[index:end]]
            if not await _perform_segment(segment, sinks, pool, stopping):
                for item_message, action in segment:
                    logger.warning(
                        "%s action_id=%s at %s@%s handed back: the worker is stopping",
                        action.effect.channel,
                        action.action_id,
                        item_message.partition,
                        item_message.offset,
                    )
                return index
            index = end
    except Exception:
        logger.exception(
            "action at %s@%s handed back; stopping the worker", messages[index].partition, messages[index].offset
        )
        raise
    return None


def _batched(parsed: Action | str, sinks: Mapping[str, Sink]) -> bool:
    return not isinstance(parsed, str) and isinstance(sinks[parsed.effect.channel], BatchSink)


async def _perform_segment(
    segment: list[tuple[Message, Action]], sinks: Mapping[str, Sink], pool: asyncpg.Pool, stopping: asyncio.Future[None]
) -> bool:
    """Perform ``segment``, one channel at a time; False if the worker began stopping first."""
    by_channel: dict[str, list[tuple[Message, Action]]] = {}
    for message, action in segment:
        by_channel.setdefault(action.effect.channel, []).append((message, action))
    performed: list[tuple[Sink, Message, Action, Outcome]] = []
    for channel, run in by_channel.items():
        sink = sinks[channel]
        actions = [action for _, action in run]
        if len(actions) == 1:
            outcome = await perform_unless_stopped(sink, actions[0], stopping)
            outcomes = None if outcome is None else [outcome]
        else:
            outcomes = await perform_many_unless_stopped(cast(BatchSink, sink), actions, stopping)
        if outcomes is None:
            return False
        performed.extend(
            (sink, message, action, outcome) for (message, action), outcome in zip(run, outcomes, strict=True)
        )
    for sink, message, action, outcome in performed:
        await _done(sink, pool, message, action, outcome)
    return True


async def _done(sink: Sink, pool: asyncpg.Pool, message: Message, action: Action, outcome: Outcome) -> None:
    """Count and log ``action``'s outcome; dead-letter a failure the sink wants an operator to see."""
    channel = sink.channel
    metrics.deliveries.labels(channel, outcome).inc()
    logger.info("%s action_id=%s at %s@%s %s", channel, action.action_id, message.partition, message.offset, outcome)
    if outcome == "failed" and sink.dead_letters_failures:
        delivery = await queries.get_delivery(pool, action.action_id)
        reason = delivery.last_error if delivery is not None and delivery.last_error else "failed"
        await reject_message(message, "effect_failed", f"{channel} {action.action_id}: {reason}")


actions_in = raw_channel(app, topics.actions)


@app.task  # type: ignore[untyped-decorator]
async def perform_actions() -> None:
    """``actions``, a batch at a time (:mod:`streamapp.batches`): see the module docstring."""
    stopping = asyncio.ensure_future(app.wait_until_stopped())
    pool = await _pool()
    sinks: dict[str, Sink] = {}
    try:
        sinks = build_sinks(pool, settings)
        await run_batches(app, actions_in, functools.partial(perform_batch, sinks, pool, stopping))
    finally:
        stopping.cancel()
        for sink in sinks.values():
            await sink.close()
        await pool.close()
