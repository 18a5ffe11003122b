"""Worker roles on the real broker: a counting worker with no database decides, a sinks worker
in its own consumer group performs, and the effects land once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.harness.kafka import group_offsets
from tests.harness.pipeline import Pipeline, pipeline_settings
from tests.harness.services import Worker
from tests.harness.settings import settings_env
from tests.harness.smtp import Recorder, smtp_server
from tests.harness.waits import wait_for

pytestmark = pytest.mark.integration


def test_a_counting_worker_without_a_database_and_a_sinks_worker_in_its_own_group_perform_every_action_once(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    recorder = Recorder()
    with smtp_server(recorder) as smtp_port:
        settings = pipeline_settings("roles", kafka_bootstrap, postgres_url, smtp_port, tmp_path / "state")
        counting_env = settings_env(settings.model_copy(update={"role": "counting", "database_url": None}))
        sinks_env = settings_env(settings.model_copy(update={"role": "sinks"}))
        counting = Worker("streamapp.app", counting_env, tmp_path / "counting.log")
        sinks = Worker("streamapp.app", sinks_env, tmp_path / "sinks.log")
        try:
            counting.wait_ready()
            sinks.wait_ready()
            line = Pipeline(settings, recorder)
            line.workers.append(counting)
            shop = f"shop-{uuid.uuid4().hex[:8]}"
            line.add_rule(shop, "Credit at 2", 2, "credit", amount_cents=500)
            line.add_rule(shop, "Alert at 2", 2, "alert")
            line.pay(shop, "c1", "o1")
            second = line.pay(shop, "c1", "o2")
            line.pay(shop, "c1", "o2", event_id=second)  # redelivered
            line.drain()
            line.wait_effects(shop, credits=1, alerts=1)

            ledger = line.sql("SELECT customer_id, amount_cents FROM ledger_entries WHERE shop_id = $1", shop)
            assert [tuple(r) for r in ledger] == [("c1", 500)]
            actions = f"{settings.topic_prefix}actions"

            def committed_topics(group: str) -> set[str]:
                return {topic for topic, _ in asyncio.run(group_offsets(kafka_bootstrap, group))}

            wait_for(
                lambda: actions in committed_topics(f"{settings.app_id}-sinks"),
                timeout=30,
                what="the sinks group's commit",
            )
            assert actions not in committed_topics(settings.app_id)
        finally:
            sinks.stop()
            counting.stop()
