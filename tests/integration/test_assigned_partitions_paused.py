"""Workaround 1 of :mod:`streamapp.faust_fixes`, against the real broker.

When a rebalance assigns partitions, Faust's ``Consumer.on_partitions_assigned`` marks them all
active (fetchable), then calls the app's handler, which pauses them only after several awaits and
resumes the stream partitions once recovery has sought them to their committed offsets. On a
worker's first assignment nothing was revoked, so the flow was never stopped, and Faust's fetch
loop, running during those awaits, drained stream partitions from wherever aiokafka positioned
them: a worker replacing a SIGKILLed one skipped messages. The workaround makes newly assigned
partitions start paused.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streamapp.factory import create_app
from streamapp.settings import Settings
from tests.harness.kafka import create_topic, produce, wait_assigned

pytestmark = pytest.mark.integration

RECORDS = 6


class _Worker:
    """A fresh worker's Faust consumer on a real group member that owns both partitions of a topic
    holding ``RECORDS`` records between them; its thread's fetch runs in this loop on that member."""

    def __init__(self, settings: Settings, member: AIOKafkaConsumer) -> None:
        self.member = member
        self.app = create_app(settings, autodiscover=False)
        self.consumer: Any = self.app.consumer
        fetch = AIOKafkaConsumerThread._fetch_records
        thread = SimpleNamespace(consumer=self.consumer)  # the thread checks this consumer's flow
        self.consumer._thread = SimpleNamespace(
            getmany=lambda active, timeout: fetch(thread, member, active, timeout=timeout)  # type: ignore[arg-type]
        )
        self.consumer._on_partitions_assigned = self.app_on_partitions_assigned
        #: The offsets Faust's fetch loop got while the app's handler ran, before it paused anything.
        self.fetched_before_pause: dict[TopicPartition, list[int]] = {}

    async def fetch(self, timeout: float, into: dict[TopicPartition, list[int]]) -> None:
        """One turn of Faust's fetch loop (``Consumer.getmany`` asks for the next records so)."""
        records, _active = await self.consumer._wait_next_records(timeout)
        for tp, batch in (records or {}).items():
            into.setdefault(tp, []).extend(record.offset for record in batch)

    async def app_on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """Stands in for the app's handler: one turn of Faust's fetch loop during its awaits, then the pause."""
        await self.fetch(10.0, self.fetched_before_pause)
        self.consumer.pause_partitions(assigned)

    async def assign(self, on_partitions_assigned: Callable[..., Any], assigned: set[TP]) -> None:
        """The rebalance's assignment as Faust's consumer thread hands it over."""
        await on_partitions_assigned(self.consumer, assigned, 1)

    async def positions(self) -> dict[TopicPartition, int]:
        return {tp: await self.member.position(tp) for tp in self.member.assignment()}

    async def fetch_all(self) -> dict[TopicPartition, list[int]]:
        """The offsets Faust's fetch loop gets until every record arrived (or 20 turns passed)."""
        offsets: dict[TopicPartition, list[int]] = {}
        for _ in range(20):
            await self.fetch(1.0, offsets)
            if sum(map(len, offsets.values())) >= RECORDS:
                break
        return offsets


@pytest.fixture
async def worker(kafka_bootstrap: str, settings_factory: Callable[..., Settings]) -> AsyncIterator[_Worker]:
    topic = f"assigned-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_bootstrap, topic, 2)
    await produce(kafka_bootstrap, topic, [(f"k{n}".encode(), f"v{n}".encode()) for n in range(RECORDS)])
    member = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await member.start()
    try:
        await wait_assigned(member, 2)
        yield _Worker(settings_factory(), member)
    finally:
        await member.stop()


def _assigned(worker: _Worker) -> set[TP]:
    return {TP(tp.topic, tp.partition) for tp in worker.member.assignment()}


async def test_upstream_a_fetch_during_the_assignment_drains_the_new_partitions(worker: _Worker) -> None:
    upstream = Consumer.on_partitions_assigned.__wrapped__  # type: ignore[attr-defined]
    await worker.assign(upstream, _assigned(worker))
    # Drained before recovery could seek them: the position has moved past these records.
    assert worker.fetched_before_pause
    positions = await worker.positions()
    assert all(positions[tp] > 0 for tp in worker.fetched_before_pause)


async def test_newly_assigned_partitions_are_not_fetched_until_recovery_resumes_them(worker: _Worker) -> None:
    assigned = _assigned(worker)
    await worker.assign(Consumer.on_partitions_assigned, assigned)
    assert worker.fetched_before_pause == {}, "fetched before recovery sought and resumed them"
    assert set((await worker.positions()).values()) == {0}

    worker.consumer.resume_partitions(assigned)  # what recovery does after its seek
    offsets = await worker.fetch_all()
    assert offsets == {tp: list(range(len(offsets[tp]))) for tp in offsets}  # each from its start
    assert sum(map(len, offsets.values())) == RECORDS
