"""A worker SIGKILLed mid-stream and replaced: the ledger, emails and alerts come out exactly right."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from schemas.actions import Action
from streamapp.rules.order_count import action_id
from tests.harness.kafka import group_offsets, produce, read_all
from tests.harness.load import CREDIT_AT, payments, publish_count_rules
from tests.harness.pipeline import Pipeline, own_worker, pipeline_settings
from tests.harness.smtp import Recorder, smtp_server
from tests.harness.waits import wait_for

pytestmark = pytest.mark.integration

CUSTOMERS = [f"c{i:03d}" for i in range(60)]


def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    recorder = Recorder()
    with smtp_server(recorder) as smtp_port:
        # A short session timeout: the dead worker's partitions move within seconds.
        settings = pipeline_settings(
            "crash", kafka_bootstrap, postgres_url, smtp_port, tmp_path / "state", session_timeout_seconds=6
        )
        line = Pipeline(settings, recorder)
        shop = f"shop-{settings.app_id}"
        published = publish_count_rules(line, shop)
        rules, email, alert = published.credits, published.email, published.alert
        asyncio.run(produce(kafka_bootstrap, line.payments, payments(shop, CUSTOMERS)))

        first = own_worker(settings, tmp_path, "a")
        try:
            first.wait_ready()
            wait_for(
                lambda: line.sql("SELECT count(*) FROM ledger_entries")[0][0] >= 40,
                timeout=60,
                what="the first worker to be under way",
            )
        finally:
            first.stop(signal.SIGKILL)
        done_at_kill = line.sql("SELECT count(*) FROM ledger_entries")[0][0]
        # Diagnostic snapshot: what the dead worker committed, and what it had performed.
        committed_at_kill = asyncio.run(group_offsets(kafka_bootstrap, settings.app_id))

        second = own_worker(settings, tmp_path, "b")
        try:
            second.wait_ready()
            line.drain(timeout=120)
            expected_credits = len(CUSTOMERS) * len(CREDIT_AT)
            line.wait_effects(shop, credits=expected_credits, alerts=len(CUSTOMERS), emails=len(CUSTOMERS))
        except AssertionError:
            have = {r["action_id"] for r in line.sql("SELECT action_id FROM ledger_entries")}
            published = {a.action_id for a in line.actions(shop)}
            missing = sorted(
                (c, n) for c in CUSTOMERS for n in CREDIT_AT if action_id(shop, rules[n].rule_id, c, n) not in have
            )
            unpublished = sorted(
                (c, n) for c in CUSTOMERS for n in CREDIT_AT if action_id(shop, rules[n].rule_id, c, n) not in published
            )
            records = asyncio.run(read_all(kafka_bootstrap, f"{settings.topic_prefix}actions"))
            skipped = []
            positions = []
            for record in records:
                act = Action.model_validate_json(record.value)
                tp = (record.topic, record.partition)
                if act.effect.channel == "credit" and act.action_id not in have:
                    positions.append(f"{record.partition}@{record.offset}")
                if (
                    act.effect.channel == "credit"
                    and act.action_id not in have
                    and record.offset < committed_at_kill.get(tp, -1)
                ):
                    skipped.append((record.partition, record.offset, committed_at_kill.get(tp)))
            raise AssertionError(
                f"credits missing {missing}; never published {unpublished}; "
                f"below the dead worker's committed offset but never performed (partition, offset, committed): "
                f"{sorted(skipped)[:20]}; committed at kill: {committed_at_kill}; missing at {sorted(positions)}"
            ) from None
        finally:
            second.stop()

    assert done_at_kill < expected_credits, "the kill came after all the work: nothing was tested"
    ledger = line.sql("SELECT action_id, customer_id, amount_cents FROM ledger_entries WHERE shop_id = $1", shop)
    expected = {
        action_id(shop, rules[count].rule_id, c, count): (c, cents)
        for c in CUSTOMERS
        for count, cents in CREDIT_AT.items()
    }
    assert {r["action_id"]: (r["customer_id"], r["amount_cents"]) for r in ledger} == expected
    assert len(ledger) == len(expected)
    assert sum(r["amount_cents"] for r in ledger) == len(CUSTOMERS) * sum(CREDIT_AT.values())

    alerts = line.sql("SELECT action_id FROM alerts WHERE shop_id = $1", shop)
    assert sorted(r["action_id"] for r in alerts) == sorted(action_id(shop, alert.rule_id, c, 5) for c in CUSTOMERS)

    emails = {action_id(shop, email.rule_id, c, 3) for c in CUSTOMERS}
    sent = line.sql("SELECT action_id, status FROM deliveries WHERE shop_id = $1", shop)
    assert {r["action_id"]: r["status"] for r in sent} == dict.fromkeys(emails, "sent")
    received = Counter(m["X-Streamapp-Action-Id"] for m in recorder.messages)
    assert set(received) == emails
    # SMTP has no transaction: a kill between the server's "250" and our commit can send a
    # second copy. Every copy carries Message-ID <action_id@streamapp>, so receivers drop it.
    copies = [m for m in recorder.messages if received[m["X-Streamapp-Action-Id"]] > 1]
    assert all(m["Message-ID"] == f"<{m['X-Streamapp-Action-Id']}@streamapp>" for m in copies)
    assert sum(received.values()) - len(emails) <= 1, f"more than one in-flight email re-sent: {received}"
