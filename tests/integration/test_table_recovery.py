"""The harness is real: a Faust table survives a worker replacement through its changelog.

A broker that misreports end offsets (as Tansu 0.6 did: last batch's base offset + 1)
makes Faust stop recovery early, and a recovered count comes back stale. Exact
equality after recovery, and counts that continue from there, catch that.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Callable

import pytest

from streamapp.settings import Settings
from tests.harness.kafka import create_topic, produce
from tests.harness.services import Worker
from tests.harness.settings import settings_env
from tests.harness.waits import wait_for

pytestmark = pytest.mark.integration

KEYS = [f"customer-{i}" for i in range(7)]


def keyed_events(counts: dict[str, int]) -> list[tuple[bytes, bytes]]:
    # Interleave keys so each partition holds several producer batches.
    records: list[tuple[bytes, bytes]] = []
    remaining = dict(counts)
    while any(remaining.values()):
        for key in KEYS:
            if remaining.get(key):
                remaining[key] -= 1
                records.append((key.encode(), b"{}"))
    return records


def table_equals(worker: Worker, expected: dict[str, int]) -> bool:
    answer = worker.get("/counts")
    return answer is not None and answer[0] == 200 and answer[1] == expected


def test_fresh_worker_recovers_exact_counts_and_continues(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., Worker], tmp_path
) -> None:
    settings = settings_factory()
    bootstrap = settings.kafka_bootstrap_servers or ""
    source = f"{settings.topic_prefix}counts-in"
    asyncio.run(create_topic(bootstrap, source, settings.topic_partitions))
    env = {**settings_env(settings), "COUNT_SOURCE_TOPIC": source}

    first_batch = {key: 7 * (i + 1) for i, key in enumerate(KEYS)}  # 7, 14, ... 49: 196 events
    asyncio.run(produce(bootstrap, source, keyed_events(first_batch)))

    first = worker_factory("tests.harness.countapp", {**env, "STREAMAPP_DATA_DIR": str(tmp_path / "a")})
    first.wait_ready()
    wait_for(lambda: table_equals(first, first_batch), timeout=60, what="first worker to count the backlog")
    code = first.stop(signal.SIGTERM, timeout=30)
    assert code == 0, f"worker did not stop cleanly (exit {code}):\n{first.process.log_tail()}"

    # Empty local state: everything the new worker knows comes from the changelog.
    second = worker_factory("tests.harness.countapp", {**env, "STREAMAPP_DATA_DIR": str(tmp_path / "b")})
    second.wait_ready()
    answer = second.get("/counts")
    assert answer is not None and answer[0] == 200
    assert answer[1] == first_batch, "recovered table differs from the counts before the restart"

    second_batch = {key: 3 for key in KEYS}
    asyncio.run(produce(bootstrap, source, keyed_events(second_batch)))
    expected = dict(Counter(first_batch) + Counter(second_batch))
    wait_for(lambda: table_equals(second, expected), timeout=60, what="counts to continue from the recovered table")
