"""A shop's Stripe key and what the payment-link sink asks of Stripe: pure logic, no network.

Validated on the way in, sealed and bound to its shop, never shown (repr, errors, the SDK's
log records); Stripe's errors told apart (retry later, or fail the action with the reason);
the Checkout Session's parameters and the email's rendering.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
import stripe
from pydantic import SecretStr

from schemas.actions import Action, Lineage, PaymentLinkEffect
from streamapp.connections.crypto import generate_key, seal
from streamapp.connections.stripe_account import (
    MAX_HINT_CHARS,
    StripeAccount,
    StripeCredentials,
    describe_error,
    is_transient,
    redact,
    seal_credentials,
    unseal_credentials,
    validate_credentials,
)
from streamapp.embedded.stripe import ensure_stripe_mock, go_environment
from streamapp.errors import ConfigurationError
from streamapp.rules.catalog import BY_KEY, sample_variables
from streamapp.rules.wording import sources
from streamapp.settings import Settings
from streamapp.sinks.payment_link import checkout_params, render_email
from streamapp.templating import TemplateError

SECRET = "sk_test_51UnitTestKey0123456789wxyz"
#: Its constructor is untyped in the SDK.
APIConnectionError: Any = stripe.APIConnectionError
RULE = BY_KEY["payment_link_email"]


def settings() -> Settings:
    return Settings(secret_key=SecretStr(generate_key()))


# -- the key -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [SECRET, "sk_live_51UnitTestKey0123456789wxyz", "rk_test_51UnitTestKey0123", "rk_live_" + "a1" * 50],
)
def test_secret_and_restricted_keys_of_both_modes_are_accepted(key: str) -> None:
    validate_credentials(StripeCredentials(key))


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("pk_test_51UnitTestKey0123456789", "publishable key"),
        ("whsec_51UnitTestKey0123456789", "webhook signing secret"),
        ("sk_test_short", "followed by letters and digits"),
        ("sk_prod_51UnitTestKey0123456789", "followed by letters and digits"),
        ("sk_test_51Unit_TestKey0123456789", "followed by letters and digits"),
        (" sk_test_51UnitTestKey0123456789", "followed by letters and digits"),
        ("", "followed by letters and digits"),
    ],
)
def test_anything_else_is_refused_saying_why_never_echoing_it(key: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as raised:
        validate_credentials(StripeCredentials(key))
    assert not key.strip() or key.strip() not in str(raised.value)


def test_credentials_show_only_their_prefix_and_last_four() -> None:
    creds = StripeCredentials(SECRET)
    for shown in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds])):
        assert SECRET not in shown and "51UnitTestKey" not in shown
        assert "sk_test_•••wxyz" in shown
    assert (creds.livemode, creds.restricted) == (False, False)
    restricted = StripeCredentials("rk_live_51UnitTestKey0123456789wxyz")
    assert (restricted.livemode, restricted.restricted, restricted.key_hint) == (True, True, "rk_live_•••wxyz")


def test_a_sealed_key_opens_only_for_its_shop_and_shows_nothing() -> None:
    config = settings()
    creds = StripeCredentials(SECRET)

    sealed = seal_credentials(config, "shop-1", creds)

    assert SECRET.encode() not in sealed and b"51UnitTestKey" not in sealed
    assert unseal_credentials(config, "shop-1", sealed) == creds
    with pytest.raises(ConfigurationError, match="belongs to another shop") as raised:
        unseal_credentials(config, "shop-2", sealed)
    assert "51UnitTestKey" not in str(raised.value)
    with pytest.raises(ConfigurationError, match="STREAMAPP_SECRET_KEY"):
        unseal_credentials(settings(), "shop-1", sealed)


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1]", b'{"v": 2, "shop_id": "shop-1", "secret_key": "x"}', b'{"v": 1, "shop_id": "shop-1"}'],
)
def test_a_sealed_value_of_an_unknown_layout_is_unreadable(payload: bytes) -> None:
    config = settings()
    with pytest.raises(ConfigurationError, match="not readable by this version"):
        unseal_credentials(config, "shop-1", seal(config, payload))


# -- never in a text or a log record ----------------------------------------------------------------


def test_redact_masks_every_key_shaped_text() -> None:
    text = f"Authorization was 'Bearer {SECRET}'; also rk_live_ABCdef1234567890 and pk_test_visible123"
    assert redact(text) == (
        "Authorization was 'Bearer sk_test_•••'; also rk_live_••• and pk_test_visible123"  # publishable keys are public
    )
    assert redact(f"key={SECRET}", SECRET) == "key=sk_test_•••wxyz"
    assert redact("odd key abc123secret", "abc123secret") == "odd key •••"


def test_the_sdks_log_records_are_redacted_before_any_handler(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="stripe")
    sdk = logging.getLogger("stripe")
    sdk.info("error_message=%s", f"Authorization was 'Bearer {SECRET}'")
    sdk.debug(f"body={json.dumps({'error': {'message': SECRET}})}")
    sdk.info("%(where)s", {"where": SECRET})

    assert len(caplog.records) == 3
    assert "51UnitTestKey" not in caplog.text
    assert caplog.text.count("sk_test_•••") == 3


# -- Stripe's errors ------------------------------------------------------------------------------


def api_error(kind: type[stripe.StripeError], status: int | None, error: dict[str, Any], **headers: str) -> Any:
    body = {"error": error}
    if issubclass(kind, stripe.InvalidRequestError | stripe.CardError):
        return kind(
            error.get("message"), error.get("param"), error.get("code"), json.dumps(body), status, body, headers
        )
    return kind(error.get("message"), json.dumps(body), status, body, {"request-id": "req_123", **headers})


def test_an_error_is_described_with_stripes_status_type_code_param_and_request_never_the_key() -> None:
    refused = api_error(
        stripe.InvalidRequestError,
        400,
        {
            "type": "invalid_request_error",
            "code": "parameter_invalid_integer",
            "param": "line_items[0][price_data][unit_amount]",
            "message": "Invalid integer: -5",
        },
    )
    assert describe_error(refused) == (
        "HTTP 400 invalid_request_error/parameter_invalid_integer (param line_items[0][price_data][unit_amount]): "
        "Invalid integer: -5"
    )
    declined = api_error(
        stripe.CardError, 402, {"type": "card_error", "code": "card_declined", "decline_code": "do_not_honor"}
    )
    assert describe_error(declined) == "HTTP 402 card_error/card_declined (decline do_not_honor): no message"
    echoed = api_error(stripe.AuthenticationError, 401, {"type": "invalid_request_error", "message": f"bad {SECRET}"})
    assert describe_error(echoed, SECRET) == ("HTTP 401 invalid_request_error: bad sk_test_•••wxyz [request req_123]")


def test_no_answer_is_described_by_its_cause() -> None:
    error = APIConnectionError("Unexpected error communicating with Stripe.", should_retry=True)
    error.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    assert describe_error(error) == "no answer from Stripe: ConnectionRefusedError: [Errno 111] Connect call failed"
    error.__cause__ = TimeoutError()
    assert describe_error(error) == "no answer from Stripe: TimeoutError"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (APIConnectionError("no answer"), True),
        (api_error(stripe.RateLimitError, 429, {"type": "invalid_request_error", "code": "rate_limit"}), True),
        (api_error(stripe.APIError, 500, {"type": "api_error"}), True),
        (api_error(stripe.APIError, 503, {"type": "api_error"}), True),
        (api_error(stripe.APIError, None, {}), True),
        (api_error(stripe.APIError, 409, {"type": "idempotency_error"}), True),
        (api_error(stripe.InvalidRequestError, 400, {"type": "invalid_request_error"}), False),
        (api_error(stripe.InvalidRequestError, 404, {"type": "invalid_request_error"}), False),
        (api_error(stripe.IdempotencyError, 400, {"type": "idempotency_error"}), False),
        (api_error(stripe.AuthenticationError, 401, {"type": "invalid_request_error"}), False),
        (api_error(stripe.CardError, 402, {"type": "card_error"}), False),
        (api_error(stripe.PermissionError, 403, {"type": "invalid_request_error"}), False),
        (api_error(stripe.InvalidRequestError, 400, {"code": "lock_timeout"}, **{"Stripe-Should-Retry": "true"}), True),
        (api_error(stripe.APIError, 500, {"type": "api_error"}, **{"Stripe-Should-Retry": "false"}), False),
    ],
    ids=lambda value: value if isinstance(value, bool) else f"{type(value).__name__}-{value.http_status}",
)
def test_transient_and_permanent_errors_are_told_apart(error: stripe.StripeError, transient: bool) -> None:
    assert is_transient(error) is transient


def test_the_account_hint_fits_the_record() -> None:
    assert StripeAccount("acct_1", None, False, "sk_test_•••wxyz").hint == "acct_1 (test mode)"
    assert (
        StripeAccount("acct_1", "Acme Print Co.", True, "sk_live_•••wxyz").hint == "Acme Print Co. (acct_1, live mode)"
    )
    assert StripeAccount(None, None, False, "rk_test_•••wxyz").hint == "restricted key rk_test_•••wxyz (test mode)"
    long = StripeAccount("acct_1N2b3C4d5E6f7G8h", "A" * 200, False, "x").hint
    assert len(long) == MAX_HINT_CHARS and long.endswith("…" + " (acct_1N2b3C4d5E6f7G8h, test mode)")


# -- the session and the email ------------------------------------------------------------------


def effect(**overrides: Any) -> PaymentLinkEffect:
    values: dict[str, Any] = {
        "to": "ann@example.com",
        "to_name": "Ann Lee",
        "template_key": RULE.key,
        "amount_cents": 42000,
        "currency": "EUR",
        "description": "Invoice INV-2031",
        "success_url": "https://acme.example/invoices/INV-2031",
        "cancel_url": "https://acme.example/invoices/INV-2031?cancelled",
        "templates": sources(RULE, None),
        "variables": {k: v for k, v in sample_variables(RULE).items() if k != "payment_link"},
    }
    return PaymentLinkEffect(**(values | overrides))


def test_the_checkout_session_is_one_line_of_the_invoice_amount_traced_to_its_action() -> None:
    link = effect()
    action = Action(
        action_id="act-1",
        shop_id="acme",
        customer_id="c-42",
        rule_id=RULE.key,
        rule_name=RULE.description,
        trigger="invoice.sent",
        occurred_at="2026-11-23T16:00:00-06:00",
        effect=link,
        lineage=Lineage(event_id="evt-1", topic="payments", partition=0, offset=1),
    )
    assert checkout_params(action, link) == {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {"currency": "eur", "unit_amount": 42000, "product_data": {"name": "Invoice INV-2031"}},
                "quantity": 1,
            }
        ],
        "customer_email": "ann@example.com",
        "success_url": "https://acme.example/invoices/INV-2031",
        "cancel_url": "https://acme.example/invoices/INV-2031?cancelled",
        "metadata": {"action_id": "act-1", "shop_id": "acme"},
        "payment_intent_data": {"metadata": {"action_id": "act-1", "shop_id": "acme"}},
    }


def test_the_email_is_rendered_with_the_link_escaped_in_html_and_plain_in_text() -> None:
    url = "https://checkout.stripe.com/c/pay/cs_test_a1#fid=1&x=2"
    email = render_email(effect(), url)
    assert email.subject == "Pay invoice INV-2031 online"
    assert f"Pay $420.00 now:\n{url}\n" in email.text_body
    assert email.html_body is not None
    assert '<a href="https://checkout.stripe.com/c/pay/cs_test_a1#fid=1&amp;x=2">' in email.html_body


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"template_key": "no_such_rule"}, "no_such_rule: not an email rule of the catalog"),
        ({"template_key": "job_complete_sms"}, "job_complete_sms: not an email rule of the catalog"),
        (
            {"templates": {"subject": "x", "body.html": "y"}},
            "payment_link_email: the effect has no template for body.txt",
        ),
        ({"variables": {}}, "payment_link_email/subject (line 1): unknown variable"),
    ],
)
def test_an_email_that_cannot_be_rendered_says_why(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(problem)):
        render_email(effect(**overrides), "https://checkout.stripe.com/c/pay/cs_test_a1")


# -- installing stripe-mock ---------------------------------------------------------------------------


def test_without_go_the_install_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigurationError, match=r"'go' is not on PATH.*STREAMAPP_STRIPE_API_URL"):
        ensure_stripe_mock(tmp_path / "cache", "v0.0.1")


def test_an_installed_version_is_reused_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "stripe-mock-v9.9.9"
    root.mkdir()
    (root / "stripe-mock").write_bytes(b"")
    (root / ".complete").touch()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert ensure_stripe_mock(tmp_path, "v9.9.9") == root / "stripe-mock"


def test_go_builds_in_its_own_caches_keeping_the_users_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOFLAGS", "-buildvcs=false")
    monkeypatch.setenv("GOPROXY", "https://proxy.example")
    env = go_environment(tmp_path)
    assert env["GOFLAGS"] == "-buildvcs=false -modcacherw"
    assert env["GOPROXY"] == "https://proxy.example"
    assert env["GOCACHE"] == str(tmp_path / "gocache") and env["GOMODCACHE"].startswith(str(tmp_path))
    assert env["CGO_ENABLED"] == "0"
    assert os.environ["GOFLAGS"] == "-buildvcs=false"  # the process's own environment is untouched
