"""Workaround 6 of :mod:`streamapp.faust_fixes`, against the real broker.

A fetch that is waiting when a rebalance begins does not end with it: aiokafka waits out the
rebalance and drains the new assignment's records for the partition set it was given before.
Faust discards such a batch (its flow is stopped), and nothing puts a changelog partition back:
table recovery then waited forever for records the consumer had already passed. The workaround
puts back whatever a fetch drained under an assignment other than the one it began under.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streamapp import faust_fixes
from tests.harness.kafka import create_topic, read_values, wait_assigned

pytestmark = pytest.mark.integration

#: What the stub consumer thread's Faust consumer says: the flow is on, so the fetch is made.
_THREAD = SimpleNamespace(consumer=SimpleNamespace(flow_active=True))


class _Group:
    """A topic of two empty partitions and a consumer ``first`` that owns both, in one group."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.topic = f"refetch-{uuid.uuid4().hex[:8]}"
        self.partitions = {TopicPartition(self.topic, 0), TopicPartition(self.topic, 1)}
        self.consumers: list[AIOKafkaConsumer] = []

    async def join(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=f"group-{self.topic}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            heartbeat_interval_ms=200,
        )
        self.consumers.append(consumer)
        await consumer.start()
        return consumer

    async def produce(self, per_partition: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for tp in sorted(self.partitions):
                for n in range(per_partition):
                    await producer.send_and_wait(self.topic, f"{tp.partition}-{n}".encode(), partition=tp.partition)
        finally:
            await producer.stop()

    async def fetch_across_a_rebalance(self, fetch_records: Any) -> tuple[AIOKafkaConsumer, TopicPartition, Any]:
        """Begin a fetch for both partitions, let a second member join, then produce: returns the
        first member, the partition it kept and what the fetch returned."""
        first = await self.join()
        await wait_assigned(first, 2)
        fetch = asyncio.ensure_future(fetch_records(_THREAD, first, set(self.partitions), timeout=60.0))
        await asyncio.sleep(0.5)
        assert not fetch.done()  # waiting for records that are not there yet
        second = await self.join()
        (kept,) = await wait_assigned(first, 1)
        await wait_assigned(second, 1)
        await self.produce(3)
        return first, kept, await asyncio.wait_for(fetch, 60)


@pytest.fixture
async def group(kafka_bootstrap: str) -> AsyncIterator[_Group]:
    group = _Group(kafka_bootstrap)
    await create_topic(kafka_bootstrap, group.topic, 2)
    try:
        yield group
    finally:
        for consumer in group.consumers:
            await consumer.stop()


async def test_upstream_a_fetch_begun_before_a_rebalance_drains_the_new_assignment(group: _Group) -> None:
    faust_fixes.apply()
    upstream = AIOKafkaConsumerThread._fetch_records.__wrapped__  # type: ignore[attr-defined]
    first, kept, records = await group.fetch_across_a_rebalance(upstream)
    # The records of the partition the member kept, drained for a caller that asked in the old
    # generation: the position has moved past them, whatever the caller does with them.
    offsets = [record.offset for record in records.pop(kept)]
    assert records == {}
    assert offsets == list(range(len(offsets))) and offsets  # from the start, in the new generation
    assert await first.position(kept) == len(offsets)


async def test_a_fetch_that_outlived_its_assignment_puts_back_what_it_drained(group: _Group) -> None:
    faust_fixes.apply()
    first, kept, records = await group.fetch_across_a_rebalance(AIOKafkaConsumerThread._fetch_records)
    assert records == {}
    assert await first.position(kept) == 0
    assert await read_values(first, kept, 3) == [f"{kept.partition}-{n}".encode() for n in range(3)]


async def test_a_fetch_within_one_assignment_returns_its_records(group: _Group) -> None:
    faust_fixes.apply()
    first = await group.join()
    await wait_assigned(first, 2)
    await group.produce(2)
    records: dict[TopicPartition, list[Any]] = {}
    for _ in range(50):
        batch = await AIOKafkaConsumerThread._fetch_records(_THREAD, first, set(group.partitions), timeout=1.0)  # type: ignore[arg-type]
        for tp, values in batch.items():
            records.setdefault(tp, []).extend(r.offset for r in values)
        if sum(map(len, records.values())) >= 4:
            break
    assert records == {tp: [0, 1] for tp in group.partitions}
