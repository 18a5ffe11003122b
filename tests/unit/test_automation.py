"""The catalog's decision: which rules an event fires at a shop, and what they say."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.actions import EmailEffect, Lineage, NotificationEffect, PaymentLinkEffect, SmsEffect, ToastEffect
from schemas.config import CatalogTemplate, CatalogToggle
from schemas.events import AnyCatalogEvent, CatalogEvent, JobStatusEvent
from streamapp.rules import wording
from streamapp.rules.automation import decide
from streamapp.rules.catalog import BY_KEY, RULES, sample_variables
from streamapp.rules.config_store import CatalogShop
from streamapp.rules.wording import validate_override
from streamapp.templating import MAX_SOURCE_CHARS, TemplateError

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
LINEAGE = Lineage(event_id="e", topic="job-status", partition=0, offset=7)
_EVENT = TypeAdapter[CatalogEvent](AnyCatalogEvent)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def example(event_type: str, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / f"{event_type}.json").read_text())
    return raw | changes


def event(event_type: str, **changes: Any) -> CatalogEvent:
    return _EVENT.validate_python(example(event_type, **changes))


def status(to: str, **changes: Any) -> CatalogEvent:
    extra: dict[str, Any] = {}
    if to == "Art Approval Sent":
        extra["review_url"] = "https://acme.example/art/J-1042"
    if to == "Completed Order":
        extra["invoice"] = {"invoice_number": "INV-2031", "invoice_url": "https://acme.example/invoices/INV-2031"}
    return event("job.status_changed", to_status=to, **extra | changes)


def shop(**changes: Any) -> CatalogShop:
    return replace(CatalogShop(shop_id="acme", shop_name="Acme Print Co."), **changes)


def on(*keys: str, at: datetime = T0) -> dict[str, CatalogToggle]:
    return {key: CatalogToggle(shop_id="acme", rule=key, enabled=True, updated_at=at) for key in keys}


def fired(event_: CatalogEvent, at: CatalogShop) -> list[str]:
    return [action.rule_id for action in decide(event_, at, LINEAGE, toast_ttl=600).actions]


# -- which rules fire --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("event_", "expected"),
    [
        (event("order.submitted"), ["order_received_email"]),
        (event("reorder.requested"), ["reorder_request_received"]),
        (event("lead.created"), ["lead_new_notification"]),
        (status("Art Approval Sent"), ["art_approval_email", "status_change_toast"]),
        (status("In Production"), ["production_started_email", "status_change_toast"]),
        (status("Completed Order"), ["job_complete_email", "status_change_toast"]),
        (status("Quality Check"), ["status_change_toast"]),
        (event("artwork.declined"), ["art_decline_notification"]),
        (event("artwork.resubmitted"), ["art_resubmit_email"]),
        (event("job.tracking_added"), ["tracking_shipped_email"]),
        (event("invoice.sent"), ["invoice_sent_email"]),
        (event("invoice.paid"), ["invoice_paid_email"]),
    ],
    ids=lambda value: getattr(value, "type", None) or str(value),
)
def test_by_default_each_event_fires_its_default_on_rules(event_: CatalogEvent, expected: list[str]) -> None:
    assert fired(event_, shop()) == expected


def test_statuses_compare_without_case_or_spacing() -> None:
    assert fired(status("in  production"), shop()) == ["production_started_email", "status_change_toast"]


def test_specific_and_general_rules_fire_together_each_with_its_own_id() -> None:
    everything = shop(toggles=on("status_change_email", "status_update_sms"), sms_connected=True)
    decision = decide(status("In Production"), everything, LINEAGE, toast_ttl=600)
    keys = [action.rule_id for action in decision.actions]
    assert keys == ["production_started_email", "status_change_email", "status_change_toast", "status_update_sms"]
    ids = [action.action_id for action in decision.actions]
    assert len(set(ids)) == 4
    again = decide(status("In Production"), everything, LINEAGE, toast_ttl=600)
    assert [action.action_id for action in again.actions] == ids, "a redelivered event decides the same ids"
    other = decide(status("In Production", event_id="evt-other"), everything, LINEAGE, toast_ttl=600)
    assert not set(ids) & {action.action_id for action in other.actions}


def test_a_shop_can_switch_a_default_rule_off() -> None:
    toggle = CatalogToggle(shop_id="acme", rule="production_started_email", enabled=False, updated_at=T0)
    off = {toggle.rule: toggle}
    decision = decide(status("In Production"), shop(toggles=off), LINEAGE, toast_ttl=600)
    assert [a.rule_id for a in decision.actions] == ["status_change_toast"]
    assert ("production_started_email", "off") in decision.skipped


def test_a_rule_switched_on_never_fires_for_earlier_events() -> None:
    event_time = datetime.fromisoformat(example("job.status_changed")["occurred_at"])
    later = shop(toggles=on("status_change_email", at=event_time + timedelta(seconds=1)))
    decision = decide(status("In Production"), later, LINEAGE, toast_ttl=600)
    assert ("status_change_email", "not_yet_on") in decision.skipped
    assert "status_change_email" in fired(
        status("In Production"), shop(toggles=on("status_change_email", at=event_time))
    )


def test_sms_rules_never_fire_without_twilio_or_a_phone() -> None:
    toggles = on("status_update_sms")
    decision = decide(status("In Production"), shop(toggles=toggles), LINEAGE, toast_ttl=600)
    assert ("status_update_sms", "twilio_not_connected") in decision.skipped
    no_phone = status("In Production", customer={"customer_id": "c-1", "name": "Ann", "email": "a@example.com"})
    decision = decide(no_phone, shop(toggles=toggles, sms_connected=True), LINEAGE, toast_ttl=600)
    assert ("status_update_sms", "no_phone") in decision.skipped


def test_payment_links_wait_for_stripe_and_carry_the_amount_and_wording() -> None:
    decision = decide(event("invoice.sent"), shop(toggles=on("payment_link_email")), LINEAGE, toast_ttl=600)
    assert ("payment_link_email", "stripe_not_connected") in decision.skipped
    connected = shop(toggles=on("payment_link_email"), stripe_connected=True)
    link = next(
        a
        for a in decide(event("invoice.sent"), connected, LINEAGE, toast_ttl=600).actions
        if a.rule_id == "payment_link_email"
    )
    assert isinstance(link.effect, PaymentLinkEffect)
    assert (link.effect.amount_cents, link.effect.currency, link.effect.description) == (
        42000,
        "USD",
        "Invoice INV-2031",
    )
    assert link.effect.success_url == "https://acme.example/invoices/INV-2031"
    assert "payment_link" not in link.effect.variables and link.effect.variables["total_due"] == "$420.00"
    assert set(link.effect.templates) == {"subject", "body.html", "body.txt"}
    free = event("invoice.sent", invoice={**example("invoice.sent")["invoice"], "total_due_cents": 0})
    assert ("payment_link_email", "nothing_due") in decide(free, connected, LINEAGE, toast_ttl=600).skipped


# -- what they say -----------------------------------------------------------------------------
def test_an_email_carries_its_rendered_parts_and_lineage() -> None:
    [action] = decide(event("order.submitted"), shop(), LINEAGE, toast_ttl=600).actions
    effect = action.effect
    assert isinstance(effect, EmailEffect)
    assert (effect.to, effect.to_name, effect.template_key) == ("ann@example.com", "Ann Lee", "order_received_email")
    assert effect.subject == "We received your order O-5531"
    assert "O-5531 ($129.00)" in effect.text_body and "https://acme.example/portal/c-42" in effect.text_body
    assert effect.html_body is not None and 'href="https://acme.example/portal/c-42"' in effect.html_body
    assert (action.trigger, action.customer_id, action.lineage) == ("order.submitted", "c-42", LINEAGE)
    assert action.order_count is None


def test_plain_text_parts_are_not_html_escaped_and_html_parts_are() -> None:
    obrien = {"customer_id": "c-9", "name": "Ann O'Brien <3", "email": "ann@example.com", "phone": "+15551234567"}
    connected = shop(toggles=on("status_update_sms"), sms_connected=True)
    actions = decide(status("In Production", customer=obrien), connected, LINEAGE, toast_ttl=600).actions
    email = next(a.effect for a in actions if isinstance(a.effect, EmailEffect))
    sms = next(a.effect for a in actions if isinstance(a.effect, SmsEffect))
    assert "Ann O'Brien <3" in email.text_body
    assert email.html_body is not None and "Ann O&#39;Brien &lt;3" in email.html_body
    assert sms.to == "+15551234567" and "<3" not in sms.text  # the SMS template does not name the customer


def test_notifications_go_to_every_admin_and_toasts_expire() -> None:
    admins = shop(admin_ids=("a-1", "a-2"))
    [note] = decide(event("lead.created"), admins, LINEAGE, toast_ttl=600).actions
    assert isinstance(note.effect, NotificationEffect)
    assert note.effect.admin_ids == ["a-1", "a-2"]
    assert note.customer_id is None
    assert note.effect.text == 'New website lead from Bo Chen (bo@example.com, +15557654321): "Quote for 200 T-shirts?"'
    toast = decide(status("In Production"), admins, LINEAGE, toast_ttl=90).actions[-1]
    assert isinstance(toast.effect, ToastEffect)
    assert toast.effect.expires_at == toast.occurred_at + timedelta(seconds=90)


def test_dates_are_in_the_shop_time_zone() -> None:
    late = event("invoice.paid", occurred_at="2026-12-03T02:00:00+00:00")
    chicago = shop(time_zone=ZoneInfo("America/Chicago"))
    [action] = decide(late, chicago, LINEAGE, toast_ttl=600).actions
    assert isinstance(action.effect, EmailEffect)
    assert "December 2, 2026" in action.effect.text_body
    [utc] = decide(late, shop(), LINEAGE, toast_ttl=600).actions
    assert isinstance(utc.effect, EmailEffect) and "December 3, 2026" in utc.effect.text_body


def test_every_rule_gets_every_variable_it_declares_from_its_event() -> None:
    samples = {
        "order.submitted": event("order.submitted"),
        "reorder.requested": event("reorder.requested"),
        "lead.created": event("lead.created"),
        "artwork.declined": event("artwork.declined"),
        "artwork.resubmitted": event("artwork.resubmitted"),
        "job.tracking_added": event("job.tracking_added"),
        "invoice.sent": event("invoice.sent"),
        "invoice.paid": event("invoice.paid"),
    }
    for rule in RULES:
        if rule.trigger.scheduled or rule.trigger.needs:
            continue
        if rule.trigger.key == "job.status_changed":
            sample = status(rule.trigger.to_status or "In Production")
        else:
            sample = samples[rule.trigger.key]
        provided = wording.event_variables(sample, shop())
        assert set(sample_variables(rule)) <= set(provided), rule.key


def test_a_shop_wording_replaces_only_the_parts_it_gives() -> None:
    wording = {
        "order_received_email": CatalogTemplate(
            shop_id="acme",
            rule="order_received_email",
            parts={"subject": "Got it, {{ customer_name }}!"},
            updated_at=T0,
        )
    }
    [action] = decide(event("order.submitted"), shop(templates=wording), LINEAGE, toast_ttl=600).actions
    assert isinstance(action.effect, EmailEffect)
    assert action.effect.subject == "Got it, Ann Lee!"
    assert "O-5531 ($129.00)" in action.effect.text_body  # body stays default


def test_wording_that_fails_on_real_data_sends_the_default_and_alerts_the_shop() -> None:
    huge = "{% for i in range(100000) %}{{ customer_name }} {% endfor %}"
    wording = {
        "order_received_email": CatalogTemplate(
            shop_id="acme", rule="order_received_email", parts={"body.txt": huge}, updated_at=T0
        )
    }
    actions = decide(event("order.submitted"), shop(templates=wording), LINEAGE, toast_ttl=600).actions
    email, alert = actions
    assert isinstance(email.effect, EmailEffect) and "O-5531 ($129.00)" in email.effect.text_body
    assert alert.effect.channel == "alert" and "order_received_email/body.txt" in alert.effect.text  # type: ignore[union-attr]
    assert alert.action_id != email.action_id


# -- validating wording ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"subject": "Hi {{ customer_nme }}"}, "order_received_email/subject (line 1): unknown variable"),
        ({"body.txt": "Hi\n{{ job_name }}"}, "order_received_email/body.txt (line 2): unknown variable: 'job_name'"),
        ({"body.html": "<p>\n{% if %}</p>"}, "order_received_email/body.html (line 2): syntax error"),
        ({"body.txt": "{{ customer_name.__class__.__mro__ }}"}, "not allowed in a template"),
        ({"body.txt": "x" * (MAX_SOURCE_CHARS + 1)}, "the limit is 65536"),
        ({"subjct": "Hi"}, "has no part subjct; its parts are subject, body.html, body.txt"),
        ({"subject": "{{ '' }}"}, "order_received_email/subject: renders empty"),
    ],
)
def test_wording_is_refused_with_the_part_the_line_and_the_problem(parts: dict[str, str], message: str) -> None:
    with pytest.raises(TemplateError, match=None) as raised:
        validate_override(BY_KEY["order_received_email"], parts)
    assert message in str(raised.value)


def test_an_sms_longer_than_twilio_allows_is_refused() -> None:
    with pytest.raises(TemplateError, match="an SMS holds at most 1600"):
        validate_override(BY_KEY["status_update_sms"], {"text": "{{ job_name }}" + "!" * 1600})


def test_valid_wording_passes() -> None:
    validate_override(BY_KEY["art_decline_notification"], {"title": "Declined: {{ job_number }}"})


# -- event contracts ---------------------------------------------------------------------------
def test_statuses_with_rules_of_their_own_need_what_their_messages_link_to() -> None:
    adapter = TypeAdapter[Any](JobStatusEvent)
    with pytest.raises(ValidationError, match="review_url is required"):
        adapter.validate_python(example("job.status_changed", to_status="art approval sent"))
    with pytest.raises(ValidationError, match="invoice is required"):
        adapter.validate_python(example("job.status_changed", to_status="Completed Order"))


def test_every_example_event_is_valid() -> None:
    for path in sorted(EXAMPLES.glob("*.json")):
        raw = json.loads(path.read_text())
        assert raw["type"] == path.name.removesuffix(".json")
        if raw["type"].startswith("payment."):
            continue
        assert _EVENT.validate_python(raw).type == raw["type"]
