"""The steps every agent shares: decode or dead-letter, wait for shop config, publish an action.

One path for each, so that every agent rejects bad input the same way (counted, logged, written
and confirmed by the broker before its input is committed), waits for configuration the same way,
and publishes and counts its actions the same way.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Protocol, TypeVar

from aiokafka.errors import KafkaError
from faust import StreamT
from faust.exceptions import ProducerSendError
from faust.types import Message
from pydantic import TypeAdapter

from schemas.actions import Action, Lineage
from schemas.deadletter import DeadLetter, Reason
from schemas.events import CatalogEvent
from streamapp.app import runtime
from streamapp.batches import Record
from streamapp.decode import dead_letter, dead_letter_key, decode
from streamapp.rules import automation
from streamapp.sinks.deliveries import backoff

logger = logging.getLogger(__name__)


class _Event(Protocol):
    @property
    def event_id(self) -> str: ...

    @property
    def type(self) -> str: ...


_E = TypeVar("_E", bound=_Event)


async def decode_or_dead_letter(
    message: Message, adapter: TypeAdapter[_E], known_types: frozenset[str]
) -> tuple[_E, Lineage] | None:
    """The event in ``message`` with its lineage; None after sending bad input to ``dead-letters``
    (see :func:`reject`: it returns only once the broker has the dead letter)."""
    outcome = decode(adapter, known_types, **_origin(message))
    if isinstance(outcome, DeadLetter):
        await reject(message, outcome)
        return None
    runtime.metrics.events.labels(message.topic, outcome.type).inc()
    lineage = Lineage(
        event_id=outcome.event_id, topic=message.topic, partition=message.partition, offset=message.offset
    )
    return outcome, lineage


def _origin(message: Message) -> dict[str, Any]:
    """Where ``message`` came from and what it held, as :func:`decode` and :func:`dead_letter` take it."""
    return {
        "key": message.key,
        "value": message.value,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }


async def reject_message(message: Message, reason: Reason, detail: str) -> None:
    """Dead-letter ``message`` for ``reason`` with ``detail`` (see :func:`reject`)."""
    await reject(message, dead_letter(reason, detail, **_origin(message)))


async def reject(message: Message, letter: DeadLetter) -> None:
    """Count, log and write ``letter``, the dead letter of ``message``; returns once the broker has it.

    Bad input is never dropped silently: the dead letter carries the reason and the original
    bytes, the metric counts it by topic and reason, and the log says where it was.
    """
    runtime.metrics.dead_letters.labels(message.topic, letter.reason).inc()
    logger.warning(
        "dead-lettered topic=%s partition=%s offset=%s reason=%s: %s",
        message.topic,
        message.partition,
        message.offset,
        letter.reason,
        letter.detail,
    )
    await send_dead_letter(message, letter)


async def send_dead_letter(message: Message, letter: DeadLetter) -> None:
    """Write ``letter``, the dead letter of ``message``, and wait until the broker has it.

    A failed send is retried with capped backoff, never raised: Faust acks the message of
    an agent that raises, so raising would commit the bad message without its dead letter.
    Meanwhile the partition waits, and its lag and the log say so.
    """
    key = dead_letter_key(message.key)
    value = letter.model_dump_json().encode()
    attempt = 0
    while True:
        try:
            await (await runtime.topics.dead_letters.send(key=key, value=value))
        except (KafkaError, ProducerSendError) as exc:
            attempt += 1
            logger.warning(
                "dead letter of topic=%s partition=%s offset=%s not written (attempt %d), retrying: %r",
                message.topic,
                message.partition,
                message.offset,
                attempt,
                exc,
            )
            await asyncio.sleep(backoff(attempt))
        else:
            return


#: How long an event waits for shop-config to catch up with it before it is judged anyway.
CONFIG_WAIT_SECONDS = 5.0


async def wait_for_config(moment: datetime, what: str) -> None:
    """Wait, at most :data:`CONFIG_WAIT_SECONDS`, until this worker's shop-config is as fresh as ``moment``.

    An event is judged against the configuration as of its occurrence; past the bound it is judged
    anyway (never held forever), and the wait is counted and logged with ``what`` (e.g. the event id).
    """
    if not await runtime.shop_config.wait_until(moment, CONFIG_WAIT_SECONDS):
        runtime.metrics.config_waits.inc()
        logger.warning("shop-config lags %s by more than %ss", what, CONFIG_WAIT_SECONDS)


async def publish(action: Action) -> None:
    """Send ``action`` to ``actions``, keyed by its id, and count it by trigger and channel."""
    await runtime.topics.actions.send(key=action.action_id.encode(), value=action.model_dump_json().encode())
    runtime.metrics.actions.labels(action.trigger, action.effect.channel).inc()


def action_record(action: Action) -> Record:
    """:func:`publish` for a batch (:mod:`streamapp.batches`): the record to send, the action counted."""
    runtime.metrics.actions.labels(action.trigger, action.effect.channel).inc()
    return Record(runtime.topics.actions.get_topic_name(), action.action_id.encode(), action.model_dump_json().encode())


async def judge_catalog_event(event: CatalogEvent, lineage: Lineage) -> None:
    """Publish the actions of every catalog rule ``event`` fires, and count the ones it does not.

    No table: a catalog decision needs only the event and the shop's configuration, so events are
    judged where they arrive, in partition order (``orders``, ``job-status``, and the invoice events
    of ``payments``).
    """
    await wait_for_config(event.occurred_at, f"event_id={event.event_id}")
    shop = runtime.shop_config.store.catalog_view(event.shop_id)
    decision = automation.decide(event, shop, lineage, toast_ttl=runtime.settings.toast_ttl_seconds)
    for rule_key, reason in decision.skipped:
        runtime.metrics.catalog_skips.labels(rule_key, reason).inc()
        if reason == "no_phone":
            logger.info("%s not sent for event_id=%s: the customer has no phone number", rule_key, event.event_id)
    for action in decision.actions:
        await publish(action)


async def judge_each(stream: StreamT[bytes], adapter: TypeAdapter[CatalogEvent], known_types: frozenset[str]) -> None:
    """The body of a catalog agent: decode each message of ``stream`` (or dead-letter it) and judge it."""
    async for event in stream.events():
        found = await decode_or_dead_letter(event.message, adapter, known_types)
        if found is not None:
            await judge_catalog_event(*found)
