"""Consumes ``payments``: for now, counts messages per key in a changelog-backed table.

The Order Count Events pipeline (decode, distinct paid orders, rules, actions)
replaces this body; the topic, table and agent shape stay.
"""

from __future__ import annotations

import logging

from faust import StreamT

from streamapp.app import app
from streamapp.settings import get_settings
from streamapp.topics import PAYMENTS, topic_name

logger = logging.getLogger(__name__)

payments_topic = app.topic(
    topic_name(get_settings(), PAYMENTS), key_serializer="raw", value_serializer="raw", allow_empty=True
)
messages_by_key = app.Table("payment-messages-by-key", default=int)


# concurrency=1: an agent that updates a table must not let a commit pass an
# in-flight message (faust-streaming #606).
@app.agent(payments_topic, concurrency=1)
async def count_payments(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        key = (event.key or b"").decode("utf-8", errors="replace")
        messages_by_key[key] += 1
        logger.debug(
            "payment message topic=%s partition=%s offset=%s",
            event.message.topic,
            event.message.partition,
            event.message.offset,
        )
