"""Runs the ``streamapp`` command line as users do, against one test's broker and database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from streamapp.settings import Settings
from streamapp.topics import ALL_TOPICS, ensure_topics, topic_configs, topic_name
from tests.harness.kafka import create_topic
from tests.harness.services import REPO_ROOT
from tests.harness.waits import wait_for

SHOP = "shop-1"


class Cli:
    """Runs ``python -m streamapp`` with one test's environment."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = env
        self.tmp = tmp

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "streamapp", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=REPO_ROOT,
            timeout=60,
            check=False,
        )
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        return done

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def refused(self, *args: str, code: int = 2) -> str:
        """The one error line of a refused command."""
        done = self(*args)
        assert done.returncode == code, (done.stdout, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("streamapp: error: "), done.stderr
        return lines[0]

    def add_template(
        self, key: str, body: str, subject: str = "Thanks, {{ customer_name }}"
    ) -> subprocess.CompletedProcess[str]:
        path = self.tmp / f"{key}.html"
        path.write_text(body, encoding="utf-8")
        return self("templates", "add", "--shop", SHOP, "--key", key, "--subject", subject, "--body-file", str(path))

    def rules_json(self) -> list[dict[str, object]]:
        rules: list[dict[str, object]] = json.loads(self.ok("rules", "list", "--shop", SHOP, "--json"))
        return rules


async def _partition_counts(settings: Settings) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([topic_name(settings, spec) for spec in ALL_TOPICS])
        return [len(d["partitions"]) for d in described]
    finally:
        await admin.close()


def create_topics(settings: Settings) -> None:
    """Create the topics and wait (bounded) until the broker describes them all.

    ensure_topics alone can describe a topic it has just created before the broker's
    metadata has its partitions (0 partitions, refused); so create, wait, then let it check.
    """
    for spec in ALL_TOPICS:
        name = topic_name(settings, spec)
        asyncio.run(
            create_topic(
                settings.kafka_bootstrap_servers or "", name, settings.topic_partitions, configs=topic_configs(spec)
            )
        )
    wait_for(
        lambda: all(n == settings.topic_partitions for n in asyncio.run(_partition_counts(settings))),
        timeout=30,
        what="topic metadata",
    )
    asyncio.run(ensure_topics(settings))
