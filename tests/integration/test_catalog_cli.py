"""The catalog commands through the real entry point, on the real broker: toggles, wording, preview."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cli import SHOP, Cli

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"


def rows(cli: Cli) -> dict[str, dict[str, str]]:
    listed: list[dict[str, str]] = json.loads(cli.ok("catalog", "list", "--shop", SHOP, "--json"))
    return {row["rule"]: row for row in listed}


def event_file(cli: Cli, event_type: str, **changes: Any) -> str:
    raw = json.loads((EXAMPLES / f"{event_type}.json").read_text()) | {"shop_id": SHOP} | changes
    path = cli.tmp / f"{event_type}.json"
    path.write_text(json.dumps(raw))
    return str(path)


def test_list_shows_every_rule_with_trigger_channel_state_and_wording(cli: Cli) -> None:
    table = cli.ok("catalog", "list", "--shop", SHOP).splitlines()
    assert table[0].split() == ["RULE", "TRIGGER", "CHANNEL", "STATE", "DEFAULT", "WORDING"]
    assert len(table) == 25
    found = rows(cli)
    assert found["production_started_email"] == {
        "rule": "production_started_email",
        "trigger": "job.status_changed -> In Production",
        "channel": "email",
        "state": "on",
        "default": "on",
        "wording": "default",
    }
    assert found["status_update_sms"]["state"] == "off"
    assert found["invoice_overdue_email"]["trigger"] == "invoice.overdue (scheduled)"


def test_toggling_overrides_the_default_and_sms_needs_twilio(cli: Cli) -> None:
    assert cli.ok("catalog", "disable", "--shop", SHOP, "order_received_email") == (
        "order_received_email is off for shop shop-1\n"
    )
    assert rows(cli)["order_received_email"]["state"] == "off"
    enabled = cli.ok("catalog", "enable", "--shop", SHOP, "status_change_email")
    assert enabled.startswith("status_change_email is on for shop shop-1 (fires for events from ")
    assert rows(cli)["status_change_email"]["state"] == "on"
    assert cli.ok("catalog", "enable", "--shop", SHOP, "status_change_email") == (
        "status_change_email is already on for shop shop-1; nothing changed\n"
    )
    assert cli.refused("catalog", "enable", "--shop", SHOP, "status_update_sms") == (
        "streamapp: error: status_update_sms sends SMS, and shop shop-1 has not connected Twilio: "
        "run `streamapp twilio connect --shop shop-1 ...` first"
    )
    assert rows(cli)["status_update_sms"]["state"] == "off"
    assert cli.refused("catalog", "enable", "--shop", SHOP, "order_recieved_email") == (
        "streamapp: error: no catalog rule 'order_recieved_email'; did you mean order_received_email?"
    )


def test_wording_is_validated_when_saved_and_can_be_reset(cli: Cli) -> None:
    base = ("catalog", "set-template", "--shop", SHOP, "--rule", "order_received_email")
    refusals = {
        "subject=Hi {{ customer_nme }}": "order_received_email/subject (line 1): unknown variable: "
        "'customer_nme' is undefined",
        "body.html=<p>\n{% if %}</p>": "order_received_email/body.html (line 2): syntax error: Expected an expression",
        "body.txt={{ customer_name.__class__.__mro__ }}": "not allowed in a template",
    }
    for part, message in refusals.items():
        assert message in cli.refused(*base, "--part", part)
    huge = cli.tmp / "huge.txt"
    huge.write_text("x" * 70_000)
    assert cli.refused(*base, "--part-file", f"body.txt={huge}") == (
        "streamapp: error: wording refused: order_received_email/body.txt: "
        "template is 70000 characters; the limit is 65536"
    )
    assert rows(cli)["order_received_email"]["wording"] == "default"

    saved = cli.ok(*base, "--part", "subject=Got your order, {{ customer_name }}!")
    assert saved == "order_received_email: wording of subject saved for shop shop-1\n"
    assert rows(cli)["order_received_email"]["wording"] == "customised"
    preview = cli.ok("preview", "--shop", SHOP, "--rule", "order_received_email")
    assert "Subject: Got your order, Ann Lee!" in preview
    assert "Thank you for your order!" in preview  # the body stays the default

    assert cli.ok("catalog", "reset-template", "--shop", SHOP, "--rule", "order_received_email") == (
        "order_received_email: wording reset to the default for shop shop-1\n"
    )
    assert rows(cli)["order_received_email"]["wording"] == "default"
    assert "Subject: We received your order O-5531" in cli.ok(
        "preview", "--shop", SHOP, "--rule", "order_received_email"
    )


def test_preview_renders_what_the_sink_sends_from_samples_or_an_event(cli: Cli) -> None:
    sample = cli.ok("preview", "--shop", SHOP, "--rule", "art_approval_email")
    assert "To: Ann Lee <ann@example.com>" in sample
    assert "Subject: Please review the artwork for 500 business cards (J-1042)" in sample
    assert "----- text/plain -----" in sample and "----- text/html -----" in sample

    path = event_file(
        cli,
        "job.status_changed",
        to_status="Art Approval Sent",
        review_url="https://acme.example/art/J-77",
        job={"job_id": "j-77", "job_number": "J-77", "job_name": "Banners"},
    )
    from_event = cli.ok("preview", "--shop", SHOP, "--rule", "art_approval_email", "--event", path)
    assert "https://acme.example/art/J-77" in from_event and "J-77" in from_event
    action = json.loads(cli.ok("preview", "--shop", SHOP, "--rule", "art_approval_email", "--event", path, "--json"))
    assert action["effect"]["channel"] == "email" and action["rule_id"] == "art_approval_email"
    assert action["trigger"] == "job.status_changed"

    assert cli.refused("preview", "--shop", SHOP, "--rule", "invoice_paid_email", "--event", path) == (
        "streamapp: error: a job.status_changed event does not trigger invoice_paid_email; "
        "it triggers art_approval_email, status_change_email, status_change_toast, art_approval_sms, status_update_sms"
    )
    sms = cli.ok("preview", "--shop", SHOP, "--rule", "status_update_sms", "--event", path)
    assert sms.startswith("To: +15551234567\n")
    assert "Note: not sent for this event: the rule is off for this shop." in sms
    broken = cli.tmp / "broken.json"
    broken.write_text('{"type": "job.status_changed"')
    assert "not JSON" in cli.refused("preview", "--shop", SHOP, "--rule", "art_approval_email", "--event", str(broken))


def test_admins_receive_notifications_preview(cli: Cli) -> None:
    assert cli.ok("admins", "list", "--shop", SHOP) == "shop shop-1 has no admins\n"
    cli.ok("admins", "add", "--shop", SHOP, "--admin", "maria", "--name", "Maria", "--email", "maria@example.com")
    cli.ok("admins", "add", "--shop", SHOP, "--admin", "sam", "--name", "Sam", "--email", "sam@example.com")
    assert [line.split()[0] for line in cli.ok("admins", "list", "--shop", SHOP).splitlines()] == [
        "ADMIN",
        "maria",
        "sam",
    ]
    note = cli.ok("preview", "--shop", SHOP, "--rule", "lead_new_notification")
    assert note.startswith("To: each admin (maria, sam)\nTitle: New lead: Bo Chen\n")
    cli.ok("admins", "remove", "--shop", SHOP, "--admin", "sam")
    assert "To: each admin (maria)" in cli.ok("preview", "--shop", SHOP, "--rule", "lead_new_notification")
    assert cli.refused("admins", "remove", "--shop", SHOP, "--admin", "sam") == (
        "streamapp: error: shop shop-1 has no admin sam"
    )


def test_variables_catalogue(cli: Cli) -> None:
    """Spawned as ``python -m streamapp``, not forked: the console script's module from a cold start."""
    cli = cli.spawned()
    everything = cli.ok("catalog", "variables")
    for name in ("portal_link", "tracking_numbers", "decline_reason", "lead_source", "total_due", "paid_on"):
        assert name in everything
    one = cli.ok("catalog", "variables", "--rule", "tracking_shipped_email")
    assert "carrier" in one and "lead_source" not in one


ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "fedcba9876543210" * 2


def test_twilio_connect_lets_sms_rules_on_and_never_shows_the_token(cli: Cli, twilio_api: str) -> None:
    cli.env = {k: v for k, v in cli.env.items() if k not in {"STREAMAPP_SECRET_KEY", "TWILIO_AUTH_TOKEN"}}
    cli.env["STREAMAPP_TWILIO_API_URL"] = twilio_api
    connect = ("twilio", "connect", "--shop", SHOP, "--account-sid", ACCOUNT, "--from", "+15005550006")
    cli.env["TWILIO_AUTH_TOKEN"] = TOKEN
    assert "STREAMAPP_SECRET_KEY is not set" in cli.refused(*connect)
    cli.env["STREAMAPP_SECRET_KEY"] = cli.ok("secret-key").strip()
    assert cli.refused(*connect[:-2]) == (
        "streamapp: error: give exactly one of --from NUMBER and --messaging-service SID"
    )
    cli.env["TWILIO_AUTH_TOKEN"] = "not-a-token"
    assert cli.refused(*connect) == "streamapp: error: Twilio auth token must be 32 hexadecimal characters"
    cli.env["TWILIO_AUTH_TOKEN"] = TOKEN

    done = cli(*connect)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"shop shop-1 is connected to Twilio account {ACCOUNT}, sending as +1500•••0006\n"
    assert TOKEN not in done.stdout + done.stderr
    status = cli.ok("twilio", "status", "--shop", SHOP)
    assert "is connected to Twilio since" in status and "opted out: 0 numbers" in status and TOKEN not in status
    assert cli.ok("catalog", "enable", "--shop", SHOP, "status_update_sms").startswith("status_update_sms is on")
    assert rows(cli)["status_update_sms"]["state"] == "on"

    assert cli.ok("twilio", "disconnect", "--shop", SHOP) == (
        "shop shop-1 is disconnected from Twilio; its credentials are deleted\n"
    )
    assert rows(cli)["status_update_sms"]["state"] == "on (Twilio not connected)"
    assert cli.ok("twilio", "status", "--shop", SHOP).startswith("shop shop-1 is not connected to Twilio\n")
