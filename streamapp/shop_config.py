"""Shop configuration: the compacted ``shop-config`` log, materialised in every worker.

Each worker reads *every* partition of the topic (no consumer group: a broadcast,
not a split) into a :class:`ConfigStore`, then keeps following it, so rule and
template changes reach running workers without a restart.

Faust's GlobalTable would do this in principle, but leaves changelog partitions
paused on some workers (faust-streaming #283), so this is a plain aiokafka consumer.

**Config watermark.** After each round the follower knows: every configuration
record produced before time W has been applied. An event is judged against the
configuration as of its occurrence: the agent waits (bounded) until W passes the
event's ``occurred_at`` — so a rule created just before a payment is seen by it,
on any worker, without relying on luck. Rounds run every :data:`_POLL_MS`, and at once when
an event waits for one: a live event then waits one round, not the rest of the poll interval.
A round asks the end offsets through a consumer of its own that never fetches: a broker answers
a connection's requests in order, so on the follower's connection the request would queue behind
the long-polling fetch (up to ``fetch_max_wait_ms``, 500 ms) whenever no configuration changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from schemas.config import (
    Record,
    config_key,
)
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.rules.config_store import ConfigStore
from streamapp.settings import Settings
from streamapp.topics import SHOP_CONFIG, topic_name

logger = logging.getLogger(__name__)

_POLL_MS = 200


class ConfigFollower:
    """Reads the whole ``shop-config`` topic into :attr:`store` and keeps following it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = topic_name(settings, SHOP_CONFIG)
        self.store = ConfigStore()
        #: Every record produced before this wall-clock time (epoch seconds) is applied.
        self.watermark = 0.0
        self._advanced = asyncio.Event()
        #: Set by a waiter: start the next round now.
        self._wanted = asyncio.Event()
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        """Follow the topic until cancelled."""
        # Subscribed without a group: aiokafka assigns this consumer every partition.
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        offsets = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, group_id=None, enable_auto_commit=False
        )
        try:
            await consumer.start()
            await offsets.start()
            if self.topic not in await consumer.topics():
                raise ConfigurationError(f"topic {self.topic} does not exist; run `streamapp topics create`")
            while True:
                await self._round(consumer, offsets)
        finally:
            await offsets.stop()
            await consumer.stop()

    def _apply(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for records in batches.values():
            for record in records:
                self.store.apply(record.key, record.value)

    async def _round(self, consumer: AIOKafkaConsumer, offsets: AIOKafkaConsumer) -> None:
        self._wanted.clear()
        started = time.time()
        partitions = consumer.assignment()
        if not partitions:  # metadata not there yet
            self._apply(await consumer.getmany(timeout_ms=_POLL_MS))
            return
        ends = await offsets.end_offsets(list(partitions))
        while await _behind(consumer, ends):
            self._apply(await consumer.getmany(timeout_ms=_POLL_MS))
        self.watermark = started
        if not self.caught_up.is_set():
            logger.info("shop-config loaded from %s", self.topic)
            self.caught_up.set()
        self._advanced.set()
        self._advanced.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wanted.wait(), _POLL_MS / 1000)

    async def wait_until(self, moment: datetime, timeout: float) -> bool:
        """Wait until the configuration is applied up to ``moment`` (or now, if that is later
        than now); False if ``timeout`` seconds passed first."""
        target = min(moment.timestamp(), time.time())
        deadline = time.monotonic() + timeout
        while self.watermark < target:
            self._wanted.set()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._advanced.wait(), remaining)
            except TimeoutError:
                return False
        return True


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


async def publish(settings: Settings, record: Record) -> None:
    """Write ``record`` to the shop-config log and wait until the broker has it."""
    await _send(settings, config_key(record), record.model_dump_json().encode())


async def delete(settings: Settings, key: str) -> None:
    """Write a tombstone for ``key`` (``<kind>:<shop_id>:<id>``): the record is gone once applied."""
    await _send(settings, key, None)


async def _send(settings: Settings, key: str, value: bytes | None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic_name(settings, SHOP_CONFIG), key=key.encode(), value=value)
    except Exception as exc:
        raise RetryableError(f"could not write to {topic_name(settings, SHOP_CONFIG)}: {exc}") from exc
    finally:
        await producer.stop()


async def load(settings: Settings, timeout: float = 30.0) -> ConfigStore:
    """The current configuration: the whole log, read once to its end."""
    follower = ConfigFollower(settings)
    task = asyncio.create_task(follower.run())
    loaded = asyncio.create_task(follower.caught_up.wait())
    try:
        done, _ = await asyncio.wait({task, loaded}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises what stopped it
        if not follower.caught_up.is_set():
            raise RetryableError(f"could not read {follower.topic} within {timeout:.0f}s")
        return follower.store
    finally:
        for pending in (task, loaded):
            pending.cancel()
        await asyncio.gather(task, loaded, return_exceptions=True)
