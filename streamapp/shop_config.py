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
on any worker, without relying on luck.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import TypeAdapter, ValidationError

from schemas.config import (
    CatalogTemplate,
    CatalogToggle,
    ConfigRecord,
    EmailTemplate,
    OrderCountRule,
    Record,
    ShopAdmin,
    ShopProfile,
    SmsConnection,
    StripeConnection,
    config_key,
)
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.order_count import ShopView
from streamapp.settings import Settings
from streamapp.topics import SHOP_CONFIG, topic_name

logger = logging.getLogger(__name__)

_RECORD = TypeAdapter[Record](ConfigRecord)
_POLL_MS = 200


class ConfigStore:
    """The current configuration of every shop, built by applying log records in order."""

    def __init__(self) -> None:
        self._by_shop: dict[str, dict[str, Record]] = defaultdict(dict)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the log (a null value deletes its key). Bad records are skipped, logged."""
        if key is None:
            logger.error("shop-config record without a key skipped")
            return
        text = key.decode("utf-8", errors="replace")
        parts = text.split(":")
        if len(parts) != 3:
            logger.error("shop-config key %r is not <kind>:<shop>:<id>; skipped", text)
            return
        shop = parts[1]
        if value is None:
            self._by_shop[shop].pop(text, None)
            return
        try:
            record = _RECORD.validate_json(value)
        except ValidationError as exc:
            logger.error("shop-config record %s is invalid, skipped: %s", text, exc.errors()[0]["msg"])
            return
        self._by_shop[record.shop_id][config_key(record)] = record

    def rules(self, shop_id: str) -> list[OrderCountRule]:
        return sorted(
            (r for r in self._by_shop.get(shop_id, {}).values() if isinstance(r, OrderCountRule)),
            key=lambda rule: (rule.orders, rule.name, rule.rule_id),
        )

    def rule(self, shop_id: str, rule_id: str) -> OrderCountRule | None:
        record = self._by_shop.get(shop_id, {}).get(f"order_count_rule:{shop_id}:{rule_id}")
        return record if isinstance(record, OrderCountRule) else None

    def templates(self, shop_id: str) -> dict[str, EmailTemplate]:
        return {r.key: r for r in self._by_shop.get(shop_id, {}).values() if isinstance(r, EmailTemplate)}

    def shop_name(self, shop_id: str) -> str:
        profile = self._by_shop.get(shop_id, {}).get(f"shop:{shop_id}:{shop_id}")
        return profile.name if isinstance(profile, ShopProfile) else shop_id

    def profile(self, shop_id: str) -> ShopProfile | None:
        profile = self._by_shop.get(shop_id, {}).get(f"shop:{shop_id}:{shop_id}")
        return profile if isinstance(profile, ShopProfile) else None

    def catalog_toggles(self, shop_id: str) -> dict[str, CatalogToggle]:
        """The shop's catalog on/off states, by rule key."""
        return {r.rule: r for r in self._by_shop.get(shop_id, {}).values() if isinstance(r, CatalogToggle)}

    def catalog_templates(self, shop_id: str) -> dict[str, CatalogTemplate]:
        """The shop's wording overrides, by rule key."""
        return {r.rule: r for r in self._by_shop.get(shop_id, {}).values() if isinstance(r, CatalogTemplate)}

    def admins(self, shop_id: str) -> list[ShopAdmin]:
        """The shop's admins, by id."""
        found = (r for r in self._by_shop.get(shop_id, {}).values() if isinstance(r, ShopAdmin))
        return sorted(found, key=lambda admin: admin.admin_id)

    def sms_connection(self, shop_id: str) -> SmsConnection | None:
        record = self._by_shop.get(shop_id, {}).get(f"sms_connection:{shop_id}:{shop_id}")
        return record if isinstance(record, SmsConnection) else None

    def stripe_connection(self, shop_id: str) -> StripeConnection | None:
        record = self._by_shop.get(shop_id, {}).get(f"stripe_connection:{shop_id}:{shop_id}")
        return record if isinstance(record, StripeConnection) else None

    def view(self, shop_id: str) -> ShopView:
        """What the order-count decision needs of ``shop_id``."""
        return ShopView(shop_name=self.shop_name(shop_id), rules=self.rules(shop_id), templates=self.templates(shop_id))


class ConfigFollower:
    """Reads the whole ``shop-config`` topic into :attr:`store` and keeps following it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = topic_name(settings, SHOP_CONFIG)
        self.store = ConfigStore()
        #: Every record produced before this wall-clock time (epoch seconds) is applied.
        self.watermark = 0.0
        self._advanced = asyncio.Event()
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
        try:
            await consumer.start()
            if self.topic not in await consumer.topics():
                raise ConfigurationError(f"topic {self.topic} does not exist; run `streamapp topics create`")
            while True:
                await self._round(consumer)
        finally:
            await consumer.stop()

    def _apply(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for records in batches.values():
            for record in records:
                self.store.apply(record.key, record.value)

    async def _round(self, consumer: AIOKafkaConsumer) -> None:
        started = time.time()
        partitions = consumer.assignment()
        if not partitions:  # metadata not there yet
            self._apply(await consumer.getmany(timeout_ms=_POLL_MS))
            return
        ends = await consumer.end_offsets(list(partitions))
        while await _behind(consumer, ends):
            self._apply(await consumer.getmany(timeout_ms=_POLL_MS))
        self.watermark = started
        if not self.caught_up.is_set():
            logger.info("shop-config loaded from %s", self.topic)
            self.caught_up.set()
        self._advanced.set()
        self._advanced.clear()
        await asyncio.sleep(_POLL_MS / 1000)

    async def wait_until(self, moment: datetime, timeout: float) -> bool:
        """Wait until the configuration is applied up to ``moment`` (or now, if that is later
        than now); False if ``timeout`` seconds passed first."""
        target = min(moment.timestamp(), time.time())
        deadline = time.monotonic() + timeout
        while self.watermark < target:
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
