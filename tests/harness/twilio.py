"""Twilio for the tests: Prism serving Twilio's contract once per session, and a fault proxy in front of it.

Prism (:mod:`streamapp.embedded.twilio`) validates every request against Twilio's OpenAPI
document but only ever answers with the document's success examples. :class:`TwilioFaultProxy`
sits between the SDK and Prism and adds what a test needs from the real Twilio: it forwards
every request to Prism first, so a request that breaks the contract is still answered with
Prism's 422, and only then, for a request Prism accepted, plays the fault it was told to:

* an opted-out recipient: Twilio's documented 21610 body, HTTP 400;
* refused credentials of an account: Twilio's documented 20003 body, HTTP 401;
* the next N requests: HTTP 503 with Twilio's 20503 body, or 429 with 20429 (transient);
* the next N Message creates: stalled for a while and never forwarded, as when Twilio is
  unreachable (the client's timeout should fire first);
* holding Message creates until released, so a test can look at the world mid-send.

It records every exchange (never the Authorization header), so tests assert what was
actually sent. Plain functions and classes: ``tests/conftest.py`` wraps them in fixtures.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from streamapp.embedded.process import free_port
from streamapp.embedded.twilio import EmbeddedTwilio, ensure_prism
from streamapp.settings import Settings

_MESSAGES = re.compile(r"/2010-04-01/Accounts/[^/]+/Messages\.json")
#: Hop-by-hop and framing headers: aiohttp sets its own on each leg.
_NOT_FORWARDED = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


def twilio_error(code: int, message: str, status: int) -> dict[str, Any]:
    """An error body in the shape Twilio documents (https://www.twilio.com/docs/usage/twilios-response)."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


OPTED_OUT_BODY = twilio_error(21610, "Attempt to send to unsubscribed recipient", 400)
AUTHENTICATE_BODY = twilio_error(20003, "Authenticate", 401)
UNAVAILABLE_BODY = twilio_error(20503, "Service Unavailable", 503)
RATE_LIMITED_BODY = twilio_error(20429, "Too Many Requests", 429)


def prism_session(settings: Settings) -> Iterator[str]:
    """For a session fixture: the base URL of Twilio's API for the tests.

    ``STREAMAPP_TWILIO_API_URL`` if set, else Prism, installed (cached) and started once,
    stopped when the generator is closed.
    """
    if settings.twilio_api_url:
        yield settings.twilio_api_url
        return
    with EmbeddedTwilio(ensure_prism(settings.cache_dir)) as twilio:
        yield twilio.url


@dataclass(frozen=True)
class Exchange:
    """One request the proxy forwarded, and what it answered."""

    method: str
    path: str
    #: The Basic auth user (the account SID the request claims); never the password.
    account_sid: str | None
    #: The ``application/x-www-form-urlencoded`` body, parsed; empty for other bodies.
    form: Mapping[str, str]
    #: What Prism answered: 422 means the request broke Twilio's contract; 0, never forwarded.
    prism_status: int
    #: What the client got (Prism's answer, or the fault that replaced it).
    status: int

    @property
    def is_message_create(self) -> bool:
        return self.method == "POST" and _MESSAGES.fullmatch(self.path) is not None


def _basic_user(header: str | None) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        return base64.b64decode(header[6:]).decode().split(":", 1)[0]
    except ValueError:
        return None


@dataclass
class _Faults:
    opted_out: set[str] = field(default_factory=set)
    refused_accounts: set[str] = field(default_factory=set)
    transient: list[dict[str, Any]] = field(default_factory=list)
    stalls: int = 0
    stall_seconds: float = 0.0
    gate: asyncio.Event | None = None


class TwilioFaultProxy:
    """An aiohttp server on 127.0.0.1 forwarding to ``upstream`` (Prism), with scripted faults.

    Start it inside the test's event loop (``async with``), or on a loop in a thread for
    tests that are not async; :attr:`url` is what ``Settings.twilio_api_url`` should name.
    :meth:`opt_out`, :meth:`refuse_account`, :meth:`fail_next` and the readers only set or
    copy plain attributes, so they may be called from another thread; holding
    (:meth:`hold_message_creates`, :attr:`holding`) uses asyncio events of the proxy's loop.
    """

    def __init__(self, upstream: str, *, hold_timeout: float = 10.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.exchanges: list[Exchange] = []
        #: Set when a Message create is being held (see :meth:`hold_message_creates`).
        self.holding = asyncio.Event()
        self._hold_timeout = hold_timeout
        self._faults = _Faults()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    # -- scripting ---------------------------------------------------------------------

    def opt_out(self, *phones: str) -> None:
        """Answer Message creates to ``phones`` with Twilio's 21610 (HTTP 400), as Twilio does after STOP."""
        self._faults.opted_out.update(phones)

    def refuse_account(self, account_sid: str) -> None:
        """Answer every request authenticated as ``account_sid`` with Twilio's 20003 (HTTP 401)."""
        self._faults.refused_accounts.add(account_sid)

    def fail_next(self, count: int, body: dict[str, Any] = UNAVAILABLE_BODY) -> None:
        """Answer the next ``count`` valid requests with ``body`` (default HTTP 503, Twilio's 20503)."""
        self._faults.transient = [body] * count

    def stall_next(self, count: int, seconds: float) -> None:
        """Hold the next ``count`` Message creates for ``seconds``, then answer 503 without forwarding
        them: Twilio never saw them, as when it is unreachable (the client should time out first)."""
        self._faults.stall_seconds = seconds
        self._faults.stalls = count

    def hold_message_creates(self) -> None:
        """Hold every Message create (before Prism sees it) until :meth:`release`; sets :attr:`holding`."""
        self._faults.gate = asyncio.Event()

    def release(self) -> None:
        """Let held Message creates through."""
        if self._faults.gate is not None:
            self._faults.gate.set()
            self._faults.gate = None

    # -- what happened -----------------------------------------------------------------

    def message_creates(self, to: str | None = None) -> list[Exchange]:
        """Every Message create the proxy received (to ``to``, if given), whatever it answered."""
        return [e for e in self.exchanges if e.is_message_create and (to is None or e.form.get("To") == to)]

    def sent(self, to: str | None = None) -> list[Exchange]:
        """The Message creates Prism accepted and the client was told succeeded: the SMS "sent"."""
        return [e for e in self.message_creates(to) if e.prism_status == 201 and e.status == 201]

    # -- the server ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        faults = self._faults
        if faults.stalls > 0 and request.method == "POST" and _MESSAGES.fullmatch(request.path):
            faults.stalls -= 1
            await asyncio.sleep(faults.stall_seconds)
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            account_sid = _basic_user(request.headers.get("Authorization"))
            self.exchanges.append(Exchange(request.method, request.path, account_sid, form, 0, 503))
            return web.json_response(UNAVAILABLE_BODY, status=503)
        gate = self._faults.gate
        if gate is not None and request.method == "POST" and _MESSAGES.fullmatch(request.path):
            self.holding.set()
            await asyncio.wait_for(gate.wait(), self._hold_timeout)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            answer = await upstream.read()
            prism_status = upstream.status
            content_type = upstream.headers.get("Content-Type", "application/json")
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        account_sid = _basic_user(request.headers.get("Authorization"))
        fault = self._fault(request, form, account_sid) if prism_status < 400 else None
        status = prism_status if fault is None else int(fault["status"])
        self.exchanges.append(Exchange(request.method, request.path, account_sid, form, prism_status, status))
        if fault is not None:
            return web.json_response(fault, status=status)
        return web.Response(body=answer, status=prism_status, headers={"Content-Type": content_type})

    def _fault(self, request: web.Request, form: Mapping[str, str], account_sid: str | None) -> dict[str, Any] | None:
        """The error body that replaces Prism's success, if any; the contract was checked first."""
        faults = self._faults
        if faults.transient:
            return faults.transient.pop()
        if account_sid in faults.refused_accounts:
            return AUTHENTICATE_BODY
        if request.method == "POST" and _MESSAGES.fullmatch(request.path) and form.get("To") in faults.opted_out:
            return OPTED_OUT_BODY
        return None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> TwilioFaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
