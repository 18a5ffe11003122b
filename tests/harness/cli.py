"""Runs the ``streamapp`` command line as users do, against one test's broker and database."""

from __future__ import annotations

import asyncio
import copy
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
from tests.harness.zygote import COMMAND_TIMEOUT, Zygote

SHOP = "shop-1"


class Cli:
    """Runs ``streamapp`` with one test's environment: through ``zygote`` (a fresh forked process per
    command, see :mod:`tests.harness.zygote`), or, without one, as ``python -m streamapp`` spawned."""

    def __init__(self, env: dict[str, str], tmp: Path, zygote: Zygote | None = None) -> None:
        self.env = env
        self.tmp = tmp
        self.zygote = zygote

    def spawned(self) -> Cli:
        """The same command line, each command spawned as ``python -m streamapp`` (interpreter start-up included)."""
        spawned = copy.copy(self)
        spawned.zygote = None
        return spawned

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``streamapp *args``: its exit code, output and error, unchecked."""
        if self.zygote is not None:
            return self.zygote.run(args, self.env)
        return subprocess.run(
            [sys.executable, "-m", "streamapp", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=REPO_ROOT,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(*args)
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
