"""Everything a worker's agents share: the app, its topics, the shop config, metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faust
from prometheus_client import CollectorRegistry

from streamapp.factory import create_app
from streamapp.metrics import Metrics
from streamapp.settings import Settings
from streamapp.shop_config import ConfigFollower
from streamapp.topics import (
    ACTIONS,
    DEAD_LETTERS,
    INVOICES,
    JOB_STATUS,
    ORDERS,
    PAYMENTS,
    PAYMENTS_BY_CUSTOMER,
    topic_name,
)

logger = logging.getLogger(__name__)


def _raw_topic(
    app: faust.App, name: str, *, internal: bool = False, partitions: int | None = None, allow_empty: bool = False
) -> faust.TopicT:
    return app.topic(
        name,
        key_serializer="raw",
        value_serializer="raw",
        internal=internal,
        partitions=partitions,
        allow_empty=allow_empty,
    )


class PipelineTopics:
    """The Faust topic objects of the pipeline; values travel as raw bytes and are decoded by us."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        # allow_empty: a tombstone on an event topic is bad input that must reach the
        # dead-letter topic, not vanish.
        self.orders = _raw_topic(app, topic_name(settings, ORDERS), allow_empty=True)
        self.job_status = _raw_topic(app, topic_name(settings, JOB_STATUS), allow_empty=True)
        self.payments = _raw_topic(app, topic_name(settings, PAYMENTS), allow_empty=True)
        self.actions = _raw_topic(app, topic_name(settings, ACTIONS))
        self.dead_letters = _raw_topic(app, topic_name(settings, DEAD_LETTERS))
        #: Events re-keyed by customer: correctness never depends on how producers partitioned.
        self.payments_by_customer = _raw_topic(
            app, topic_name(settings, PAYMENTS_BY_CUSTOMER), internal=True, partitions=settings.topic_partitions
        )
        #: Invoice events re-keyed by invoice, and the clock's ticks (one per partition).
        self.invoices = _raw_topic(
            app, topic_name(settings, INVOICES), internal=True, partitions=settings.topic_partitions
        )


@dataclass
class Runtime:
    settings: Settings
    app: faust.App
    topics: PipelineTopics
    shop_config: ConfigFollower
    metrics: Metrics


def build_runtime(settings: Settings) -> Runtime:
    """The worker's app with its shared parts; agents attach to ``runtime.app``."""
    registry = CollectorRegistry()
    shop_config = ConfigFollower(settings)
    app = create_app(settings, registry=registry, ready_checks=[shop_config.caught_up.is_set])
    metrics = Metrics(registry)
    metrics.install_lag(app)
    metrics.config_watermark.set_function(lambda: shop_config.watermark)

    async def follow_shop_config() -> None:
        try:
            await shop_config.run()
        except Exception as exc:
            # Without configuration the worker would judge events against nothing: stop it.
            logger.exception("shop-config follower failed")
            await app.crash(exc)
            raise

    app.task(follow_shop_config)
    return Runtime(settings, app, PipelineTopics(app, settings), shop_config, metrics)
