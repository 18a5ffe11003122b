"""Builds the Faust application from the settings; importing this module has no side effects."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry

from streamapp import faust_fixes
from streamapp.decode import DEAD_LETTER_MAX_BYTES
from streamapp.errors import ConfigurationError
from streamapp.settings import Settings
from streamapp.web import install_health_views

#: The agent modules a worker of each role runs (see ``Settings.role``).
ROLE_AGENTS: dict[str, list[str]] = {
    "all": ["agents"],
    "counting": ["agents.orders", "agents.job_status", "agents.payments", "agents.invoices"],
    "sinks": ["agents.actions"],
}


def group_id(settings: Settings) -> str:
    """The Faust app id, so the consumer group, of a worker of ``settings.role``."""
    return f"{settings.app_id}-sinks" if settings.role == "sinks" else settings.app_id


def broker_urls(bootstrap_servers: str) -> list[str]:
    """``host:port,host:port`` as Faust broker URLs."""
    hosts = [host.strip() for host in bootstrap_servers.split(",") if host.strip()]
    if not hosts:
        raise ConfigurationError("KAFKA_BOOTSTRAP_SERVERS is empty")
    return [f"kafka://{host}" for host in hosts]


def create_app(
    settings: Settings,
    *,
    autodiscover: bool = True,
    registry: CollectorRegistry | None = None,
    ready_checks: Sequence[Callable[[], bool]] = (),
) -> faust.App:
    """A Faust app configured from ``settings``.

    Deliberate choices:
    - at-least-once processing: Faust's exactly-once mode has open bugs
      (faust-streaming #517, #323, #177); effects are made idempotent instead.
    - ``memory://`` table store: tables live in memory and are rebuilt from their
      compacted changelog topics on every start and rebalance.
    - ``earliest`` offset reset: events produced before a group's first start count.
    - the agents of ``settings.role`` only (:data:`ROLE_AGENTS`); a sinks worker is its own
      consumer group (:func:`group_id`), so the actions it performs never wait behind counting.
    - the producer sends messages up to ``DEAD_LETTER_MAX_BYTES``: a dead letter carries the
      rejected message in base64, so it can be larger than any input (the ``dead-letters``
      topic accepts that much; other topics keep the broker's limit).

    Raises UnverifiedDependencyError (a ConfigurationError) if faust-streaming, mode-streaming or
    aiokafka is not the version the workarounds of :mod:`streamapp.faust_fixes` were verified with.
    """
    faust_fixes.apply(allow_unverified=settings.allow_unverified_faust)
    app = faust.App(
        group_id(settings),
        broker=broker_urls(settings.kafka_bootstrap_servers or "127.0.0.1:9092"),
        store="memory://",
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_seconds,
        broker_session_timeout=settings.session_timeout_seconds,
        producer_linger=settings.producer_linger_ms / 1000,
        producer_max_request_size=DEAD_LETTER_MAX_BYTES,
        broker_heartbeat_interval=settings.session_timeout_seconds / 10,
        datadir=str(settings.data_dir),
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        autodiscover=ROLE_AGENTS[settings.role] if autodiscover else False,
    )
    install_health_views(app, ready_checks)
    # One registry per app: two apps in one process must not collide on metric names.
    setup_prometheus_sensors(app, "/metrics", registry=registry or CollectorRegistry(), name_prefix="streamapp")
    return app
