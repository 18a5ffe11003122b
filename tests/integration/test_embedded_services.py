"""The embedded broker and database are real, correct, and never outlive their command."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamapp.db import upgrade
from streamapp.embedded.process import free_port
from tests.harness.kafka import create_topic, produce
from tests.harness.services import REPO_ROOT, descendants, http_get, pid_alive
from tests.harness.waits import wait_for

pytestmark = pytest.mark.integration


def test_end_offsets_count_every_record_across_batches(kafka_bootstrap: str) -> None:
    topic = f"offsets-{os.getpid()}-{id(object())}"

    async def scenario() -> tuple[int, int]:
        await create_topic(kafka_bootstrap, topic, 1)
        total = 0
        for size in (5, 17, 3):  # three separate producer runs: three or more batches
            total += await produce(kafka_bootstrap, topic, [(b"k", b"v")] * size)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            seen = 0
            while seen < total:
                batch = await consumer.getmany(tp, timeout_ms=5000)
                assert batch, "no records within 5s"
                seen += sum(len(records) for records in batch.values())
            return total, end
        finally:
            await consumer.stop()

    total, end = asyncio.run(scenario())
    assert end == total == 25


def test_postgres_round_trip_with_migrations(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)  # idempotent: already at head

    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            insert = (
                "INSERT INTO ledger_entries (action_id, shop_id, customer_id, amount_cents, reason) "
                "VALUES ($1, 'shop-1', 'cust-1', $2, 'order count 10') ON CONFLICT (action_id) DO NOTHING"
            )
            assert await conn.execute(insert, "act-1", 2000) == "INSERT 0 1"
            assert await conn.execute(insert, "act-1", 2000) == "INSERT 0 0"
            assert await conn.execute(insert, "act-2", 500) == "INSERT 0 1"
            balance = await conn.fetchval(
                "SELECT sum(amount_cents) FROM ledger_entries WHERE shop_id = 'shop-1' AND customer_id = 'cust-1'"
            )
            assert balance == 2500
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("UPDATE ledger_entries SET amount_cents = 1 WHERE action_id = 'act-1'")
        finally:
            await conn.close()

    asyncio.run(scenario())


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "STREAMAPP_TWILIO_API_URL", "STREAMAPP_SECRET_KEY"}
    }
    env["STREAMAPP_DATA_DIR"] = str(tmp_path / "state")
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


_HOLDER = """
import signal, sys
from streamapp.embedded.stack import EmbeddedStack
from streamapp.settings import Settings
stack = EmbeddedStack(Settings())
stack.__enter__()
print(stack.kafka.pid, stack.postgres.pid, flush=True)
signal.pause()
"""


def test_services_die_with_a_sigkilled_parent(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, text=True, env=_clean_env(tmp_path), cwd=REPO_ROOT
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()  # bounded by the suite's per-test timeout
        kafka_pid, postgres_pid = (int(pid) for pid in line.split())
        assert pid_alive(kafka_pid) and pid_alive(postgres_pid)
        below = descendants(holder.pid)
        assert {kafka_pid, postgres_pid} <= below
    finally:
        holder.kill()
        holder.wait()
    wait_for(lambda: not any(pid_alive(pid) for pid in below), timeout=30, what="orphaned services to exit")


def test_run_command_plays_the_demo_serves_health_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "run.out"
    port = str(free_port())
    with open(out, "w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "streamapp", "run", "--demo", "--web-port", port],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=_clean_env(tmp_path),
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "ready       (Ctrl-C" in out.read_text() or run.poll() is not None,
            timeout=120,
            what="`streamapp run`",
        )
        assert run.poll() is None, out.read_text()
        printed = out.read_text()
        assert "credits   ann $20.00, ben $20.00" in printed, printed
        assert "emails    15 sent" in printed and "alerts    1 " in printed, printed
        assert "sms       2 sent to +15551234567 through Twilio" in printed, printed
        assert "admins    6 notifications (3 each for maria, sam), 3 toasts" in printed, printed
        mail = list((tmp_path / "state" / "mail").glob("*.eml"))
        assert len(mail) == 15
        subjects = {line for path in mail for line in path.read_text().splitlines() if line.startswith("Subject: ")}
        assert "Subject: Your order 500 business cards (J-1042) is in production" in subjects, subjects
        assert "Subject: Reminder: invoice INV-1990 is past due" in subjects, subjects
        assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})
        status, body = http_get(f"http://127.0.0.1:{port}/readyz") or (None, None)
        assert status == 200 and body["ready"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert "streamapp_messages_received" in metrics
        below = descendants(run.pid)
        assert len(below) >= 4, f"expected Kafka, PostgreSQL, Prism and a worker below the run command, got {below}"
        # Ctrl-C in a terminal signals the whole foreground process group.
        os.killpg(run.pid, signal.SIGINT)
        assert run.wait(timeout=60) == 0, out.read_text()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    wait_for(lambda: not any(pid_alive(pid) for pid in below), timeout=30, what="services to exit after Ctrl-C")
    assert "stopped" in out.read_text()


def test_a_sigkilled_run_command_leaves_no_worker_or_service_behind(tmp_path: Path) -> None:
    out = tmp_path / "run.out"
    with open(out, "w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "streamapp", "run", "--web-port", str(free_port())],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=_clean_env(tmp_path),
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        ready = "ready       (Ctrl-C"
        wait_for(lambda: ready in out.read_text() or run.poll() is not None, timeout=120, what="`streamapp run`")
        assert run.poll() is None, out.read_text()
        below = descendants(run.pid)
        assert len(below) >= 3, f"expected Kafka, PostgreSQL and a worker below the run command, got {below}"
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # no chance to stop anything: the kernel must
        run.wait()
    # The worker's broker dies with it: told to stop gracefully, it could wait for it forever.
    wait_for(lambda: not any(pid_alive(pid) for pid in below), timeout=30, what="children of a SIGKILLed run")
