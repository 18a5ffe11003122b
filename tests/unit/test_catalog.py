"""The automation catalog: its 24 rules, their defaults and channels, and their default templates."""

from __future__ import annotations

import pytest

from streamapp.rules.catalog import PARTS, RULES, TEMPLATES_DIR, CatalogRule, sample_variables
from streamapp.templating import render

#: The stable keys of the product document, in its order.
EXPECTED_KEYS = [
    "order_received_email",
    "art_approval_email",
    "art_resubmit_email",
    "production_started_email",
    "job_complete_email",
    "tracking_shipped_email",
    "status_change_email",
    "invoice_sent_email",
    "invoice_paid_email",
    "payment_link_email",
    "invoice_overdue_email",
    "payment_due_soon_email",
    "invoice_30day_escalation",
    "invoice_60day_escalation",
    "art_decline_notification",
    "status_change_toast",
    "lead_new_notification",
    "reorder_request_received",
    "invoice_90day_admin_alert",
    "job_complete_sms",
    "art_approval_sms",
    "tracking_shipped_sms",
    "invoice_sent_sms",
    "status_update_sms",
]
SMS_KEYS = {"job_complete_sms", "art_approval_sms", "tracking_shipped_sms", "invoice_sent_sms", "status_update_sms"}
NOTIFICATION_KEYS = {
    "art_decline_notification",
    "lead_new_notification",
    "reorder_request_received",
    "invoice_90day_admin_alert",
}
TOAST_KEYS = {"status_change_toast"}
OFF_BY_DEFAULT = SMS_KEYS | {
    "status_change_email",
    "payment_link_email",
    "payment_due_soon_email",
    "invoice_30day_escalation",
    "invoice_60day_escalation",
}
ONE_LINE_PARTS = {("email", "subject"), ("sms", "text"), ("notification", "title"), ("toast", "title")}

RULE_PARTS = [(rule, part) for rule in RULES for part in PARTS[rule.channel]]


def _id(value: object) -> str:
    return value.key if isinstance(value, CatalogRule) else str(value)


def _render(rule: CatalogRule, part: str, **overrides: str) -> str:
    path = rule.template_path(part)
    return render(path.read_text(), {**sample_variables(rule), **overrides}, name=str(path.relative_to(TEMPLATES_DIR)))


def test_the_catalog_has_exactly_the_keys_of_the_product_document_in_order() -> None:
    keys = [rule.key for rule in RULES]
    assert keys == EXPECTED_KEYS
    assert len(set(keys)) == len(keys) == 24


def test_exactly_the_documented_rules_are_off_by_default() -> None:
    assert {rule.key for rule in RULES if not rule.on_by_default} == OFF_BY_DEFAULT


def test_each_rule_speaks_on_its_documented_channel() -> None:
    expected = dict.fromkeys(EXPECTED_KEYS, "email")
    expected |= dict.fromkeys(SMS_KEYS, "sms") | dict.fromkeys(NOTIFICATION_KEYS, "notification")
    expected |= dict.fromkeys(TOAST_KEYS, "toast")
    assert {rule.key: rule.channel for rule in RULES} == expected
    assert all(key.endswith("_sms") == (key in SMS_KEYS) for key in EXPECTED_KEYS)


@pytest.mark.parametrize("rule", RULES, ids=_id)
def test_trigger_variables_are_unique_and_documented(rule: CatalogRule) -> None:
    names = [variable.name for variable in rule.trigger.variables]
    assert len(set(names)) == len(names), names
    for variable in rule.trigger.variables:
        assert variable.name.isidentifier(), variable
        assert variable.description.strip(), variable
        assert variable.example.strip(), variable


def test_the_template_folders_hold_exactly_the_catalog_files() -> None:
    expected_files = {rule.template_path(part) for rule, part in RULE_PARTS}
    expected_dirs = {path.parent for path in expected_files}
    on_disk = {path for channel in PARTS for path in (TEMPLATES_DIR / channel).rglob("*")}
    assert sorted(map(str, on_disk - expected_files - expected_dirs)) == [], "extra files or folders"
    assert sorted(map(str, (expected_files | expected_dirs) - on_disk)) == [], "missing templates"
    assert all(path.is_file() for path in expected_files)
    assert {path for path in TEMPLATES_DIR.iterdir() if path.is_dir()} == {TEMPLATES_DIR / c for c in PARTS}


@pytest.mark.parametrize(("rule", "part"), RULE_PARTS, ids=_id)
def test_every_template_renders_with_exactly_the_trigger_variables(rule: CatalogRule, part: str) -> None:
    # StrictUndefined: rendering with only the trigger's variables fails on any other name.
    rendered = _render(rule, part)
    assert rendered.strip()
    if (rule.channel, part) in ONE_LINE_PARTS:
        assert "\n" not in rendered.strip(), rendered


@pytest.mark.parametrize("rule", [rule for rule in RULES if rule.channel == "sms"], ids=_id)
def test_sms_text_is_short_and_starts_with_the_shop_name(rule: CatalogRule) -> None:
    rendered = _render(rule, "text")
    assert len(rendered) <= 160, (len(rendered), rendered)
    assert rendered.startswith(sample_variables(rule)["shop_name"]), rendered


EMAILS_WITH_CUSTOMER_NAME = [
    rule for rule in RULES if rule.channel == "email" and "customer_name" in sample_variables(rule)
]


def test_the_email_rules_greet_the_customer_by_name() -> None:
    assert len(EMAILS_WITH_CUSTOMER_NAME) == 14


@pytest.mark.parametrize("rule", EMAILS_WITH_CUSTOMER_NAME, ids=_id)
def test_email_html_body_escapes_the_customer_name(rule: CatalogRule) -> None:
    rendered = _render(rule, "body.html", customer_name="<b>x</b>")
    assert "&lt;b&gt;x&lt;/b&gt;" in rendered
    assert "<b>x</b>" not in rendered
