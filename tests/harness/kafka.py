"""Small aiokafka helpers for integration tests (topic creation, producing keyed events)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def create_topic(
    bootstrap: str, name: str, partitions: int, *, compacted: bool = False, configs: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {**({"cleanup.policy": "compact"} if compacted else {}), **(configs or {})}
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Send keyed records (batched by the producer), wait for every ack; returns the count."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for key, value in records]
        for future in futures:
            await future
    finally:
        await producer.stop()
    return len(futures)


async def group_lag(bootstrap: str, group: str, topics: list[str]) -> dict[TopicPartition, int]:
    """Messages of ``topics`` not yet committed by consumer group ``group``, per partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics(topics)
        partitions = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
        ends = await consumer.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(group)
        return {tp: end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items()}
    finally:
        await consumer.stop()
        await admin.close()


async def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``, from the beginning to the end offsets as of the call."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout):
            while not consumer.assignment():  # no group: every partition, once metadata arrives
                for batch in (await consumer.getmany(timeout_ms=100)).values():
                    records.extend(batch)
            partitions = list(consumer.assignment())
            ends = await consumer.end_offsets(partitions)
            remaining = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
            while remaining:
                for tp, batch in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                    records.extend(batch)
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return records


async def group_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The committed offsets of consumer group ``group``: (topic, partition) -> offset."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {
            (tp.topic, tp.partition): meta.offset
            for tp, meta in (await admin.list_consumer_group_offsets(group)).items()
        }
    finally:
        await admin.close()


async def read_values(consumer: AIOKafkaConsumer, tp: TopicPartition, count: int) -> list[bytes]:
    """The values ``consumer`` (in a group, already assigned ``tp``) reads next from ``tp``, until
    ``count`` arrived or 100 polls of 200 ms passed."""
    values: list[bytes] = []
    for _ in range(100):
        batch = await consumer.getmany(tp, timeout_ms=200)
        values.extend(record.value for record in batch.get(tp, []) if record.value is not None)
        if len(values) >= count:
            break
    return values


async def wait_assigned(consumer: AIOKafkaConsumer, count: int) -> set[TopicPartition]:
    """The partitions of ``consumer`` (in a group) once it holds ``count`` of them; fails after 30 s."""
    for _ in range(300):
        if len(consumer.assignment()) == count:
            return set(consumer.assignment())
        await asyncio.sleep(0.1)
    raise AssertionError(f"never assigned {count} partitions: {consumer.assignment()}")
