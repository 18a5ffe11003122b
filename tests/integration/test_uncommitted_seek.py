"""Workaround 4 of :mod:`streamapp.faust_fixes`, against the real broker.

Faust repairs every fetch it discards (flow stopped by a rebalance, partition no longer active)
with a seek to the committed offsets. aiokafka's ``seek_to_committed`` does not move a partition
the group never committed, so what the discarded fetch skipped is never read; the reliability
suite lost a partition's first payment that way. The workaround moves such a partition to its start.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import ThreadDelegateConsumer

from streamapp import faust_fixes
from tests.harness.kafka import create_topic, produce, read_values

pytestmark = pytest.mark.integration


async def test_a_never_committed_partition_is_read_again_from_its_start_after_the_seek(kafka_bootstrap: str) -> None:
    topic = f"uncommitted-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce(kafka_bootstrap, topic, [(b"c1", b"first"), (b"c1", b"second")])
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        # Fetched, then discarded unprocessed (as Faust does to a batch that meets a stopped flow).
        assert await read_values(consumer, tp, 2) == [b"first", b"second"]
        assert await consumer.position(tp) == 2

        # Upstream: the seek that should repair it leaves the partition where it was.
        assert await consumer.seek_to_committed() == {tp: None}
        assert await consumer.position(tp) == 2

        faust_fixes.apply()
        thread = SimpleNamespace(
            seek_to_committed=consumer.seek_to_committed, seek_to_beginning=consumer.seek_to_beginning
        )
        faust_consumer = SimpleNamespace(_thread=thread, _is_changelog_tp=lambda tp: False)
        assert await ThreadDelegateConsumer.seek_to_committed(faust_consumer) == {tp: None}  # type: ignore[arg-type]
        assert await consumer.position(tp) == 0
        assert await read_values(consumer, tp, 2) == [b"first", b"second"]
    finally:
        await consumer.stop()
