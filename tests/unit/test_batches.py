"""The batch path's sending (:class:`streamapp.batches.Effects`) against a stand-in for aiokafka's producer.

What a batch hands the producer: one record batch per topic partition, split when full, in the
order the records were added; a record too large for a batch sent alone, after what came before
it on its partition; failures sent again; the changelog offsets each table's store is told.
Kafka itself is in the integration tests (every counted payment takes this path).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.types import Message

from streamapp import batches
from streamapp.batches import Effects, Record


class Builder:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes | None) -> object | None:
        if len(value or b"") > 100 or len(self.records) == self.capacity:
            return None
        self.records.append((key, value))
        return object()


class Producer:
    """Records what is sent, as (topic, partition, [(key, value)]); the first ``failing`` sends fail."""

    def __init__(self, capacity: int = 3, failing: int = 0) -> None:
        self.capacity = capacity
        self.failing = failing
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []
        self.next_offset: dict[tuple[str, int], int] = {}

    def _partition(self, topic: str, partition: None, key: bytes, value: None, *_: Any) -> int:
        return len(key) % 2

    def create_batch(self) -> Builder:
        return Builder(self.capacity)

    async def send_batch(self, batch: Builder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        return self._done(topic, partition, batch.records)

    async def send(self, topic: str, value: bytes, *, key: bytes, partition: int) -> asyncio.Future[Any]:
        return self._done(topic, partition, [(key, value)])

    def _done(self, topic: str, partition: int, records: list[Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failing:
            self.failing -= 1
            future.set_exception(KafkaTimeoutError())
            return future
        self.sent.append((topic, partition, list(records)))
        base = self.next_offset.get((topic, partition), 0)
        self.next_offset[(topic, partition)] = base + len(records)
        tp = SimpleNamespace(topic=topic, partition=partition)
        future.set_result(SimpleNamespace(offset=base, topic_partition=tp))
        return future


class Store:
    def __init__(self) -> None:
        self.persisted: dict[tuple[str, int], int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[(tp.topic, tp.partition)] = offset


def effects_of(producer: Producer) -> Effects:
    app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
    return Effects(app)  # type: ignore[arg-type]


def test_records_go_out_as_one_batch_per_partition_in_order_split_when_full() -> None:
    producer = Producer(capacity=3)
    effects = effects_of(producer)
    for i in range(5):
        effects.add(Record("changelog", b"k%d" % i, b"v%d" % i, partition=1))
    effects.add(Record("actions", b"ab", b"even"))  # the producer's partitioner: partition 0
    effects.add(Record("actions", b"abc", b"odd"))  # partition 1
    asyncio.run(effects.confirm("test"))
    assert producer.sent == [
        ("changelog", 1, [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]),
        ("changelog", 1, [(b"k3", b"v3"), (b"k4", b"v4")]),
        ("actions", 0, [(b"ab", b"even")]),
        ("actions", 1, [(b"abc", b"odd")]),
    ]


def test_a_record_larger_than_a_batch_goes_alone_after_what_came_before_it() -> None:
    producer = Producer(capacity=10)
    effects = effects_of(producer)
    effects.add(Record("changelog", b"a", b"1", partition=0))
    effects.add(Record("changelog", b"big", b"x" * 500, partition=0))
    effects.add(Record("changelog", b"b", b"2", partition=0))
    asyncio.run(effects.confirm("test"))
    assert producer.sent == [
        ("changelog", 0, [(b"a", b"1")]),
        ("changelog", 0, [(b"big", b"x" * 500)]),
        ("changelog", 0, [(b"b", b"2")]),
    ]


def test_each_table_store_is_told_the_last_changelog_offset_it_holds() -> None:
    producer = Producer(capacity=2)
    store = Store()
    table = SimpleNamespace(data=store)
    effects = effects_of(producer)
    for i in range(5):
        effects.add(Record("changelog", b"k", b"%d" % i, partition=2, table=table))
    effects.add(Record("actions", b"ab", b"no table"))
    asyncio.run(effects.confirm("test"))
    assert store.persisted == {("changelog", 2): 4}


def test_a_failed_send_is_sent_again_whole_until_it_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "backoff", lambda attempt: 0.0)
    producer = Producer(capacity=10, failing=2)
    effects = effects_of(producer)
    effects.add(Record("changelog", b"a", b"1", partition=0))
    effects.add(Record("actions", b"ab", b"x"))
    asyncio.run(effects.confirm("test"))
    # Attempt 1: both fail. Attempt 2: all again (both sent, so nothing older lands after newer).
    assert producer.sent == [("changelog", 0, [(b"a", b"1")]), ("actions", 0, [(b"ab", b"x")])]


def test_a_failure_that_is_not_a_send_failure_is_raised() -> None:
    producer = Producer()

    async def broken(*args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(ZeroDivisionError())
        return future

    producer.send_batch = broken  # type: ignore[method-assign]
    effects = effects_of(producer)
    effects.add(Record("actions", b"ab", b"x"))
    with pytest.raises(ZeroDivisionError):
        asyncio.run(effects.confirm("test"))


class HeldProducer(Producer):
    """Every record batch it is given stays unconfirmed until the test resolves its future."""

    def __init__(self) -> None:
        super().__init__(capacity=10)
        self.held: list[asyncio.Future[Any]] = []

    def _done(self, topic: str, partition: int, records: list[Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held.append(future)
        self.sent.append((topic, partition, list(records)))
        return future


def fake_app(producer: Producer) -> Any:
    return SimpleNamespace(
        flow_control=SimpleNamespace(is_active=lambda: True),
        consumer_generation_id=None,
        topics=SimpleNamespace(acking_topics=set()),
        consumer=SimpleNamespace(unacked=set()),
        sensors=SimpleNamespace(on_message_in=lambda *a: None, on_message_out=lambda *a: None),
        producer=SimpleNamespace(_ensure_producer=lambda: producer),
    )


async def test_batch_paths_sharing_a_lock_never_read_each_others_unconfirmed_writes() -> None:
    """One table written by two batch paths: the second may not start a batch while the first's
    records are unconfirmed (its changelog would stop being a prefix of the table's writes)."""
    producer = HeldProducer()
    app = fake_app(producer)
    lock = asyncio.Lock()
    first, second = SimpleNamespace(queue=asyncio.Queue()), SimpleNamespace(queue=asyncio.Queue())
    handled: list[str] = []

    async def write(messages: list[Message], effects: Effects) -> None:
        handled.append(messages[0].topic)
        effects.add(Record("changelog", b"k", messages[0].value, partition=0))

    tasks = [asyncio.create_task(batches.run_batches(app, channel, write, lock=lock)) for channel in (first, second)]
    try:
        first.queue.put_nowait(Message("payments", 0, 1, 0.0, 0, [], b"k", b"1", None))
        while not producer.held:
            await asyncio.sleep(0)
        second.queue.put_nowait(Message("payments-by-customer", 0, 1, 0.0, 0, [], b"k", b"2", None))
        for _ in range(20):
            await asyncio.sleep(0)
        assert handled == ["payments"], "the second path ran while the first's records were unconfirmed"

        tp = SimpleNamespace(topic="changelog", partition=0)
        producer.held[0].set_result(SimpleNamespace(offset=0, topic_partition=tp))
        while len(handled) < 2:
            await asyncio.sleep(0)
        assert handled == ["payments", "payments-by-customer"]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
