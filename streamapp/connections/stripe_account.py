"""A shop's Stripe connection: validated, sealed at rest, verified, and the SDK client that uses it.

A shop connects Stripe with a secret key (``sk_test_…``/``sk_live_…``) or a restricted key
(``rk_…``) that may create Checkout Sessions. The key is validated on the way in
(:func:`validate_credentials`), sealed with ``STREAMAPP_SECRET_KEY`` (:mod:`streamapp.connections.crypto`)
into ``stripe_credentials``, and unsealed only by the process that creates sessions. It never
travels on a Kafka topic, and no repr, log line or error message of this module contains it:
error texts go through :func:`redact`, and so does every record of the SDK's ``stripe`` logger
(see :class:`RedactKeys`), because an error body may quote the key (stripe-mock's 401 does).

The sealed payload names its shop, and :func:`load_credentials` checks it: a sealed value
copied onto another shop's row does not charge through the first shop's account.

Talking to Stripe goes through the official SDK: a :class:`stripe.StripeClient` per request
(cheap; no module-level ``stripe.api_key``, so shops never share state) over one aiohttp
transport (:func:`new_http_client`), using the SDK's ``*_async`` methods so a worker is never
blocked on the network. ``Settings.stripe_api_url`` points every base address of the client at
a local stand-in (stripe-mock, in the tests), so nothing configured that way reaches Stripe.
The SDK's own retries are off: the sink retries, with its backoff and its record of attempts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import aiohttp
import stripe

from streamapp.connections import sealed
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.queries import Queryable
from streamapp.settings import Settings

logger = logging.getLogger(__name__)

_SECRET_KEY = re.compile(r"(sk|rk)_(test|live)_[0-9A-Za-z]{8,240}")
#: Anything shaped like a secret or restricted key, wherever it appears in a text.
_ANY_SECRET_KEY = re.compile(r"\b(sk|rk)_(test|live)_[0-9A-Za-z]+")

#: Version of the sealed payload's layout.

#: Longest ``account_hint`` of a StripeConnection record.
MAX_HINT_CHARS = 80


def redact(text: str, secret: str | None = None) -> str:
    """``text`` with ``secret`` and anything shaped like a Stripe secret or restricted key masked."""
    if secret:
        text = text.replace(secret, _mask(secret))
    return _ANY_SECRET_KEY.sub(lambda match: f"{match.group(1)}_{match.group(2)}_•••", text)


def _mask(key: str) -> str:
    """A key for display: its prefix and last four characters (what Stripe's dashboard shows)."""
    prefix = key[:8] if _SECRET_KEY.fullmatch(key) else ""
    return f"{prefix}•••{key[-4:]}" if len(key) > 12 else "•••"


class RedactKeys(logging.Filter):
    """Masks Stripe keys in the records of the logger it is attached to (the SDK's ``stripe``).

    The SDK logs error messages at INFO and response bodies at DEBUG. Stripe masks keys in
    its own error messages, but not every server does (stripe-mock quotes the Authorization
    header it refused), so the records are cleaned before any handler sees them.
    The SDK's ``STRIPE_LOG`` console output bypasses logging: never set it in production.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def _install_log_filter() -> None:
    sdk_logger = logging.getLogger("stripe")
    if not any(isinstance(existing, RedactKeys) for existing in sdk_logger.filters):
        sdk_logger.addFilter(RedactKeys())


_install_log_filter()


@dataclass(frozen=True)
class StripeCredentials:
    """A shop's Stripe secret or restricted key; its repr and str show only the prefix and last four.

    Constructing one does not validate it: call :func:`validate_credentials` on input
    (``save_credentials`` does).
    """

    secret_key: str = field(repr=False)

    def __repr__(self) -> str:
        return f"StripeCredentials(key={self.key_hint})"

    __str__ = __repr__

    @property
    def key_hint(self) -> str:
        """``sk_test_•••abcd``: enough to tell keys apart, never enough to use one."""
        return _mask(self.secret_key)

    @property
    def livemode(self) -> bool:
        """Whether the key moves real money (``*_live_*``) rather than test-mode money."""
        return self.secret_key[3:8] == "live_"

    @property
    def restricted(self) -> bool:
        """Whether it is a restricted key (``rk_``), which may lack permission to read the account."""
        return self.secret_key.startswith("rk_")


def validate_credentials(creds: StripeCredentials) -> None:
    """Raise ConfigurationError saying what is wrong with the key; the key is never echoed."""
    key = creds.secret_key
    if _SECRET_KEY.fullmatch(key):
        return
    if key.startswith("pk_"):
        raise ConfigurationError(
            "that is a Stripe publishable key (pk_…); give the secret key (sk_…) or a restricted key (rk_…)"
        )
    if key.startswith("whsec_"):
        raise ConfigurationError("that is a Stripe webhook signing secret (whsec_…); give the secret key (sk_…)")
    raise ConfigurationError(
        "a Stripe secret key is 'sk_test_', 'sk_live_', 'rk_test_' or 'rk_live_' followed by letters and digits"
    )


def seal_credentials(settings: Settings, shop_id: str, creds: StripeCredentials) -> bytes:
    """``creds`` of ``shop_id`` sealed with STREAMAPP_SECRET_KEY, as stored in ``stripe_credentials.sealed``.

    Does not validate: :func:`save_credentials` does, before calling this.
    """
    return sealed.seal_for_shop(settings, shop_id, {"secret_key": creds.secret_key})


def unseal_credentials(settings: Settings, shop_id: str, sealed_value: bytes) -> StripeCredentials:
    """The credentials :func:`seal_credentials` sealed for ``shop_id``.

    ConfigurationError if the key does not open them, or if they were sealed for another
    shop or in a layout this version does not know.
    """
    fields = sealed.unseal_for_shop(settings, shop_id, sealed_value, ("secret_key",), what="Stripe key", plural=False)
    return StripeCredentials(fields["secret_key"])


async def save_credentials(conn: Queryable, settings: Settings, shop_id: str, creds: StripeCredentials) -> None:
    """Validate ``creds`` and store them sealed as ``shop_id``'s connection, replacing any earlier one."""
    validate_credentials(creds)
    await sealed.store(conn, "stripe_credentials", shop_id, seal_credentials(settings, shop_id, creds))
    logger.info("stripe connected for shop %s (key %s)", shop_id, creds.key_hint)


async def load_credentials(conn: Queryable, settings: Settings, shop_id: str) -> StripeCredentials | None:
    """``shop_id``'s Stripe key, None if it has none; ConfigurationError if it cannot be unsealed.

    Not validated again: it was on the way in, the seal proves that this application wrote
    it, and Stripe stays the final judge of what it accepts.
    """
    value = await sealed.fetch(conn, "stripe_credentials", shop_id)
    return None if value is None else unseal_credentials(settings, shop_id, value)


async def delete_credentials(conn: Queryable, shop_id: str) -> bool:
    """Forget ``shop_id``'s Stripe key; whether there was one."""
    deleted = await sealed.delete(conn, "stripe_credentials", shop_id)
    if deleted:
        logger.info("stripe disconnected for shop %s", shop_id)
    return deleted


# -- the SDK -------------------------------------------------------------------------------------


def new_http_client(timeout: float) -> stripe.AIOHTTPClient:
    """The SDK's aiohttp transport, each request bounded to ``timeout`` seconds in total.

    Share one between shops (each request carries its shop's key). Its aiohttp session opens
    on first use, inside the running loop; close it with ``await client.close_async()``.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    return stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout))


def stripe_client(
    settings: Settings, creds: StripeCredentials, http_client: stripe.AIOHTTPClient
) -> stripe.StripeClient:
    """A client acting as ``creds``' account over ``http_client``, on ``Settings.stripe_api_url`` if set.

    Every base address is rerouted when a URL is configured, so no request of any kind can
    reach the real Stripe from a test. No SDK retries: callers retry, counting attempts.
    """
    base = settings.stripe_api_url.rstrip("/") if settings.stripe_api_url else None
    return stripe.StripeClient(
        creds.secret_key,
        base_addresses={"api": base, "connect": base, "files": base, "meter_events": base} if base else None,
        http_client=http_client,
        max_network_retries=0,
    )


def describe_error(exc: stripe.StripeError, secret: str | None = None) -> str:
    """What went wrong, for ``last_error`` and logs: HTTP status, Stripe's type, code, param and
    message, and the request id to quote to Stripe's support; never a key."""
    if isinstance(exc, stripe.APIConnectionError):
        cause = exc.__cause__
        if cause is None:
            text = f"no answer from Stripe: {exc.user_message or type(exc).__name__}"
        else:
            detail = str(cause).strip()
            text = f"no answer from Stripe: {type(cause).__name__}" + (f": {detail}" if detail else "")
    else:
        error = exc.error
        kind = "/".join(str(part) for part in (getattr(error, "type", None), exc.code) if part)
        param = getattr(error, "param", None)
        decline = getattr(error, "decline_code", None)
        text = f"HTTP {exc.http_status}"
        text += f" {kind}" if kind else ""
        text += f" (param {param})" if param else ""
        text += f" (decline {decline})" if decline else ""
        text += f": {exc.user_message or 'no message'}"
        text += f" [request {exc.request_id}]" if exc.request_id else ""
    return redact(" ".join(text.split()), secret)[:2000]


def is_transient(exc: stripe.StripeError) -> bool:
    """Whether the same request may succeed later, as the SDK's own retry logic judges it.

    No answer at all, Stripe's ``Stripe-Should-Retry`` header when present, a conflict (409:
    another request with the same idempotency key is in flight), throttling (429, or a 400
    with code ``rate_limit``), a server-side failure (5xx) or an answer without a status.
    Everything else (invalid request, authentication, permission, card, idempotency
    mismatch) is permanent.
    """
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    advice = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("stripe-should-retry")
    if advice in {"true", "false"}:
        return advice == "true"
    status = exc.http_status
    return status is None or status in {409, 429} or status >= 500


@dataclass(frozen=True)
class StripeAccount:
    """What ``verify_credentials`` learnt about the account; nothing secret."""

    account_id: str | None
    name: str | None
    livemode: bool
    key_hint: str

    @property
    def hint(self) -> str:
        """``Acme Print Co. (acct_123, test mode)``, at most :data:`MAX_HINT_CHARS` characters."""
        mode = "live mode" if self.livemode else "test mode"
        which = self.account_id or f"restricted key {self.key_hint}"
        suffix = f" ({which}, {mode})"
        if not self.name:
            return f"{which} ({mode})"[:MAX_HINT_CHARS]
        room = MAX_HINT_CHARS - len(suffix)
        name = self.name if len(self.name) <= room else self.name[: max(room - 1, 0)] + "…"
        return (name + suffix)[:MAX_HINT_CHARS]


def _refusal(exc: stripe.StripeError, creds: StripeCredentials) -> Exception:
    """The error ``verify_credentials`` raises for ``exc``: retry later, or fix the key."""
    error = describe_error(exc, creds.secret_key)
    if is_transient(exc):
        return RetryableError(f"Stripe could not check the key now ({error})")
    if isinstance(exc, stripe.AuthenticationError):
        return ConfigurationError(f"Stripe refused the key ({error})")
    if isinstance(exc, stripe.PermissionError):
        return ConfigurationError(f"the key may not use Checkout Sessions ({error})")
    return ConfigurationError(f"Stripe could not check the key ({error})")


async def verify_credentials(settings: Settings, creds: StripeCredentials, *, timeout: float = 15.0) -> StripeAccount:
    """Check with Stripe that ``creds`` open an account and may use Checkout, so ``connect`` can refuse bad keys.

    Lists one Checkout Session (what the sink needs: a restricted key without Checkout
    permission is refused now, not at the first invoice), then reads the account for a
    display hint (a restricted key may not: then the hint names the key).
    ConfigurationError if the key is malformed or Stripe refuses it; RetryableError if
    Stripe cannot be reached or answers 409/429/5xx.
    """
    validate_credentials(creds)
    http = new_http_client(timeout)
    try:
        client = stripe_client(settings, creds, http)
        try:
            await client.v1.checkout.sessions.list_async({"limit": 1})
        except stripe.StripeError as exc:
            raise _refusal(exc, creds) from None
        try:
            account = await client.v1.accounts.retrieve_current_async()
        except stripe.PermissionError:
            return StripeAccount(None, None, creds.livemode, creds.key_hint)
        except stripe.StripeError as exc:
            raise _refusal(exc, creds) from None
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK
    return StripeAccount(
        account_id=str(account.id) if account.id else None,
        name=_display_name(account),
        livemode=creds.livemode,
        key_hint=creds.key_hint,
    )


def _display_name(account: stripe.Account) -> str | None:
    """The account's name as its owner set it (dashboard display name, else business name)."""
    dashboard = account.settings.dashboard if account.settings is not None else None
    if dashboard is not None and dashboard.display_name:
        return str(dashboard.display_name)
    profile = account.business_profile
    if profile is not None and profile.name:
        return str(profile.name)
    return None
