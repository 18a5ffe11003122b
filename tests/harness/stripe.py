"""Stripe for the tests: stripe-mock once per session, and a recording fault proxy in front of it.

stripe-mock (:mod:`streamapp.embedded.stripe`) validates every request against Stripe's
OpenAPI document, but answers every valid one with the same fixture and ignores
``Idempotency-Key``. :class:`StripeFaultProxy` sits between the SDK and stripe-mock and adds
what a test needs from the real Stripe. It forwards every request to stripe-mock first, so
a request that breaks the contract is still answered with stripe-mock's 400, and only then,
for a request stripe-mock accepted:

* idempotency as Stripe documents it: a POST with a key seen before is not executed again
  but answered with the first answer (header ``Idempotent-Replayed: true``), or with a 400
  ``idempotency_error`` if its parameters differ;
* the next N requests: a transient failure (HTTP 503 ``api_error``, or 429);
* the next N requests: a permanent refusal with a Stripe error body (e.g. 400
  ``invalid_request_error``, 402 ``card_error``);
* holding Checkout Session creates, before or after stripe-mock created the session,
  until released, so a test can look at the world mid-request or lose the answer.

It records every exchange (never the Authorization header: only the key's last four
characters), so tests assert what was actually sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from streamapp.embedded.process import free_port
from streamapp.embedded.stripe import EmbeddedStripe, ensure_stripe_mock
from streamapp.settings import Settings

SESSIONS = "/v1/checkout/sessions"
#: Hop-by-hop and framing headers: aiohttp sets its own on each leg.
_NOT_FORWARDED = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


def stripe_error(status: int, type_: str, message: str, **extra: str) -> tuple[int, dict[str, Any]]:
    """An error answer in the shape Stripe documents (https://docs.stripe.com/api/errors)."""
    return status, {"error": {"type": type_, "message": message, **extra}}


UNAVAILABLE = stripe_error(503, "api_error", "Stripe is temporarily unavailable.")
RATE_LIMITED = stripe_error(429, "invalid_request_error", "Too many requests.", code="rate_limit")


def stripe_mock_session(settings: Settings) -> Iterator[str]:
    """For a session fixture: the base URL of Stripe's API for the tests.

    ``STREAMAPP_STRIPE_API_URL`` if set, else stripe-mock, built (cached) and started once,
    stopped when the generator is closed.
    """
    if settings.stripe_api_url:
        yield settings.stripe_api_url
        return
    with EmbeddedStripe(ensure_stripe_mock(settings.cache_dir)) as stripe_mock:
        yield stripe_mock.url


@dataclass(frozen=True)
class Exchange:
    """One request the proxy received, and what it answered."""

    method: str
    path: str
    #: The last four characters of the Bearer key (which shop's key was used); never the key.
    key_suffix: str | None
    idempotency_key: str | None
    #: The form body, flattened as the SDK encodes it (``line_items[0][quantity]``).
    form: Mapping[str, str]
    #: What stripe-mock answered; None when the proxy answered alone (a replay, a held request).
    upstream_status: int | None
    #: What the client got.
    status: int
    #: Answered from the idempotency store: Stripe did not execute it again.
    replayed: bool = False

    @property
    def is_session_create(self) -> bool:
        return self.method == "POST" and self.path == SESSIONS


def _key_suffix(header: str | None) -> str | None:
    if not header or not header.startswith("Bearer "):
        return None
    return header[-4:]


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: bytes
    content_type: str


@dataclass
class _Faults:
    transient: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    permanent: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    hold_after_upstream: bool = False


class StripeFaultProxy:
    """An aiohttp server on 127.0.0.1 forwarding to ``upstream`` (stripe-mock), with Stripe's
    idempotency and scripted faults.

    Start it inside the test's event loop (``async with``); :attr:`url` is what
    ``Settings.stripe_api_url`` should name. Holding uses asyncio events of that loop.
    """

    def __init__(self, upstream: str, *, hold_timeout: float = 10.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.exchanges: list[Exchange] = []
        #: Set when a Checkout Session create is being held (see :meth:`hold_session_creates`).
        self.holding = asyncio.Event()
        self._hold_timeout = hold_timeout
        self._faults = _Faults()
        self._idempotent: dict[tuple[str | None, str], _Stored] = {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    # -- scripting ---------------------------------------------------------------------

    def fail_next(self, count: int, answer: tuple[int, dict[str, Any]] = UNAVAILABLE) -> None:
        """Answer the next ``count`` valid requests with ``answer`` (a transient failure: not stored
        for idempotency, as Stripe stores nothing for a request it did not execute)."""
        self._faults.transient = [answer] * count

    def refuse_next(self, count: int, answer: tuple[int, dict[str, Any]]) -> None:
        """Answer the next ``count`` valid requests with ``answer`` (a permanent refusal, stored for
        idempotency like any answer of an executed request)."""
        self._faults.permanent = [answer] * count

    def hold_session_creates(self, *, after_upstream: bool = False) -> None:
        """Hold every Checkout Session create until :meth:`release`; sets :attr:`holding`.

        ``after_upstream``: forward it first and hold the answer (the session exists and is
        stored for its idempotency key, but the client has not heard so yet).
        """
        self._faults.gate = asyncio.Event()
        self._faults.hold_after_upstream = after_upstream

    def release(self) -> None:
        """Let held requests through."""
        if self._faults.gate is not None:
            self._faults.gate.set()
            self._faults.gate = None

    # -- what happened -----------------------------------------------------------------

    def session_creates(self) -> list[Exchange]:
        """Every Checkout Session create the proxy received, whatever it answered."""
        return [e for e in self.exchanges if e.is_session_create]

    def sessions_created(self) -> list[Exchange]:
        """The creates Stripe executed and accepted: each one a Checkout Session (replays are not)."""
        return [e for e in self.session_creates() if e.status == 200 and not e.replayed]

    # -- the server ----------------------------------------------------------------------

    async def _hold(self, request: web.Request) -> None:
        gate = self._faults.gate
        if gate is not None and request.method == "POST" and request.path == SESSIONS:
            self.holding.set()
            await asyncio.wait_for(gate.wait(), self._hold_timeout)

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        form = dict(parse_qsl(body.decode(), keep_blank_values=True)) if body else {}
        key_suffix = _key_suffix(request.headers.get("Authorization"))
        idempotency_key = request.headers.get("Idempotency-Key")

        def record(upstream_status: int | None, status: int, *, replayed: bool = False) -> None:
            self.exchanges.append(
                Exchange(
                    request.method, request.path, key_suffix, idempotency_key, form, upstream_status, status, replayed
                )
            )

        hold_after = self._faults.hold_after_upstream
        if not hold_after:
            await self._hold(request)

        store_key = (key_suffix, idempotency_key or "")
        fingerprint = hashlib.sha256(request.method.encode() + request.path_qs.encode() + body).hexdigest()
        stored = self._idempotent.get(store_key) if idempotency_key and request.method == "POST" else None
        if stored is not None:
            if stored.fingerprint != fingerprint:
                status, error = stripe_error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were first "
                    f"used with. Try using a key other than '{idempotency_key}' if you meant to execute a "
                    "different request.",
                )
                record(None, status)
                return web.json_response(error, status=status)
            record(None, stored.status, replayed=True)
            if hold_after:
                await self._hold(request)
            return web.Response(
                body=stored.body,
                status=stored.status,
                headers={"Content-Type": stored.content_type, "Idempotent-Replayed": "true"},
            )

        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            answer = await upstream.read()
            upstream_status = upstream.status
            content_type = upstream.headers.get("Content-Type", "application/json")
        status, transient = upstream_status, False
        if upstream_status < 400 and (self._faults.transient or self._faults.permanent):
            transient = bool(self._faults.transient)
            status, error = (self._faults.transient or self._faults.permanent).pop(0)
            answer, content_type = json.dumps(error).encode(), "application/json"
        if idempotency_key and request.method == "POST" and not transient and upstream_status < 400:
            self._idempotent[store_key] = _Stored(fingerprint, status, answer, content_type)
        record(upstream_status, status)
        if hold_after:
            await self._hold(request)
        return web.Response(body=answer, status=status, headers={"Content-Type": content_type})

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

    async def __aenter__(self) -> StripeFaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
