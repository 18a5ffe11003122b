"""A shop's Twilio connection: validated, sealed at rest, verified, and the SDK client that uses it.

A shop connects Twilio with its account SID, auth token and a sender (a phone number in
E.164 form, or a messaging service SID). The three are validated on the way in
(:func:`validate_credentials`), sealed together with ``STREAMAPP_SECRET_KEY``
(:mod:`streamapp.connections.crypto`) into ``sms_credentials``, and unsealed only by the process that
sends. They never travel on a Kafka topic, and no repr, log line or error message of this
module contains the auth token.

The sealed payload names its shop, and :func:`load_credentials` checks it: a sealed value
copied onto another shop's row does not send from the first shop's account.

Talking to Twilio goes through the official SDK (``twilio.rest.Client``) on its asyncio
transport (:class:`ReroutedHttpClient`), so a worker is never blocked on the network, and
``Settings.twilio_api_url`` can point it at a local stand-in (Prism serving Twilio's OpenAPI
contract, in the tests).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import TypeAdapter, ValidationError
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from schemas.common import Phone
from streamapp.connections import sealed
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.queries import Queryable
from streamapp.settings import Settings

logger = logging.getLogger(__name__)

#: Where the SDK sends every request this project makes (the 2010-04-01 API).
TWILIO_API = "https://api.twilio.com"

_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_AUTH_TOKEN = re.compile(r"[0-9a-fA-F]{32}")
_MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
_PHONE: TypeAdapter[str] = TypeAdapter(Phone)  # the same E.164 rule as an SmsEffect's recipient


#: What the SDK's ``ClientBase`` reads instead of ``os.environ``: it reads ``environment or
#: os.environ``, so an empty dict would fall back to the process environment, whose TWILIO_EDGE
#: or TWILIO_REGION would send requests to another host. The shop's credentials, nothing else.
_NO_ENVIRONMENT = {"STREAMAPP": "credentials come from the shop's sealed connection only"}


@dataclass(frozen=True)
class TwilioCredentials:
    """A shop's Twilio account SID, auth token and sender; its repr and str never show the token.

    ``sender`` is either a phone number in E.164 form (``+15551234567``) or a messaging
    service SID (``MG`` + 32 hex digits). Constructing one does not validate it: call
    :func:`validate_credentials` on input (``save_credentials`` does).
    """

    account_sid: str
    auth_token: str = field(repr=False)
    sender: str

    @property
    def uses_messaging_service(self) -> bool:
        """Whether ``sender`` is a messaging service (Twilio picks the number) rather than a number."""
        return self.sender.startswith("MG")


def validate_credentials(creds: TwilioCredentials) -> None:
    """Raise ConfigurationError naming the first malformed field; the token is never echoed."""
    if not _ACCOUNT_SID.fullmatch(creds.account_sid):
        raise ConfigurationError("Twilio account SID must be 'AC' followed by 32 hexadecimal characters")
    if not _AUTH_TOKEN.fullmatch(creds.auth_token):
        raise ConfigurationError("Twilio auth token must be 32 hexadecimal characters")
    if creds.sender.startswith("MG"):
        if not _MESSAGING_SERVICE_SID.fullmatch(creds.sender):
            raise ConfigurationError("Twilio messaging service SID must be 'MG' followed by 32 hexadecimal characters")
        return
    try:
        _PHONE.validate_python(creds.sender)
    except ValidationError:
        raise ConfigurationError(
            "Twilio sender must be a phone number in E.164 form (e.g. +15551234567) "
            "or a messaging service SID ('MG' followed by 32 hexadecimal characters)"
        ) from None


def seal_credentials(settings: Settings, shop_id: str, creds: TwilioCredentials) -> bytes:
    """``creds`` of ``shop_id`` sealed with STREAMAPP_SECRET_KEY, as stored in ``sms_credentials.sealed``.

    Does not validate: :func:`save_credentials` does, before calling this.
    """
    fields = {"account_sid": creds.account_sid, "auth_token": creds.auth_token, "sender": creds.sender}
    return sealed.seal_for_shop(settings, shop_id, fields)


def unseal_credentials(settings: Settings, shop_id: str, sealed_value: bytes) -> TwilioCredentials:
    """The credentials :func:`seal_credentials` sealed for ``shop_id``.

    ConfigurationError if the key does not open them, or if they were sealed for another
    shop or in a layout this version does not know.
    """
    names = ("account_sid", "auth_token", "sender")
    fields = sealed.unseal_for_shop(settings, shop_id, sealed_value, names, what="Twilio credentials", plural=True)
    return TwilioCredentials(**fields)


async def save_credentials(conn: Queryable, settings: Settings, shop_id: str, creds: TwilioCredentials) -> None:
    """Validate ``creds`` and store them sealed as ``shop_id``'s connection, replacing any earlier one."""
    validate_credentials(creds)
    await sealed.store(conn, "sms_credentials", shop_id, seal_credentials(settings, shop_id, creds))
    logger.info("twilio connected for shop %s (account %s)", shop_id, creds.account_sid)


async def load_credentials(conn: Queryable, settings: Settings, shop_id: str) -> TwilioCredentials | None:
    """``shop_id``'s Twilio connection, None if it has none; ConfigurationError if it cannot be unsealed.

    The values are not validated again: they were on the way in, the seal proves that this
    application wrote them, and Twilio stays the final judge of what it accepts.
    """
    value = await sealed.fetch(conn, "sms_credentials", shop_id)
    return None if value is None else unseal_credentials(settings, shop_id, value)


async def delete_credentials(conn: Queryable, shop_id: str) -> bool:
    """Forget ``shop_id``'s Twilio connection; whether there was one."""
    deleted = await sealed.delete(conn, "sms_credentials", shop_id)
    if deleted:
        logger.info("twilio disconnected for shop %s", shop_id)
    return deleted


class ReroutedHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # the SDK ships no type hints
    """The SDK's aiohttp transport, sending ``https://api.twilio.com`` requests to ``api_url``.

    ``api_url`` None keeps the real API. Every request gets ``timeout`` seconds in total
    unless the SDK passes its own: the stock client would wait forever when it passes none.
    Error bodies in RFC 9457 form without Twilio's ``code`` get a ``message`` (see
    :func:`_with_problem_message`), so the SDK's exception says what was wrong.
    Create it inside a running event loop (it opens an aiohttp session) and close it with
    ``await client.close()`` or ``async with``.
    """

    def __init__(self, api_url: str | None, *, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        super().__init__(pool_connections=True, timeout=timeout)
        self.api_url = api_url.rstrip("/") if api_url else None

    def reroute(self, url: str) -> str:
        """``url`` on the configured API; any other host is refused when one is configured."""
        if self.api_url is None:
            return url
        if url == TWILIO_API or url.startswith(TWILIO_API + "/"):
            return self.api_url + url[len(TWILIO_API) :]
        # Only api.twilio.com is rerouted: never let a test's request reach another Twilio host.
        raise ConfigurationError(
            f"only {TWILIO_API} is rerouted to STREAMAPP_TWILIO_API_URL, not {url.split('?', maxsplit=1)[0]}"
        )

    async def request(  # noqa: PLR0917 - the SDK's signature
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if auth is not None:
            # As a header rather than aiohttp's ``auth=BasicAuth(...)``, deprecated since aiohttp 3.14.
            # The SDK's request log skips every header named like "authorization".
            basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {basic}"}
        response: Response = await super().request(
            method,
            self.reroute(url),
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout if timeout is not None else self.timeout,
            allow_redirects=allow_redirects,
        )
        return _with_problem_message(response)


def _with_problem_message(response: Response) -> Response:
    """``response``, with an RFC 9457 problem body's title, detail and violations as its ``message``.

    The SDK keeps only the ``message`` and ``code`` of an error body, unless the body is a
    problem document *with* Twilio's ``code``. A problem document without one (Prism's
    answer to a request that breaks the contract; a gateway's) would otherwise reach us
    as a bare "Unable to create record", and ``last_error`` would not say what was wrong.
    """
    if response.status_code < 400:
        return response
    try:
        body = json.loads(response.text)
    except ValueError:
        return response
    if not isinstance(body, dict) or "message" in body or "code" in body or "title" not in body:
        return response
    parts = [str(body["title"])]
    violations = body.get("validation")
    if isinstance(violations, list) and violations:
        parts += [str(v.get("message", v)) if isinstance(v, dict) else str(v) for v in violations]
    elif body.get("detail"):
        parts.append(str(body["detail"]))
    return Response(response.status_code, json.dumps({**body, "message": "; ".join(parts)}), response.headers)


def rest_client(creds: TwilioCredentials, http_client: ReroutedHttpClient) -> Any:
    """A ``twilio.rest.Client`` acting as ``creds``' account over ``http_client`` (cheap: one per send is fine)."""
    return Client(
        username=creds.account_sid,
        password=creds.auth_token,
        account_sid=creds.account_sid,
        http_client=http_client,
        environment=_NO_ENVIRONMENT,
    )


def describe_error(exc: TwilioRestException) -> str:
    """Twilio's HTTP status, error code and message, for ``last_error`` and logs (never a credential)."""
    code = f" code {exc.code}" if exc.code is not None and exc.code != exc.status else ""
    return f"HTTP {exc.status}{code}: {exc.msg}"[:2000]


def is_transient(exc: TwilioRestException) -> bool:
    """Whether the same request may succeed later: throttled (429) or a server-side failure (5xx)."""
    return bool(exc.status == 429 or exc.status >= 500)


#: What a request that never got an answer raises: refused, reset, timed out.
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


async def verify_credentials(settings: Settings, creds: TwilioCredentials, *, timeout: float = 15.0) -> None:
    """Check with Twilio that ``creds`` open an active account, so ``connect`` can refuse bad ones.

    ConfigurationError if they are malformed, if Twilio refuses them (401, 403, 404) or the
    account is not active; RetryableError if Twilio cannot be reached or answers 429/5xx.
    Does not check that the sender belongs to the account: a sender Twilio refuses makes
    each SMS fail with Twilio's reason in ``last_error``.
    """
    validate_credentials(creds)
    async with ReroutedHttpClient(settings.twilio_api_url, timeout=timeout) as http:
        try:
            account = await rest_client(creds, http).api.v2010.accounts(creds.account_sid).fetch_async()
        except TwilioRestException as exc:
            if is_transient(exc):
                raise RetryableError(f"Twilio could not check the credentials now ({describe_error(exc)})") from None
            if exc.status in {401, 403, 404}:
                raise ConfigurationError(f"Twilio refused the credentials ({describe_error(exc)})") from None
            raise ConfigurationError(f"Twilio could not check the credentials ({describe_error(exc)})") from None
        except NETWORK_ERRORS as exc:
            raise RetryableError(f"Twilio is unreachable: {type(exc).__name__}: {exc}") from None
    status = str(account.status)
    if status != "active":
        raise ConfigurationError(f"Twilio account {creds.account_sid} is {status}, not active")
