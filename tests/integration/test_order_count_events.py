"""Order Count Events on the real broker: counting, firing, ids, tenants, dead letters.

One worker serves the module; every test uses its own shops, so they cannot see
each other's events.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest

from schemas.deadletter import DeadLetter
from streamapp.rules.order_count import action_id
from tests.harness.kafka import produce, read_all
from tests.harness.pipeline import Pipeline, now, pipeline_settings
from tests.harness.services import Worker
from tests.harness.settings import settings_env
from tests.harness.smtp import Recorder, smtp_server
from tests.harness.waits import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("order-count")
    recorder = Recorder()
    with smtp_server(recorder) as smtp_port:
        settings = pipeline_settings("oc", kafka_bootstrap, postgres_url, smtp_port, tmp / "state")
        worker = Worker("streamapp.app", settings_env(settings), tmp / "worker.log")
        try:
            worker.wait_ready()
            line = Pipeline(settings, recorder)
            line.workers.append(worker)
            yield line
        finally:
            worker.stop()


def shop() -> str:
    return f"shop-{uuid.uuid4().hex[:8]}"


def fired(line: Pipeline, shop_id: str) -> Counter[tuple[str, str, int]]:
    """(rule name, customer, count) of every action of ``shop_id``, with multiplicity."""
    return Counter((a.rule_name, a.customer_id, a.order_count) for a in line.actions(shop_id))


def test_rules_fire_when_the_count_reaches_n_and_all_rules_at_the_same_n_fire(pipeline: Pipeline) -> None:
    s = shop()
    pipeline.add_template(
        s,
        "thanks",
        "Thanks, {{ customer_name }}!",
        "<p>{{ order_count }} orders at {{ shop_name }}. We put {{ credit_amount }} on your account.</p>",
    )
    alert = pipeline.add_rule(s, "Alert at 2", 2, "alert")
    email = pipeline.add_rule(s, "Email at 3", 3, "email", template_key="thanks")
    credit = pipeline.add_rule(s, "Credit at 3", 3, "credit", amount_cents=2000)
    first = pipeline.pay(s, "c1", "o1")
    pipeline.pay(s, "c1", "o2")
    third = pipeline.pay(s, "c1", "o3")
    pipeline.pay(s, "c1", "o4")
    pipeline.drain()

    actions = {a.rule_name: a for a in pipeline.actions(s)}
    assert fired(pipeline, s) == Counter(
        {("Alert at 2", "c1", 2): 1, ("Email at 3", "c1", 3): 1, ("Credit at 3", "c1", 3): 1}
    )
    assert actions["Alert at 2"].action_id == action_id(s, alert.rule_id, "c1", 2)
    assert actions["Email at 3"].action_id == action_id(s, email.rule_id, "c1", 3)
    assert actions["Credit at 3"].action_id == action_id(s, credit.rule_id, "c1", 3)
    mail = actions["Email at 3"].effect
    assert mail.channel == "email"
    assert mail.to == "c1@example.com" and mail.subject == "Thanks, Ann Lee!"
    assert mail.text_body == f"3 orders at {s}. We put $20.00 on your account.\n"
    lineage = actions["Credit at 3"].lineage
    assert lineage.event_id == third and lineage.topic == pipeline.payments
    assert first != third


def test_an_order_counts_once_however_often_it_is_paid_or_delivered(pipeline: Pipeline) -> None:
    s = shop()
    pipeline.add_rule(s, "Alert at 2", 2, "alert")
    pipeline.add_rule(s, "Alert at 3", 3, "alert")
    event = pipeline.pay(s, "c1", "o1")
    pipeline.pay(s, "c1", "o1", event_id=event)  # the same event, redelivered
    pipeline.pay(s, "c1", "o1")  # a second successful payment of the same order
    pipeline.pay(s, "c1", "o1", event_id=event, occurred_at=now() + timedelta(days=3))  # days later
    pipeline.drain()
    assert fired(pipeline, s) == Counter()
    pipeline.pay(s, "c1", "o2")
    pipeline.pay(s, "c1", "o2", occurred_at=now() + timedelta(days=4))
    pipeline.drain()
    assert fired(pipeline, s) == Counter({("Alert at 2", "c1", 2): 1})


def test_rules_are_not_retroactive_and_re_enabling_fires_only_future_crossings(pipeline: Pipeline) -> None:
    s = shop()
    for order in ("o1", "o2", "o3"):
        pipeline.pay(s, "old", order)
    pipeline.pay(s, "new", "o1")
    pipeline.drain()
    at_two = pipeline.add_rule(s, "Alert at 2", 2, "alert")  # "old" is already past 2
    at_four = pipeline.add_rule(s, "Alert at 4", 4, "alert")
    pipeline.pay(s, "old", "o4")  # reaches 4: fires
    pipeline.pay(s, "new", "o2")  # reaches 2: fires
    pipeline.drain()
    assert fired(pipeline, s) == Counter({("Alert at 4", "old", 4): 1, ("Alert at 2", "new", 2): 1})

    at_five = pipeline.add_rule(s, "Alert at 5", 5, "alert")
    at_five = pipeline.switch(at_five, enabled=False)
    pipeline.pay(s, "old", "o5")  # reaches 5 while the rule is off
    pipeline.drain()
    pipeline.switch(at_five, enabled=True)  # back on: 5 is behind "old", nothing fires
    pipeline.pay(s, "old", "o6")
    pipeline.drain()
    assert fired(pipeline, s) == Counter({("Alert at 4", "old", 4): 1, ("Alert at 2", "new", 2): 1})
    assert at_two.enabled and at_four.enabled


def test_one_shops_rules_never_see_another_shops_events(pipeline: Pipeline) -> None:
    a, b = shop(), shop()
    pipeline.add_rule(a, "A at 1", 1, "alert")
    pipeline.pay(b, "c1", "o1")  # same customer id, other shop
    pipeline.drain()
    assert fired(pipeline, a) == Counter() and fired(pipeline, b) == Counter()
    pipeline.pay(a, "c1", "o1")
    pipeline.drain()
    assert fired(pipeline, a) == Counter({("A at 1", "c1", 1): 1})


def test_wrongly_keyed_events_still_count_per_customer(pipeline: Pipeline) -> None:
    s = shop()
    pipeline.add_rule(s, "Alert at 3", 3, "alert")
    for order, key in (("o1", b"garbage"), ("o2", b""), ("o3", b"other-shop:c1")):
        pipeline.pay(s, "c1", order, key=key)
    pipeline.drain()
    assert fired(pipeline, s) == Counter({("Alert at 3", "c1", 3): 1})


def test_a_payment_keyed_by_its_customer_skips_the_re_key_hop_and_its_mis_keyed_copy_does_not_count_again(
    pipeline: Pipeline,
) -> None:
    s = shop()
    pipeline.add_rule(s, "Alert at 2", 2, "alert")
    first = pipeline.pay(s, "c1", "o1")  # keyed <shop_id>:<customer_id>: counted where it arrives
    pipeline.drain()
    pipeline.pay(s, "c1", "o1", event_id=first, key=b"c1")  # the same event mis-keyed: through the hop
    pipeline.pay(s, "c1", "o2", key=b"c1")  # the customer's second order, through the hop
    pipeline.drain()
    assert fired(pipeline, s) == Counter({("Alert at 2", "c1", 2): 1})
    hopped = [
        json.loads(r.value or b"")["event"]
        for r in asyncio.run(read_all(pipeline.bootstrap, pipeline.internal))
        if r.key == f"{s}:c1".encode()
    ]
    assert [(e["event_id"], e["order_id"]) for e in hopped] == [(first, "o1"), (hopped[1]["event_id"], "o2")]
    with urllib.request.urlopen(pipeline.workers[0].base_url + "/metrics", timeout=5) as response:
        samples = response.read().decode().splitlines()
    rekeyed = next(line for line in samples if line.startswith("streamapp_payments_rekeyed_total "))
    assert float(rekeyed.split()[1]) >= 2


def test_bad_input_is_dead_lettered_with_reason_and_bytes_and_the_stream_goes_on(pipeline: Pipeline) -> None:
    s = shop()
    pipeline.add_rule(s, "Alert at 1", 1, "alert")
    marker = uuid.uuid4().hex
    bad = {
        "invalid_json": f'{{"type": "payment.succeeded", "x": "{marker}"'.encode(),
        "not_an_object": f'["{marker}"]'.encode(),
        "unknown_type": f'{{"type": "payment.refunded", "event_id": "{marker}"}}'.encode(),
        "invalid_event": f'{{"type": "payment.succeeded", "event_id": "{marker}", "shop_id": "{s}"}}'.encode(),
    }
    for value in bad.values():
        pipeline.send_raw(marker.encode(), value)
    pipeline.pay(s, "c1", "o1")
    pipeline.drain()
    letters = [d for d in pipeline.dead_letters() if d.key_b64 == base64.b64encode(marker.encode()).decode()]
    assert {d.reason: base64.b64decode(d.value_b64 or "") for d in letters} == bad
    invalid = next(d for d in letters if d.reason == "invalid_event")
    assert "customer: Field required" in invalid.detail and invalid.topic == pipeline.payments
    assert fired(pipeline, s) == Counter({("Alert at 1", "c1", 1): 1})


def test_effects_land_once_in_the_ledger_the_mailbox_and_the_dashboard(pipeline: Pipeline) -> None:
    s = shop()
    pipeline.add_template(
        s, "ten", "{{ shop_name }}: thank you!", "<p>Dear {{ customer_name }}, {{ order_count }} orders!</p>"
    )
    pipeline.add_rule(s, "Credit at 2", 2, "credit", amount_cents=2000)
    pipeline.add_rule(s, "Email at 2", 2, "email", template_key="ten")
    pipeline.add_rule(s, "Alert at 2", 2, "alert")
    pipeline.pay(s, "c1", "o1")
    second = pipeline.pay(s, "c1", "o2")
    pipeline.pay(s, "c1", "o2", event_id=second)  # redelivered: same actions again, deduplicated by the sinks
    pipeline.drain()
    pipeline.wait_effects(s, credits=1, alerts=1, emails=1)

    ledger = pipeline.sql("SELECT customer_id, amount_cents, reason FROM ledger_entries WHERE shop_id = $1", s)
    assert [tuple(r) for r in ledger] == [("c1", 2000, "Credit at 2 (2 orders)")]
    alerts = pipeline.sql("SELECT customer_id, text FROM alerts WHERE shop_id = $1", s)
    assert [tuple(r) for r in alerts] == [("c1", "Ann Lee (c1) reached 2 orders: Alert at 2")]
    email_action = next(a for a in pipeline.actions(s) if a.effect.channel == "email")
    delivery = pipeline.sql(
        "SELECT status, attempts, recipient FROM deliveries WHERE action_id = $1", email_action.action_id
    )
    assert [tuple(r) for r in delivery] == [("sent", 1, "c1@example.com")]
    assert pipeline.smtp is not None
    mails = [m for m in pipeline.smtp.messages if m["X-Streamapp-Action-Id"] == email_action.action_id]
    assert len(mails) == 1
    assert mails[0]["Subject"] == f"{s}: thank you!" and mails[0]["To"] == "Ann Lee <c1@example.com>"
    assert "Dear Ann Lee, 2 orders!" in mails[0].get_body(("plain",)).get_content()


def metric_values(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Samples of metric ``name`` in Prometheus text: labels -> value."""
    values: dict[frozenset[tuple[str, str]], float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) + 1 :].rpartition("} ")
            pairs = (item.split("=", 1) for item in labels.split(",") if item)
            values[frozenset((k, v.strip('"')) for k, v in pairs)] = float(value)
    return values


def test_metrics_report_lag_per_partition_and_dead_letters(pipeline: Pipeline) -> None:
    s = shop()
    pipeline.send_raw(b"x", b"not json")
    pipeline.pay(s, "c1", "o1")
    pipeline.drain()
    worker = pipeline.workers[0]

    def scrape() -> str:
        with urllib.request.urlopen(worker.base_url + "/metrics", timeout=5) as response:
            return response.read().decode()

    def payments_lag() -> dict[str, float]:
        lag = metric_values(scrape(), "streamapp_consumer_lag")
        return {dict(k)["partition"]: v for k, v in lag.items() if dict(k)["topic"] == pipeline.payments}

    # Every partition reported; zero once the worker has committed everything.
    wait_for(
        lambda: payments_lag() == dict.fromkeys(("0", "1", "2", "3"), 0.0),
        timeout=30,
        what="payments lag of 0 on every partition",
    )
    internal = {
        dict(k)["partition"]
        for k in metric_values(scrape(), "streamapp_consumer_lag")
        if dict(k)["topic"] == pipeline.internal
    }
    assert internal == {"0", "1", "2", "3"}
    letters = metric_values(scrape(), "streamapp_dead_letters_total")
    assert letters[frozenset({("topic", pipeline.payments), ("reason", "invalid_json")})] >= 1


def test_garbage_on_the_actions_topic_is_dead_lettered_and_effects_go_on(pipeline: Pipeline) -> None:
    s = shop()
    actions_topic = f"{pipeline.settings.topic_prefix}actions"
    marker = uuid.uuid4().hex.encode()
    asyncio.run(produce(pipeline.bootstrap, actions_topic, [(marker, b'{"action_id": "half an action"}')]))
    pipeline.add_rule(s, "Alert at 1", 1, "alert")
    pipeline.pay(s, "c1", "o1")
    pipeline.drain()
    pipeline.wait_effects(s, alerts=1)

    def letter() -> DeadLetter | None:
        wanted = base64.b64encode(marker).decode()
        return next((d for d in pipeline.dead_letters() if d.key_b64 == wanted), None)

    found = wait_for(letter, timeout=30, what="the garbage action in dead-letters")
    assert found.topic == actions_topic and found.reason == "invalid_event"
    assert base64.b64decode(found.value_b64 or "") == b'{"action_id": "half an action"}'
    assert "not an action" in found.detail
