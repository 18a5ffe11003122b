"""bench/pipeline.py's variant (c): the order-count work as a quixstreams app. A measurement, not a test.

Run by pipeline.py with the bench venv's python (``make bench-venv``: quixstreams needs older
pydantic pins than constraints.txt's), configured like a worker by the environment
(``KAFKA_BOOTSTRAP_SERVERS``, ``STREAMAPP_APP_ID``, ``STREAMAPP_TOPIC_PREFIX``). It does what a
Python team would write with quixstreams for the same contract, reusing the project's pure code:

payments -> ``streamapp.decode.decode`` (bad input to the dead-letters topic) -> ``group_by``
customer (a repartition topic) -> RocksDB state with its changelog (``apply_payment``'s
``{"count", "orders"}`` value: distinct orders, a redelivered event decides its actions again)
-> ``decide`` -> one record per action on this variant's own actions topic, keyed by action_id.

Differences from the streamapp worker, all in quix's favour: the shop's configuration is read
once at start (no watermark wait per event), and nothing consumes the actions (no PostgreSQL).
The actions' timestamp is set when they are made, so that pipeline.py's latency (action
CreateTime minus payment CreateTime) means the same as for the other variants: quix would
otherwise copy the payment's timestamp onto them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from quixstreams import Application, State, message_context
from quixstreams.models.serializers import Serializer

from schemas.actions import Action, Lineage
from schemas.deadletter import DeadLetter
from schemas.events import PaymentFailed, PaymentsEvent, PaymentSucceeded
from streamapp import shop_config
from streamapp.decode import decode
from streamapp.rules.order_count import ShopView, apply_payment, customer_key, decide
from streamapp.settings import Settings
from streamapp.topics import ACTIONS, DEAD_LETTERS, PAYMENTS, topic_name

PAYMENT_TYPES = frozenset({"payment.succeeded", "payment.failed"})
_payments = TypeAdapter[PaymentSucceeded | PaymentFailed](PaymentsEvent)
_succeeded = TypeAdapter(PaymentSucceeded)


class PydanticBytes(Serializer):
    """A pydantic model (an Action, a DeadLetter) as its JSON bytes."""

    def __call__(self, value: Action | DeadLetter, ctx: Any) -> bytes:
        return value.model_dump_json().encode()


def build(app: Application, settings: Settings, view: ShopView, ready_file: Path) -> None:
    payments = app.topic(topic_name(settings, PAYMENTS), key_deserializer="bytes", value_deserializer="bytes")
    actions = app.topic(topic_name(settings, ACTIONS), key_serializer="bytes", value_serializer=PydanticBytes())
    dead = app.topic(topic_name(settings, DEAD_LETTERS), key_serializer="bytes", value_serializer=PydanticBytes())
    first = [True]

    def decoded(value: bytes, key: bytes | None, timestamp: int, headers: Any) -> Any:
        if first[0]:  # pipeline.py starts its clock when this file appears
            first[0] = False
            ready_file.write_text(str(time.time()))
        ctx = message_context()
        where = {"topic": ctx.topic, "partition": ctx.partition, "offset": ctx.offset}
        outcome = decode(_payments, PAYMENT_TYPES, key=key, value=value, **where)
        if isinstance(outcome, DeadLetter | PaymentFailed):
            return outcome
        # What crosses the repartition topic: JSON, like streamapp's RoutedPayment.
        return {"lineage": {"event_id": outcome.event_id, **where}, "event": outcome.model_dump(mode="json")}

    def count(value: dict[str, Any], state: State) -> list[Action]:
        event = _succeeded.validate_python(value["event"])
        counted = apply_payment(state.get, event)
        for key, marker_or_count in counted.writes:
            state.set(key, marker_or_count)
        if counted.count is None:
            return []
        return decide(event, counted.count, view, Lineage(**value["lineage"]))

    sdf = app.dataframe(payments).apply(decoded, metadata=True)
    rejected = sdf.filter(lambda v: isinstance(v, DeadLetter))
    rejected.to_topic(dead)  # keyed by the payment's own key, like streamapp's dead letters
    sdf = sdf.filter(lambda v: isinstance(v, dict))
    sdf = sdf.group_by(lambda v: customer_key(v["event"]["shop_id"], v["event"]["customer"]["customer_id"]), "customer")
    sdf = sdf.apply(count, stateful=True, expand=True)
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: int(time.time() * 1000))
    sdf.to_topic(actions, key=lambda action: action.action_id.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shop", required=True, help="the shop whose order-count rules apply")
    parser.add_argument("--state-dir", type=Path, required=True, help="RocksDB state directory")
    parser.add_argument("--ready-file", type=Path, required=True, help="written when the first payment arrives")
    args = parser.parse_args()
    settings = Settings()
    view = asyncio.run(shop_config.load(settings)).view(args.shop)
    app = Application(
        broker_address=settings.kafka_bootstrap_servers,
        consumer_group=f"{settings.app_id}-quix",
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    build(app, settings, view, args.ready_file)
    app.run()


if __name__ == "__main__":
    main()
