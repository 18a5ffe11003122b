"""Session services for the tests: the real Apache Kafka broker and PostgreSQL.

Started once per test run unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL point at
running ones. Each test gets its own topic prefix, consumer group and database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from streamapp.db import upgrade
from streamapp.embedded.kafka import EmbeddedKafka, ensure_kafka_libs
from streamapp.embedded.postgres import EmbeddedPostgres
from streamapp.settings import Settings
from tests.harness.cli import Cli, create_topics
from tests.harness.services import Worker, new_database
from tests.harness.settings import command_env, isolated_settings
from tests.harness.stripe import StripeFaultProxy, stripe_mock_session
from tests.harness.twilio import TwilioFaultProxy, prism_session
from tests.harness.zygote import Zygote


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def kafka_bootstrap(base_settings: Settings) -> Iterator[str]:
    if base_settings.kafka_bootstrap_servers:
        yield base_settings.kafka_bootstrap_servers
        return
    with EmbeddedKafka(ensure_kafka_libs(base_settings.cache_dir)) as kafka:
        yield kafka.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_url(base_settings: Settings) -> Iterator[str]:
    if base_settings.database_url is not None:
        yield base_settings.database_url.get_secret_value()
        return
    with EmbeddedPostgres(base_settings.postgres_bin_dir) as postgres:
        yield postgres.url()


@pytest.fixture(scope="session")
def twilio_api(base_settings: Settings) -> Iterator[str]:
    """Base URL of Twilio's API contract served locally by Prism, once per session."""
    yield from prism_session(base_settings)


@pytest.fixture
async def twilio(twilio_api: str) -> AsyncIterator[TwilioFaultProxy]:
    """A recording fault proxy in front of the session's Prism, fresh for each test (in its event loop)."""
    async with TwilioFaultProxy(twilio_api) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def stripe_api(base_settings: Settings) -> Iterator[str]:
    """Base URL of Stripe's API served locally by stripe-mock, once per session."""
    yield from stripe_mock_session(base_settings)


@pytest.fixture
async def stripe(stripe_api: str) -> AsyncIterator[StripeFaultProxy]:
    """A recording fault proxy in front of the session's stripe-mock, fresh for each test."""
    async with StripeFaultProxy(stripe_api) as proxy:
        yield proxy


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """A fresh, empty database for this test on the session's server."""
    return new_database(postgres_url)


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A fresh database with every migration applied (sync: runs before the test's event loop)."""
    upgrade(database_url)
    return database_url


@pytest.fixture
async def pool(migrated_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on :func:`migrated_url`, closed (bounded) after the test."""
    pool = await asyncpg.create_pool(migrated_url, min_size=1, max_size=6)
    try:
        yield pool
    finally:
        await asyncio.wait_for(pool.close(), 10)


@pytest.fixture
def settings_factory(kafka_bootstrap: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings isolated to one test: its own app id (consumer group), topic prefix and data dir."""
    run = uuid.uuid4().hex[:10]

    def make(**overrides: object) -> Settings:
        values = {"topic_partitions": 4, **overrides}
        return isolated_settings("test", kafka_bootstrap, tmp_path / "state", run=run, **values)

    return make


@pytest.fixture(scope="session")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    """Runs each ``streamapp`` command in a fresh process forked from one that imported the CLI once."""
    with Zygote(tmp_path_factory.mktemp("commands")) as forks:
        yield forks


@pytest.fixture
def cli(settings_factory: Callable[..., Settings], database_url: str, tmp_path: Path, zygote: Zygote) -> Cli:
    """The command line of one test: its own topics (created) and migrated database."""
    upgrade(database_url)
    settings = settings_factory(database_url=database_url)
    create_topics(settings)
    return Cli(command_env(settings), tmp_path, zygote)


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Starts Faust workers as subprocesses; every one is stopped (bounded) at teardown."""
    started: list[Worker] = []

    def start(app: str, env: dict[str, str]) -> Worker:
        worker = Worker(app, env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
