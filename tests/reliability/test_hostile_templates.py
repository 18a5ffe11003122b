"""Issue 7, scenario 7: hostile templates and secrets.

Shop wording is code that a shop's admin writes and every worker runs. Each payload of the
public server-side template injection cheat-sheets is either refused when it is saved (the
command exits 2 with the one-line reason, no traceback) or renders inert, in ``streamapp
preview`` and in the real pipeline; payloads that would exhaust memory or time are refused
quickly. Shop data that looks like a template is data.

Secrets (the Twilio auth token, the Stripe secret key, ``STREAMAPP_SECRET_KEY``) never appear,
raw or encoded, in a worker's log, a command's output or error, a record of any topic, or a row
of a table that does not hold sealed credentials, through a day that includes failures: keys
and accounts the providers refuse, malformed input, a hostile template.

Real broker, PostgreSQL, SMTP server (aiosmtpd), Prism (Twilio) and stripe-mock behind the
recording fault proxies; one worker for the module, started while the commands are checked.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from schemas.config import CatalogToggle, StripeConnection
from streamapp.connections import stripe_account
from streamapp.connections.crypto import generate_key
from tests.harness.cli import Cli
from tests.harness.kafka import read_all
from tests.harness.pipeline import Pipeline, now, pipeline_settings
from tests.harness.services import InThread, Worker
from tests.harness.settings import command_env, settings_env
from tests.harness.smtp import Recorder, smtp_server
from tests.harness.stripe import StripeFaultProxy
from tests.harness.twilio import TwilioFaultProxy
from tests.harness.waits import wait_for
from tests.harness.zygote import Zygote

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
RULE = "order_received_email"

#: Known payloads (PayloadsAllTheThings, HackTricks, PortSwigger's SSTI research) as shop wording,
#: with a fragment of the reason each is refused for.
REFUSED = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "access to attribute '__class__' of 'str' object is unsafe"),
    ("{{ ().__class__.__bases__[0].__subclasses__() }}", "access to attribute '__class__' of 'tuple' object"),
    ("{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}", "'__class__' of 'list' object"),
    ("{{ customer_name.__class__ }}", "access to attribute '__class__' of 'str' object is unsafe"),
    ("{{ customer_name.__class__.__init__.__globals__ }}", "access to attribute '__class__' of 'str' object"),
    ("{{ config }}", "unknown variable: 'config' is undefined"),
    ("{{ config.__class__.__init__.__globals__['os'].popen('id').read() }}", "'config' is undefined"),
    ("{{ request.application.__globals__.__builtins__ }}", "unknown variable: 'request' is undefined"),
    ("{{ url_for.__globals__['current_app'].config }}", "unknown variable: 'url_for' is undefined"),
    ("{{ get_flashed_messages.__globals__ }}", "unknown variable: 'get_flashed_messages' is undefined"),
    ("{{ self }}", "a template prints text and numbers, not a TemplateReference object"),
    ("{{ self.__init__.__globals__.__builtins__ }}", "access to attribute '__init__' of 'TemplateReference'"),
    ("{{ self._TemplateReference__context }}", "attribute '_TemplateReference__context' of 'TemplateReference'"),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "unknown variable: 'cycler' is undefined"),
    ("{{ joiner.__init__.__globals__.os.popen('id').read() }}", "unknown variable: 'joiner' is undefined"),
    ("{{ namespace.__init__.__globals__.os.popen('id').read() }}", "unknown variable: 'namespace' is undefined"),
    ("{{ lipsum.__globals__['os'].popen('id').read() }}", "unknown variable: 'lipsum' is undefined"),
    ("{{ range.__globals__ }}", "access to attribute '__globals__' of 'function' object is unsafe"),
    ("{{ ''|attr('__class__')|attr('__mro__') }}", "access to attribute '__class__' of 'str' object is unsafe"),
    ("{{ customer_name|attr('\\x5f\\x5fclass\\x5f\\x5f') }}", "access to attribute '__class__' of 'str' object"),
    ("{{ '{0.__class__.__mro__}'.format(customer_name) }}", "str.format is not allowed in a template"),
    ("{{ customer_name.format_map }}", "str.format_map is not allowed in a template"),
    ("{{ '%s'|format(customer_name.__class__) }}", "the format filter: string formatting is not allowed"),
    ("{{ '%s' % customer_name }}", "string formatting with % is not allowed in a template"),
    ("{% include '/etc/passwd' %}", "{% include %}: wording cannot load other templates"),
    ("{% import 'os' as os %}{{ os.popen('id').read() }}", "{% import %}: wording cannot load other templates"),
    ("{% extends '/etc/passwd' %}", "{% extends %}: wording cannot load other templates"),
    ("{{ customer_name.upper }}", "a template prints text and numbers, not a function, method or macro"),
    ("{{ range }}", "a template prints text and numbers, not a function, method or macro"),
    ("{{ 'a' * 10**9 }}", "over a limit: the * operator would make 1,000,000,000 characters or items"),
    ("{{ [1] * 10**9 }}", "over a limit: the * operator would make 1,000,000,000 characters or items"),
    ("{{ 10**(10**10) }}", "over a limit: the ** operator would make a number of about 33,219,280,949 bits"),
    ("{{ range(10**9)|list }}", "over a limit: calling safe_range gets a number over 262,144"),
    ("{{ customer_name|center(10**9) }}", "over a limit: the center filter gets a number over 262,144"),
    ("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}", "output exceeds 262144"),
    ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "over a limit: "),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "nests or recurses too deeply"),
]
#: Payloads that are harmless, with exactly what each renders to with the catalogue's sample data.
INERT = [
    ("{{ 7*7 }}", "49"),
    ("{{ 10**10**10 }}", "1" + "0" * 100),  # left-associative in jinja2: (10**10)**10
    ("{% raw %}{{ config.items() }}{% endraw %}", "{{ config.items() }}"),
    ("{{ customer_name|e }} {{ customer_name[::-1] }}", "Ann Lee eeL nnA"),
]
#: Signs that a render reached Python objects, a file or the environment.
LEAKS = ("<class", "<built-in", "<function", "<bound", "<module", " at 0x", "__globals__", "TemplateReference",
         "root:x:0:0", "uid=", os.environ.get("PATH", "/usr/bin:"), os.environ.get("HOME", "/root"))  # fmt: skip
#: Signs that an error message quotes a Python object.
REPRS = ("<class", "<built-in", "<function", "<bound", "<module", " at 0x", "root:x:0:0", "uid=")
#: A customer's name that looks like a template and like markup.
HOSTILE_NAME = "{{ 7*7 }} {% include 'x' %} <script>alert(1)</script>"

# -- the secrets of the day: random, so that finding one anywhere is not a coincidence --------------
FERNET = generate_key()
ACCOUNT, TOKEN = "AC" + secrets.token_hex(16), secrets.token_hex(16)
#: A second account: connected, then refused by Twilio when it sends.
ACCOUNT_LATER_REFUSED, TOKEN_LATER_REFUSED = "AC" + secrets.token_hex(16), secrets.token_hex(16)
#: A third: refused when it connects.
ACCOUNT_REFUSED, TOKEN_REFUSED = "AC" + secrets.token_hex(16), secrets.token_hex(16)
STRIPE_KEY = "sk_test_" + secrets.token_hex(16)
#: stripe-mock takes test keys only: a live key is refused with 401 (and its body quotes the key).
STRIPE_LIVE_KEY = "sk_live_" + secrets.token_hex(16)
SENDER = "+15005550006"


class RecordingCli(Cli):
    """The harness's command line run through its own zygote (see :mod:`tests.harness.zygote`),
    keeping every command's output and error for the secrets scan. Not thread-safe: one per
    thread, sharing ``outputs``."""

    def __init__(self, env: dict[str, str], tmp: Path, outputs: list[str] | None = None) -> None:
        super().__init__(env, tmp, Zygote(tmp))
        self.outputs: list[str] = [] if outputs is None else outputs

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = super().run(*args)
        self.outputs.append(done.stdout + done.stderr)
        return done

    def with_env(self, **changes: str) -> Cli:
        """The same command line (same zygote and record of outputs) with some environment changed."""
        other = copy.copy(self)
        other.env = {**self.env, **changes}
        return other

    def close(self) -> None:
        assert self.zygote is not None
        self.zygote.close()


class Line(Pipeline):
    #: Command lines, each with its own zygote, for commands run side by side; ``cli`` is the first.
    clis: list[RecordingCli]
    cli: RecordingCli
    worker: Worker
    worker_log: Path
    twilio: TwilioFaultProxy
    stripe: StripeFaultProxy
    smtp: Recorder


@pytest.fixture(scope="module")
def line(
    kafka_bootstrap: str, postgres_url: str, twilio_api: str, stripe_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Line]:
    """One worker for the module, not waited for here: the commands run while it starts."""
    tmp = tmp_path_factory.mktemp("hostile")
    recorder = Recorder()
    with (
        smtp_server(recorder) as smtp_port,
        InThread(TwilioFaultProxy(twilio_api)) as twilio,
        InThread(StripeFaultProxy(stripe_api)) as stripe,
    ):
        settings = pipeline_settings(
            "hostile",
            kafka_bootstrap,
            postgres_url,
            smtp_port,
            tmp / "state",
            secret_key=SecretStr(FERNET),
            twilio_api_url=twilio.url,
            stripe_api_url=stripe.url,
        )
        line = Line(settings, recorder)
        line.worker_log = tmp / "worker.log"
        line.worker = Worker("streamapp.app", settings_env(settings), line.worker_log)
        outputs: list[str] = []
        line.clis = [RecordingCli(command_env(settings), tmp, outputs) for _ in range(3)]
        line.cli = line.clis[0]
        try:
            line.twilio, line.stripe = twilio, stripe
            line.workers.append(line.worker)
            yield line
        finally:
            for cli in line.clis:
                cli.close()
            line.worker.stop()


def set_wording(shop: str, payload: str) -> tuple[str, ...]:
    return ("catalog", "set-template", "--shop", shop, "--rule", RULE, "--part", f"body.html={payload}")


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def event(event_type: str, shop: str, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / f"{event_type}.json").read_text())
    raw |= {"shop_id": shop, "event_id": f"{event_type}-{uuid.uuid4().hex[:8]}", "occurred_at": now().isoformat()}
    return raw | changes


def customer(shop: str, name: str = "Ann Lee", phone: str = "+15550001111") -> dict[str, str]:
    return {"customer_id": "c-42", "name": name, "email": f"{shop}@example.com", "phone": phone}


def new_shop() -> str:
    return f"shop-{uuid.uuid4().hex[:8]}"


# -- hostile wording --------------------------------------------------------------------------------
def test_every_payload_is_refused_with_its_reason_or_renders_inert(line: Line) -> None:
    def refused(cli: Cli, index: int, payload: str, reason: str) -> None:
        error = cli.refused(*set_wording(f"refused-{index}", payload))
        assert error.startswith(f"streamapp: error: wording refused: {RULE}/body.html"), error
        assert reason in error, (payload, error)
        assert not any(leak in error for leak in REPRS), error

    def inert(cli: Cli, index: int, payload: str, rendered: str) -> None:
        shop = f"inert-{index}"
        assert cli.ok(*set_wording(shop, payload)) == f"{RULE}: wording of body.html saved for shop {shop}\n"
        preview = cli.ok("preview", "--shop", shop, "--rule", RULE)
        html = preview.split("----- text/html -----\n", 1)[1]
        assert html.rstrip("\n") == rendered, (payload, preview)
        assert not any(leak in preview for leak in LEAKS), preview

    checks = [functools.partial(refused, index=i, payload=p, reason=r) for i, (p, r) in enumerate(REFUSED)]
    checks += [functools.partial(inert, index=i, payload=p, rendered=r) for i, (p, r) in enumerate(INERT)]

    def run(cli: RecordingCli) -> None:  # each command line in its own thread, its share of the checks in turn
        for check in checks[line.clis.index(cli) :: len(line.clis)]:
            check(cli)

    with ThreadPoolExecutor(max_workers=len(line.clis)) as pool:
        for done in [pool.submit(run, cli) for cli in line.clis]:
            done.result()
    listed = json.loads(line.cli.ok("catalog", "list", "--shop", "refused-0", "--json"))
    assert {row["rule"]: row["wording"] for row in listed}[RULE] == "default", "nothing refused was saved"


def test_shop_data_is_data_and_accepted_wording_stays_inert_in_the_pipeline(line: Line) -> None:
    shop = new_shop()
    cli = line.cli
    cli.ok("shops", "set", "--shop", shop, "--name", "Acme {{ 7*7 }} <b>Print</b>")
    inert = [(payload, rendered) for payload, rendered in INERT if "customer_name" not in payload]  # data-free ones
    body = "".join(f"<p>{i}:{payload}</p>" for i, (payload, _) in enumerate(inert)) + "<p>{{ customer_name }}</p>"
    cli.ok(*set_wording(shop, body))
    # Valid with the sample name "Ann Lee" (210,000 characters), over the limit with a longer real one.
    production_wording = ("catalog", "set-template", "--shop", shop, "--rule", "production_started_email")
    cli.ok(*production_wording, "--part", "body.html={{ customer_name * 30000 }}")
    line.worker.wait_ready()
    who = customer(shop, HOSTILE_NAME)
    line.send_event(event("order.submitted", shop, customer=who))
    line.send_event(
        event("job.status_changed", shop, customer=who, from_status="Art Approval Sent", to_status="In Production")
    )
    line.drain()
    sent = "SELECT count(*) FROM deliveries WHERE shop_id = $1 AND status = 'sent'"
    wait_for(lambda: line.sql(sent, shop)[0][0] >= 2, timeout=60, what="the two emails", interval=0.2)

    mail = {str(m["Subject"]): m for m in line.smtp.messages if shop in str(m["To"])}
    order = mail["We received your order O-5531"]
    html = html_of(order)
    for i, (_, rendered) in enumerate(inert):
        assert f"<p>{i}:{rendered}</p>" in html
    escaped = "{{ 7*7 }} {% include &#39;x&#39; %} &lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<p>{escaped}</p>" in html and "<script>" not in html
    assert f"Hi {HOSTILE_NAME}," in text_of(order)  # the plain-text part carries the characters
    assert "Acme {{ 7*7 }} <b>Print</b>" in text_of(order)  # the default text part, the shop's name as data

    # The wording over the limit on this event's data: the default wording went out, and the shop was told.
    production = mail["Your order 500 business cards (J-1042) is in production"]
    assert escaped in html_of(production)
    [alert] = line.sql("SELECT text FROM alerts WHERE shop_id = $1", shop)
    assert alert["text"].startswith("production_started_email: your wording did not render, the default was sent")
    assert "over a limit: the * operator would make 1,590,000 characters or items" in alert["text"]
    for message in (order, production):
        assert not any(leak in message.as_string() for leak in LEAKS)


# -- secrets --------------------------------------------------------------------------------------
def encodings(secret: str) -> set[bytes]:
    """``secret`` as it could leak: raw, base64 (standard and URL-safe, with and without padding),
    URL-encoded, hex; 16-character pieces of it (a truncated or partly masked copy)."""
    raw = secret.encode()
    forms = {raw, quote(secret).encode(), quote_plus(secret).encode(), raw.hex().encode()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms |= {encode(raw), encode(raw).rstrip(b"=")}
    forms |= {raw[i : i + 16] for i in range(len(raw) - 15)}
    return forms


def secret_forms(database_url: str) -> dict[str, set[bytes]]:
    """Every secret of the day, in every form worth looking for."""
    fernet = base64.urlsafe_b64decode(FERNET)
    forms = {
        "STREAMAPP_SECRET_KEY": encodings(FERNET) | {fernet, fernet[:16], fernet[16:], fernet.hex().encode()},
        "Stripe secret key": encodings(STRIPE_KEY) | {base64.b64encode(f"{STRIPE_KEY}:".encode())},
        "refused Stripe live key": encodings(STRIPE_LIVE_KEY),
    }
    twilio = ((ACCOUNT, TOKEN), (ACCOUNT_LATER_REFUSED, TOKEN_LATER_REFUSED), (ACCOUNT_REFUSED, TOKEN_REFUSED))
    for account, token in twilio:
        # The HTTP Basic credentials of a Twilio request, as its Authorization header carries them.
        forms[f"Twilio auth token of {account}"] = encodings(token) | {base64.b64encode(f"{account}:{token}".encode())}
    password = urlsplit(database_url).password or ""
    if len(password) >= 16:  # the embedded server's is random; a short one cannot be told from ordinary text
        forms["database password"] = encodings(password)
    return forms


def found_in(blobs: dict[str, bytes], database_url: str) -> list[str]:
    """Where each secret appears: ``["<secret> in <where>", ...]``."""
    return [
        f"{name} in {where}"
        for name, forms in secret_forms(database_url).items()
        for where, blob in blobs.items()
        if any(form in blob for form in forms)
    ]


async def every_record(line: Line) -> dict[str, bytes]:
    """Every record (key, value and headers, raw bytes) of every topic of this test's app."""
    admin = AIOKafkaAdminClient(bootstrap_servers=line.bootstrap)
    await admin.start()
    try:
        topics = [
            t for t in await admin.list_topics() if t.startswith((line.settings.topic_prefix, line.settings.app_id))
        ]
    finally:
        await admin.close()
    assert len(topics) >= 10, topics  # the six contracts, the internal topics and the changelogs
    blobs: dict[str, bytes] = {}
    for topic in topics:
        for record in await read_all(line.bootstrap, topic):
            headers = b"".join(k.encode() + v for k, v in record.headers)
            blobs[f"{topic}[{record.partition}]@{record.offset}"] = (
                (record.key or b"") + (record.value or b"") + headers
            )
    return blobs


async def every_row(line: Line) -> tuple[dict[str, bytes], dict[str, list[bytes]]]:
    """The rows of every table (as text, with bytea raw), and apart the sealed credentials."""
    conn = await asyncpg.connect(line.database_url)
    try:
        tables = [
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        rows: dict[str, bytes] = {}
        sealed: dict[str, list[bytes]] = {}
        for table in tables:
            fetched = await conn.fetch(f'SELECT * FROM "{table}"')  # names from pg_tables
            if table in {"sms_credentials", "stripe_credentials"}:
                sealed[table] = [bytes(r["sealed"]) for r in fetched]
                continue
            for number, row in enumerate(fetched):
                cells = [v if isinstance(v, bytes) else str(v).encode() for v in row.values()]
                rows[f"{table} row {number}"] = b"\x00".join(cells)
        return rows, sealed
    finally:
        await conn.close()


def test_secrets_never_reach_a_log_an_error_a_topic_or_a_table(line: Line) -> None:
    cli = line.cli
    good, later_refused, stripe_refused, bad = new_shop(), new_shop(), new_shop(), new_shop()

    # Failure paths of the commands first: none may echo what it was given.
    line.twilio.refuse_account(ACCOUNT_REFUSED)
    connect = ("twilio", "connect", "--from", SENDER, "--account-sid")
    refusals = [
        ("Twilio refused the credentials (HTTP 401 code 20003: ", {"TWILIO_AUTH_TOKEN": TOKEN_REFUSED},
         (*connect, ACCOUNT_REFUSED)),
        ("Twilio auth token must be 32 hexadecimal", {"TWILIO_AUTH_TOKEN": TOKEN + "0"}, (*connect, ACCOUNT)),
        ("STREAMAPP_SECRET_KEY is malformed", {"TWILIO_AUTH_TOKEN": TOKEN, "STREAMAPP_SECRET_KEY": FERNET[:-4]},
         (*connect, ACCOUNT)),
        ("Stripe refused the key (HTTP 401 ", {"STRIPE_SECRET_KEY": STRIPE_LIVE_KEY}, ("stripe", "connect")),
        ("that is a Stripe publishable key", {"STRIPE_SECRET_KEY": "pk_test_" + STRIPE_KEY[8:]}, ("stripe", "connect")),
    ]  # fmt: skip
    for reason, env, command in refusals:
        assert reason in cli.with_env(**env).refused(*command, "--shop", bad)
    usage = cli.with_env(TWILIO_AUTH_TOKEN=TOKEN)(*connect, ACCOUNT, "--shop", bad, "-x")
    assert usage.returncode == 2 and "No such option: -x" in usage.stderr
    for payload in ("{{ config }}", "{{ self._TemplateReference__context }}", "{{ environ }}"):
        assert "wording refused" in cli.refused(*set_wording(good, payload))

    # A day of a shop connected to both, and of two shops the providers refuse once connected.
    connected = cli.with_env(TWILIO_AUTH_TOKEN=TOKEN).ok(*connect, ACCOUNT, "--shop", good)
    assert connected.startswith(f"shop {good} is connected to Twilio account {ACCOUNT}")
    connected = cli.with_env(STRIPE_SECRET_KEY=STRIPE_KEY).ok("stripe", "connect", "--shop", good)
    assert connected.startswith(f"shop {good} is connected to Stripe account")
    cli.with_env(TWILIO_AUTH_TOKEN=TOKEN_LATER_REFUSED).ok(*connect, ACCOUNT_LATER_REFUSED, "--shop", later_refused)
    line.twilio.refuse_account(ACCOUNT_LATER_REFUSED)

    async def save_refused_key() -> None:  # `stripe connect` refuses this key: stored as an older version could have
        conn = await asyncpg.connect(line.database_url)
        try:
            creds = stripe_account.StripeCredentials(STRIPE_LIVE_KEY)
            await stripe_account.save_credentials(conn, line.settings, stripe_refused, creds)
        finally:
            await conn.close()

    asyncio.run(save_refused_key())
    line.publish(StripeConnection(shop_id=stripe_refused, account_hint="acct_live (live mode)", updated_at=now()))
    line.publish(CatalogToggle(shop_id=stripe_refused, rule="payment_link_email", enabled=True, updated_at=now()))
    for shop in (good, later_refused):
        cli.ok("catalog", "enable", "--shop", shop, "status_update_sms")
    cli.ok("catalog", "enable", "--shop", good, "payment_link_email")
    assert f"shop {good} is connected to Twilio since" in cli.ok("twilio", "status", "--shop", good)
    assert f"shop {good} is connected to Stripe since" in cli.ok("stripe", "status", "--shop", good)

    line.worker.wait_ready()
    moved = {"from_status": "Art Approval Sent", "to_status": "In Production"}
    line.send_event(event("job.status_changed", good, customer=customer(good, phone="+15550002222"), **moved))
    line.send_event(event("job.status_changed", later_refused, customer=customer(later_refused), **moved))
    line.send_event(event("invoice.sent", good, customer=customer(good)))
    line.send_event(event("invoice.sent", stripe_refused, customer=customer(stripe_refused)))
    line.drain()

    def outcome(shop: str, channel: str) -> str | None:
        rows = line.sql("SELECT status FROM deliveries WHERE shop_id = $1 AND channel = $2", shop, channel)
        return rows[0]["status"] if rows and rows[0]["status"] != "pending" else None

    expected = {
        (good, "sms"): "sent",
        (good, "payment_link"): "sent",
        (later_refused, "sms"): "failed",
        (stripe_refused, "payment_link"): "failed",
    }
    wait_for(
        lambda: {key: outcome(*key) for key in expected} == expected,
        timeout=60,
        what="the deliveries of the day",
        interval=0.3,
    )
    [twilio_error] = line.sql("SELECT last_error FROM deliveries WHERE shop_id = $1 AND channel = 'sms'", later_refused)
    assert "401" in twilio_error["last_error"]
    wait_for(
        lambda: any(d.reason == "effect_failed" and "HTTP 401" in d.detail for d in line.dead_letters()),
        timeout=30,
        what="the dead letter of the refused payment link",
    )

    # The scan.
    blobs = {f"worker log {line.worker_log.name}": line.worker_log.read_bytes()}
    blobs |= {f"command {i}": output.encode() for i, output in enumerate(cli.outputs)}
    blobs |= asyncio.run(every_record(line))
    rows, sealed = asyncio.run(every_row(line))
    blobs |= rows
    blobs |= {f"email {i}": message.as_bytes() for i, message in enumerate(line.smtp.messages)}
    blobs |= {f"sent to Twilio {i}": json.dumps(dict(e.form)).encode() for i, e in enumerate(line.twilio.exchanges)}
    blobs |= {f"sent to Stripe {i}": json.dumps(dict(e.form)).encode() for i, e in enumerate(line.stripe.exchanges)}
    # The scan sees what it should: the connections on shop-config, the refusals, every command...
    config = b"".join(blob for where, blob in blobs.items() if ".shop-config[" in where)
    assert f"sms_connection:{good}".encode() in config and f"stripe_connection:{good}".encode() in config
    assert any(b"HTTP 401" in blob for where, blob in blobs.items() if ".dead-letters[" in where)
    assert any(b"401" in blob for where, blob in blobs.items() if where.startswith("deliveries row"))
    assert len(cli.outputs) >= 12 and b"sms " in blobs[f"worker log {line.worker_log.name}"]
    # ...and finds a secret wherever it is (a Twilio Authorization header; a quarter of a key).
    header = b"Authorization: Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode())
    control = {"a request": header, "a log": f"key={FERNET[11:27]}".encode()}
    assert found_in(control, line.database_url) == [
        "STREAMAPP_SECRET_KEY in a log",
        f"Twilio auth token of {ACCOUNT} in a request",
    ]
    assert found_in(blobs, line.database_url) == []
    # The credentials are where they belong, sealed: not one of them readable there either.
    assert len(sealed["sms_credentials"]) == 2 and len(sealed["stripe_credentials"]) == 2
    sealed_rows = {f"{table} row {i}": v for table, values in sealed.items() for i, v in enumerate(values)}
    assert found_in(sealed_rows, line.database_url) == []
