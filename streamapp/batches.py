"""A batch path below Faust's streams, for a topic where every event costs (``payments``).

Faust hands each consumed message to its stream as an Event through a queue and a Cython
iterator, and sends each effect through ``Topic.send`` (a FutureMessage, the producer buffer,
sensors on every send). Measured (bench/FINDINGS.md), that machinery cost more per payment than
quixstreams' whole work. Here a topic's messages are taken off the conductor's queue as they are,
a batch at a time; the batch is processed in partition order; its records (table changelog values,
actions) go straight to the producer; and every message of the batch is acked only once the broker
has confirmed every record of the batch. A message is never acked before its effects are safe,
so a bug that raises takes the worker down with the batch unacked (redelivered), never skipped.

What stays Faust's: the consumer (fetch, rebalance, flow control, and the workarounds of
:mod:`streamapp.faust_fixes`), the conductor (subscription, and backpressure: the queue's
pressure callbacks pause the partition's fetch), the tables (assignment, recovery from their
changelogs) and the commits (offsets acked contiguously, after the producer is flushed).
What a batch-path message does not get: Faust's per-stream sensors (``on_stream_event_in/out``);
the per-message ones (``on_message_in/out``, which feed Faust's own metrics) it keeps.

The stream's rules for a message are kept as they are (``faust/_cython/streams.pyx``): a message
taken while flow control is suspended or of another consumer generation (a rebalance happened
since it was fetched) is skipped, neither processed nor acked; the new assignment re-fetches it.
A message taken is tracked as unacked, so a rebalance waits for its batch to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka.errors import KafkaError
from faust.types import Message

from streamapp.sinks.deliveries import backoff

logger = logging.getLogger(__name__)

#: The most messages one batch takes: bounds the effects awaiting confirmation and a batch's time.
MAX_BATCH = 500


class RawChannel(faust.Topic):
    """A topic whose conductor queues each message as it is: no Event, no stream (see :func:`run_batches`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Channel.__init__ sets ``decode`` per instance (compiled), so a method override would not be called.
        self.decode = self._as_it_is  # type: ignore[method-assign,assignment]

    async def _as_it_is(self, message: Message, *, propagate: bool = False) -> Message:
        return message


def raw_channel(app: faust.App, topic: faust.TopicT) -> RawChannel:
    """Subscribe ``app`` to ``topic`` for :func:`run_batches` (call before the worker starts)."""
    channel = RawChannel(**{**cast(faust.Topic, topic)._clone_args(), "app": app, "is_iterator": True})
    app.topics.add(channel)
    return channel


@dataclass(frozen=True)
class Record:
    """One record a batch sends; ``table`` is set for a table's changelog record."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    table: Any = None


class Effects:
    """The records of one batch, sent and confirmed together by :meth:`confirm`.

    Records go out as Kafka record batches built here, one per topic partition (split when full),
    so a record costs an append rather than a producer send of its own; a record is put on the
    partition the producer's default partitioner would give it, unless it names one.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self.records: list[Record] = []

    def add(self, record: Record) -> None:
        """Add ``record`` to what :meth:`confirm` sends."""
        self.records.append(record)

    async def confirm(self, what: str) -> None:
        """Send every record and return once the broker has them all; what fails is sent again, with
        capped backoff, for as long as it fails (the batch's messages stay unacked meanwhile, and the
        log and the partition's lag say so). ``what`` names the batch in the log."""
        attempt = 0
        while True:
            sent = await self._send()
            results = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
            failures = [result for result in results if _failed(result)]
            if not failures:
                self._persisted(sent, results)
                return
            attempt += 1
            logger.warning(
                "%s: %d of %d record batches not written (attempt %d), sending them all again: %r",
                what,
                len(failures),
                len(sent),
                attempt,
                failures[0],
            )
            await asyncio.sleep(backoff(attempt))
            # All again, in order: a changelog key's older value never lands after its newer one.

    async def _send(self) -> list[tuple[asyncio.Future[Any], _Open]]:
        """Hand every record to the producer; a future per record batch, with what the batch holds."""
        producer: Any = cast(Any, self._app.producer)._ensure_producer()  # the aiokafka producer Faust's commit flushes
        sent: list[tuple[asyncio.Future[Any], _Open]] = []
        open_batches: dict[tuple[str, int], _Open] = {}
        for record in self.records:
            partition = record.partition
            if partition is None:
                partition = producer._partition(record.topic, None, record.key, None, record.key, record.value)
            place = (record.topic, partition)
            batch = open_batches.get(place)
            if batch is None or batch.builder.append(timestamp=None, key=record.key, value=record.value) is None:
                if batch is not None:
                    sent.append((await producer.send_batch(batch.builder, record.topic, partition=partition), batch))
                batch = open_batches[place] = _Open(producer.create_batch(), record.table)
                if batch.builder.append(timestamp=None, key=record.key, value=record.value) is None:
                    # Larger than a record batch: the producer makes it a batch of its own.
                    del open_batches[place]
                    future = await producer.send(record.topic, record.value, key=record.key, partition=partition)
                    sent.append((future, _Open(None, record.table, records=1)))
                    continue
            batch.records += 1
        for (topic, partition), batch in open_batches.items():
            sent.append((await producer.send_batch(batch.builder, topic, partition=partition), batch))
        return sent

    @staticmethod
    def _persisted(sent: list[tuple[asyncio.Future[Any], _Open]], results: Sequence[Any]) -> None:
        """Tell each table's store the changelog offsets it now holds (what Faust's send callback does)."""
        for (_, batch), metadata in zip(sent, results, strict=True):
            if batch.table is not None:
                last = metadata.offset + (batch.records - 1 if batch.builder is not None else 0)
                batch.table.data.set_persisted_offset(metadata.topic_partition, last)


@dataclass
class _Open:
    """A record batch being filled: its builder (None: one record sent alone), its table, its size."""

    builder: Any
    table: Any
    records: int = 0


def _failed(result: Any) -> bool:
    if isinstance(result, KafkaError | asyncio.TimeoutError):
        return True
    if isinstance(result, BaseException):
        raise result  # not a send failure: a bug, which must not be retried over
    return False


#: ``handle(messages, effects)``: None once every message is done; or how many were done (a prefix)
#: when the worker began stopping, the rest to be handed back.
Handler = Callable[[list[Message], Effects], Awaitable[int | None]]


async def run_batches(
    app: faust.App,
    channel: RawChannel,
    handle: Handler,
    *,
    lock: asyncio.Lock | None = None,
    max_batch: int = MAX_BATCH,
) -> None:
    """Take ``channel``'s messages a batch at a time, ``handle`` each batch, confirm its effects and ack it.

    ``handle(messages, effects)`` processes the messages in order and adds their records to
    ``effects``; it may also await other sends (a dead letter, which it confirms itself). It runs
    until cancelled (the worker stops), or until ``handle`` says it did only a prefix of a batch
    (the worker is stopping: that prefix is acked, the rest handed back). An exception from
    ``handle`` propagates, with the batch handed back, and takes the worker down (``app.task``
    crashes the app).

    Handing back leaves messages unacked, so their offsets are never committed here (a prefix of
    each partition's messages is acked, never one behind an unacked one: faust-streaming #606),
    and takes them out of what Faust's stop waits for (``Consumer.wait_empty`` waits for every
    unacked message, without limit).

    ``lock``, when given, is held from ``handle`` until the batch's records are confirmed: batch
    paths that write one table share it, so that none reads another's writes before they are on the
    changelog (a table's changelog must stay a prefix of its writes: a restore rebuilds from it).
    """
    queue = channel.queue
    consumer: Any = app.consumer
    sensors = app.sensors
    while True:
        batch = [await queue.get()]
        while len(batch) < max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        messages = [message for message in batch if _take(app, consumer, message)]
        if not messages:
            continue
        effects = Effects(app)
        try:
            async with lock or contextlib.nullcontext():
                done = await handle(messages, effects)
                await effects.confirm(f"a batch of {len(messages)} {messages[0].topic} messages")
        except BaseException:  # cancelled (the worker stops) or a bug
            consumer.unacked.difference_update(messages)
            raise
        for message in messages if done is None else messages[:done]:
            if message.ack(consumer):
                sensors.on_message_out(message.tp, message.offset, message)
        if done is not None:
            consumer.unacked.difference_update(messages[done:])
            return


def _take(app: faust.App, consumer: Any, message: Message) -> bool:
    """Whether ``message`` is processed now (as a stream decides); a taken message is tracked as unacked."""
    if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
        return False
    if not message.tracked and message.topic in app.topics.acking_topics:
        message.tracked = True
        consumer.unacked.add(message)
        app.sensors.on_message_in(message.tp, message.offset, message)
    return True
