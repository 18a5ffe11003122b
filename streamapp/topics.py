"""The topic contracts: names, retention policy, and their creation."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from streamapp.decode import DEAD_LETTER_MAX_BYTES
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """One topic; ``name`` is before the settings' prefix, or, for a worker-internal topic,
    after ``<app_id>-`` (the names Faust gives its internal and changelog topics)."""

    name: str
    description: str
    compacted: bool = False
    internal: bool = False
    #: The topic's ``max.message.bytes``; None: the broker's default (1 MiB unless configured).
    max_message_bytes: int | None = None


ORDERS = TopicSpec("orders", "Order lifecycle events from the shop front (order submitted, reorder, lead).")
JOB_STATUS = TopicSpec("job-status", "Production job events (status changes, artwork, tracking).")
PAYMENTS = TopicSpec("payments", "Payment and invoice events (payment succeeded, invoice sent/paid).")
ACTIONS = TopicSpec("actions", "Effects decided by the rule engine, consumed by the sinks.")
#: A dead letter carries the original bytes in base64 next to its reason: bigger than the message
#: it answers, so bigger than the broker's default limit allows (see streamapp.decode).
DEAD_LETTERS = TopicSpec(
    "dead-letters",
    "Input that could not be processed, with the reason and original bytes.",
    max_message_bytes=DEAD_LETTER_MAX_BYTES,
)
SHOP_CONFIG = TopicSpec("shop-config", "Shop configuration log (rules, templates); compacted.", compacted=True)

ALL_TOPICS: tuple[TopicSpec, ...] = (ORDERS, JOB_STATUS, PAYMENTS, ACTIONS, DEAD_LETTERS, SHOP_CONFIG)

PAYMENTS_BY_CUSTOMER = TopicSpec("payments-by-customer", "Payments re-keyed by customer (internal).", internal=True)
ORDER_COUNTS_CHANGELOG = TopicSpec(
    "order-counts-changelog", "Changelog of the order-counts table (internal).", compacted=True, internal=True
)
INVOICES = TopicSpec("invoices", "Invoice events re-keyed by invoice, and clock ticks (internal).", internal=True)
INVOICES_CHANGELOG = TopicSpec(
    "invoices-changelog", "Changelog of the invoices table (internal).", compacted=True, internal=True
)
#: Topics the worker would otherwise create itself at start-up. Created beforehand, because a
#: topic created by the worker a moment before it joins its consumer group can be missing from
#: the broker's metadata at the join: the assignor then skips it, and nothing consumes it until
#: a metadata refresh (minutes) triggers another rebalance.
INTERNAL_TOPICS: tuple[TopicSpec, ...] = (PAYMENTS_BY_CUSTOMER, ORDER_COUNTS_CHANGELOG, INVOICES, INVOICES_CHANGELOG)


def topic_name(settings: Settings, spec: TopicSpec) -> str:
    """The topic's name on the broker."""
    if spec.internal:
        return f"{settings.app_id}-{spec.name}"
    return f"{settings.topic_prefix}{spec.name}"


async def ensure_topics(settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS + INTERNAL_TOPICS) -> list[str]:
    """Create missing topics; refuse existing ones whose partition count differs, or whose
    ``max.message.bytes`` is below the spec's.

    Tables are co-partitioned with their source topics, so a topic with another
    partition count than ``settings.topic_partitions`` is a configuration error,
    not something to paper over; so is a ``dead-letters`` topic too small for the dead
    letters the worker writes (each would fail to send). Returns the names that were created.
    """
    if not settings.kafka_bootstrap_servers:
        raise ConfigurationError("KAFKA_BOOTSTRAP_SERVERS is not set")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        wanted = [spec for spec in specs if topic_name(settings, spec) not in existing]
        if wanted:
            new = [
                NewTopic(
                    name=topic_name(settings, spec),
                    num_partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication_factor,
                    topic_configs=topic_configs(spec),
                )
                for spec in wanted
            ]
            response = await admin.create_topics(new)
            for name, code, message in _topic_errors(response):
                if code and code != TopicAlreadyExistsError.errno:
                    raise ConfigurationError(f"could not create topic {name}: error {code} {message or ''}".rstrip())
            created = [topic.name for topic in new]
            logger.info("Created topics %s", ", ".join(created))
        names = [topic_name(settings, spec) for spec in specs]
        for description in await _described(admin, names):
            count = len(description["partitions"])
            if count != settings.topic_partitions:
                raise ConfigurationError(
                    f"topic {description['topic']} has {count} partitions but STREAMAPP_TOPIC_PARTITIONS is "
                    f"{settings.topic_partitions}; tables need them equal"
                )
        await _check_message_bytes(admin, settings, specs)
    finally:
        await admin.close()
    return created


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    """The topic configs streamapp creates ``spec`` with."""
    configs = {"cleanup.policy": "compact"} if spec.compacted else {}
    if spec.max_message_bytes is not None:
        configs["max.message.bytes"] = str(spec.max_message_bytes)
    return configs


async def _check_message_bytes(admin: AIOKafkaAdminClient, settings: Settings, specs: tuple[TopicSpec, ...]) -> None:
    wanted = {topic_name(settings, spec): spec.max_message_bytes for spec in specs if spec.max_message_bytes}
    if not wanted:
        return
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None}) for name in wanted]
    for response in await admin.describe_configs(resources):
        # DescribeConfigsResponse: resources of (error_code, error_message, type, name, entries of (name, value, ...))
        for error_code, error_message, _type, name, entries in (row[:5] for row in response.resources):
            if error_code:
                raise ConfigurationError(f"could not read the configuration of topic {name}: {error_message}")
            have = next((int(entry[1]) for entry in entries if entry[0] == "max.message.bytes"), None)
            if have is None or have < wanted[name]:
                raise ConfigurationError(
                    f"topic {name} has max.message.bytes {have} but its messages can be {wanted[name]} bytes: "
                    f"kafka-configs.sh --alter --entity-type topics --entity-name {name} "
                    f"--add-config max.message.bytes={wanted[name]}"
                )


async def _described(admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0) -> list[dict[str, Any]]:
    # A topic created a moment ago can be described before the broker has its partitions
    # (zero of them, or an error code): wait for them instead of misreporting the count.
    deadline = time.monotonic() + timeout
    while True:
        described: list[dict[str, Any]] = list(await admin.describe_topics(names))
        if all(d["error_code"] == 0 and d["partitions"] for d in described):
            return described
        if time.monotonic() > deadline:
            pending = [d["topic"] for d in described if d["error_code"] or not d["partitions"]]
            raise RetryableError(f"topics {', '.join(pending)} have no partitions after {timeout:.0f}s")
        await asyncio.sleep(0.1)


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    # CreateTopicsResponse v1+ carries (name, code, message); v0 carries (name, code).
    rows = getattr(response, "topic_errors", None) or getattr(response, "topic_error_codes", [])
    return [(row[0], row[1], row[2] if len(row) > 2 else None) for row in rows]
