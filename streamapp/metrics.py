"""Prometheus metrics of a worker, including consumer lag per topic-partition."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class ConsumerLag(Collector):
    """``streamapp_consumer_lag{topic,partition}``: end offset minus committed offset, read at scrape time."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "streamapp_consumer_lag",
            "Messages not yet committed, per assigned partition.",
            labels=["topic", "partition"],
        )
        if self.app.started:
            for tp, lag in self._lags():
                family.add_metric([tp.topic, str(tp.partition)], float(lag))
        yield family

    def _lags(self) -> Iterator[tuple[TP, int]]:
        consumer = self.app.consumer
        committed = getattr(self.app.monitor, "tp_committed_offsets", None) or {}
        for tp in sorted(consumer.assignment()):
            try:
                end = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - revoked between assignment() and here
                logger.debug("no end offset for %s", tp)
                continue
            if end is not None:
                done = committed.get(tp)
                yield tp, end - (done if done is not None else 0)


class Metrics:
    """The counters streamapp's own code updates."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.dead_letters = Counter(
            "streamapp_dead_letters",
            "Messages sent to the dead-letter topic.",
            ["topic", "reason"],
            registry=registry,
        )
        self.events = Counter(
            "streamapp_events", "Valid events decoded, by topic and type.", ["topic", "type"], registry=registry
        )
        self.payments_rekeyed = Counter(
            "streamapp_payments_rekeyed",
            "payment.succeeded events not keyed <shop_id>:<customer_id> on that key's partition: "
            "they took the re-key hop through <app_id>-payments-by-customer.",
            registry=registry,
        )
        self.actions = Counter(
            "streamapp_actions",
            "Actions published, by trigger and channel.",
            ["trigger", "channel"],
            registry=registry,
        )
        self.catalog_skips = Counter(
            "streamapp_catalog_skips",
            "Catalog rules an event matched that did not fire, by rule and reason "
            "(off, not_yet_on, twilio_not_connected, no_phone, stripe_not_connected, nothing_due).",
            ["rule", "reason"],
            registry=registry,
        )
        self.deliveries = Counter(
            "streamapp_deliveries",
            "Sink outcomes, by channel and outcome.",
            ["channel", "outcome"],
            registry=registry,
        )
        self.config_waits = Counter(
            "streamapp_config_wait_timeouts",
            "Events judged before the config caught up with them.",
            registry=registry,
        )
        self.config_watermark = Gauge(
            "streamapp_config_watermark_seconds",
            "Time up to which shop-config is applied (epoch).",
            registry=registry,
        )

    def install_lag(self, app: faust.App) -> None:
        self.registry.register(ConsumerLag(app))
