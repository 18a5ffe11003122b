"""The Order Count decision, without Kafka: counting, firing, ids, variables, failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.actions import Lineage
from schemas.config import EmailTemplate, OrderCountRule
from schemas.events import PaymentSucceeded
from streamapp.rules.money import format_money
from streamapp.rules.order_count import Counted, ShopView, action_id, apply_payment, decide

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LINEAGE = Lineage(event_id="e", topic="payments", partition=0, offset=7)


def pay(order: str, event_id: str | None = None, at: datetime = T0) -> PaymentSucceeded:
    return PaymentSucceeded.model_validate(
        {
            "type": "payment.succeeded",
            "event_id": event_id or f"evt-{order}",
            "shop_id": "s",
            "occurred_at": at,
            "order_id": order,
            "payment_id": "p",
            "amount_cents": 100,
            "customer": {"customer_id": "c1", "name": "Ann <Lee>", "email": "ann@example.com"},
        }
    )


def rule(rule_id: str, orders: int, action: str, *, effective: datetime = T0, **extra: Any) -> OrderCountRule:
    return OrderCountRule.model_validate(
        {
            "shop_id": "s",
            "rule_id": rule_id,
            "name": f"Rule {rule_id}",
            "orders": orders,
            "action": action,
            "effective_at": effective,
            "updated_at": effective,
            **extra,
        }
    )


def shop(*rules: OrderCountRule, templates: dict[str, EmailTemplate] | None = None) -> ShopView:
    return ShopView(shop_name="Acme & Co", rules=list(rules), templates=templates or {})


class Table(dict[str, dict[str, Any]]):
    """The order-counts table as the agent uses it: ``get`` to read, the writes applied in order."""

    def apply(self, counted: Counted) -> Counted:
        self.update(counted.writes)
        return counted


def test_orders_count_once_and_redelivery_reports_the_count_it_reached() -> None:
    table = Table()
    first = table.apply(apply_payment(table.get, pay("o1")))
    assert first.count == 1
    assert first.writes == [("s:c1/o1", {"event_id": "evt-o1", "count": 1}), ("s:c1", {"count": 1})]
    second = table.apply(apply_payment(table.get, pay("o2")))
    assert second.count == 2
    redelivered = apply_payment(table.get, pay("o1"))  # same event id: re-decide at count 1
    assert redelivered == Counted(writes=[], count=1)
    paid_again = apply_payment(table.get, pay("o1", event_id="other"))  # same order, other event
    assert paid_again == Counted(writes=[], count=None)


def test_a_count_lost_after_its_marker_is_repaired_by_the_redelivery() -> None:
    """A crash between the two writes: the marker reached the changelog, the count did not."""
    table = Table()
    table.apply(apply_payment(table.get, pay("o1")))
    counted = apply_payment(table.get, pay("o2"))
    table.update(counted.writes[:1])  # the marker only
    redelivered = table.apply(apply_payment(table.get, pay("o2")))
    assert redelivered.count == 2 and redelivered.writes == [("s:c1", {"count": 2})]
    assert table.apply(apply_payment(table.get, pay("o3"))).count == 3


def test_a_first_format_value_is_migrated_when_its_customer_is_next_touched() -> None:
    legacy = {"count": 2, "orders": {"o1": ["evt-o1", 1], "o2": ["evt-o2", 2]}, "_source_offset": 9}
    table = Table({"s:c1": legacy})
    again = table.apply(apply_payment(table.get, pay("o2")))  # redelivered, as before the migration
    assert again.count == 2
    assert table["s:c1"] == {"count": 2} and table["s:c1/o1"] == {"event_id": "evt-o1", "count": 1}
    assert table.apply(apply_payment(table.get, pay("o1", event_id="other"))).count is None
    third = table.apply(apply_payment(table.get, pay("o3")))
    assert third.count == 3 and third.writes == [
        ("s:c1/o3", {"event_id": "evt-o3", "count": 3}),
        ("s:c1", {"count": 3}),
    ]
    legacy_new_order = apply_payment(Table({"s:c1": legacy}).get, pay("o9"))
    assert legacy_new_order.count == 3 and legacy_new_order.writes[-1] == ("s:c1", {"count": 3})


def test_a_customer_with_100000_orders_counts_each_once_with_constant_writes() -> None:
    table = Table()
    for n in range(1, 100_001):
        counted = table.apply(apply_payment(table.get, pay(f"o{n}")))
        assert counted.count == n and len(counted.writes) == 2
    assert table["s:c1"] == {"count": 100_000}
    assert max(len(repr(value)) for value in table.values()) < 64  # no value grows with the history
    assert apply_payment(table.get, pay("o50000")).count == 50_000
    assert apply_payment(table.get, pay("o50000", event_id="again")).count is None


def test_every_rule_at_n_fires_in_rule_order_with_deterministic_ids() -> None:
    view = shop(rule("b", 2, "alert"), rule("a", 2, "credit", amount_cents=2000), rule("c", 3, "alert"))
    actions = decide(pay("o2"), 2, view, LINEAGE)
    assert [a.rule_id for a in actions] == ["a", "b"]
    assert [a.action_id for a in actions] == [action_id("s", "a", "c1", 2), action_id("s", "b", "c1", 2)]
    assert action_id("s", "a", "c1", 2) == action_id("s", "a", "c1", 2) != action_id("s", "a", "c1", 3)
    assert actions[0].effect.model_dump() == {
        "channel": "credit",
        "amount_cents": 2000,
        "currency": "USD",
        "reason": "Rule a (2 orders)",
    }
    assert actions[0].lineage == LINEAGE and actions[0].occurred_at == T0


@pytest.mark.parametrize(
    ("enabled", "effective", "fires"),
    [(True, T0, True), (True, T0 + timedelta(seconds=1), False), (False, T0 - timedelta(days=1), False)],
)
def test_a_rule_fires_only_when_on_and_effective_when_the_payment_occurred(
    enabled: bool, effective: datetime, fires: bool
) -> None:
    view = shop(rule("a", 1, "alert", effective=effective, enabled=enabled))
    assert bool(decide(pay("o1"), 1, view, LINEAGE)) is fires


def test_email_renders_escaped_html_text_and_the_credit_of_the_same_crossing() -> None:
    template = EmailTemplate(
        shop_id="s",
        key="t",
        subject="{{ shop_name }}: thanks {{ customer_name }}",
        body="<p>{{ order_count }} orders, {{ credit_amount }} for {{ customer_name }}</p>",
        updated_at=T0,
    )
    view = shop(
        rule("m", 5, "email", template_key="t"), rule("n", 5, "credit", amount_cents=2050), templates={"t": template}
    )
    email = next(a for a in decide(pay("o5"), 5, view, LINEAGE) if a.rule_id == "m").effect
    assert email.channel == "email"
    assert email.subject == "Acme & Co: thanks Ann <Lee>"
    assert email.html_body == "<p>5 orders, $20.50 for Ann &lt;Lee&gt;</p>"
    assert email.text_body == "5 orders, $20.50 for Ann <Lee>\n"


@pytest.mark.parametrize(
    ("templates", "reason"),
    [
        ({}, 'email template "t" does not exist'),
        (
            {"t": EmailTemplate(shop_id="s", key="t", subject="x", body="{{ nope }}", updated_at=T0)},
            "body (line 1): unknown variable: 'nope' is undefined",
        ),
    ],
)
def test_an_email_that_cannot_be_rendered_becomes_an_alert_saying_why(
    templates: dict[str, EmailTemplate], reason: str
) -> None:
    view = shop(rule("m", 1, "email", template_key="t"), templates=templates)
    (action,) = decide(pay("o1"), 1, view, LINEAGE)
    assert action.effect.channel == "alert" and reason in action.effect.text
    assert action.action_id == action_id("s", "m", "c1", 1)


def test_money_is_formatted_per_currency() -> None:
    assert format_money(2000, "USD") == "$20.00"
    assert format_money(123456, "EUR") == "1,234.56 EUR"
