"""The ``streamapp`` command line.

click because Faust already depends on it (one CLI library in the tree). Every
expected failure (bad setting, unreachable service) prints one line prefixed
``streamapp: error:`` and exits 2 (bad input) or 1 (service failure), never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
import faust
from pydantic import SecretStr

from streamapp.cli import (
    catalog_commands,
    common,
    demo,
    invoice_commands,
    notification_commands,
    shop_commands,
    stripe_commands,
    twilio_commands,
)
from streamapp.connections import crypto
from streamapp.db import upgrade
from streamapp.embedded.mailbox import EmbeddedMailbox
from streamapp.embedded.process import ChildProcess, free_port
from streamapp.embedded.stack import EmbeddedStack, service_env
from streamapp.embedded.twilio import EmbeddedTwilio, ensure_prism
from streamapp.errors import ConfigurationError, StreamappError
from streamapp.settings import Settings, get_settings
from streamapp.topics import ensure_topics

logger = logging.getLogger("streamapp")

_F = TypeVar("_F", bound=Callable[..., Any])

WORKER_STOP_TIMEOUT = 30.0
WORKER_READY_TIMEOUT = 120.0


def _raise_on_sigterm() -> None:
    """Turn SIGTERM (and SIGINT) into KeyboardInterrupt so ``finally`` blocks stop child services.

    SIGINT explicitly too: a process started in the background by a non-interactive
    shell inherits SIGINT ignored, and Ctrl-C (or ``kill -INT``) must still stop it.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@click.group()
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Log level of this command (not of the worker).",
)
def cli(log_level: str) -> None:
    """streamapp: shop events in, customer emails, SMS, credits and admin alerts out."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_level != "debug":
        # Alembic narrates every plugin it loads at INFO; keep the migration lines only.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)


shop_commands.register(cli)
catalog_commands.register(cli)
twilio_commands.register(cli)
notification_commands.register(cli)
invoice_commands.register(cli)
stripe_commands.register(cli)


@cli.command()
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Worker HTTP port (default: STREAMAPP_WEB_PORT, 6066).",
)
@click.option(
    "--demo", "play_demo", is_flag=True, help="Also play the demo: a print shop's day, on a local Twilio API contract."
)
def run(web_port: int | None, play_demo: bool) -> None:
    """Run the worker on embedded Kafka and PostgreSQL (unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set).

    Starts the services (and, unless STREAMAPP_SMTP_HOST is set, a local SMTP
    mailbox that keeps messages as .eml files; with --demo and no STREAMAPP_TWILIO_API_URL,
    Twilio's API contract served locally), applies migrations, creates topics, starts a
    worker and waits; Ctrl-C (or SIGTERM) stops the worker, then the services. Without
    STREAMAPP_SECRET_KEY, provider credentials are sealed with a key kept in the data dir.
    """
    base = common.settings()
    if web_port is not None:
        base = base.model_copy(update={"web_port": web_port})
    if base.web_port == 0:
        base = base.model_copy(update={"web_port": free_port()})
    _raise_on_sigterm()
    try:
        with EmbeddedStack(base) as started, ExitStack() as extra:
            settings = started
            mailbox: EmbeddedMailbox | None = None
            if "smtp_host" not in base.model_fields_set:
                mailbox = extra.enter_context(EmbeddedMailbox(settings.data_dir.resolve() / "mail"))
                settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": mailbox.port})
            settings = _with_secret_key(settings)
            if play_demo and "tick_seconds" not in base.model_fields_set:
                settings = settings.model_copy(update={"tick_seconds": demo.TICK_SECONDS})
            if play_demo and base.twilio_api_url is None:
                twilio = extra.enter_context(EmbeddedTwilio(ensure_prism(settings.cache_dir)))
                settings = settings.model_copy(update={"twilio_api_url": twilio.url})
            _prepare(settings)
            env_file = _write_env_file(settings)
            worker = _spawn_worker(settings)
            try:
                click.echo(f"broker      {settings.kafka_bootstrap_servers}")
                click.echo(f"worker      pid {worker.pid}, log {worker.log_path}")
                click.echo(f"endpoints   http://{settings.web_host}:{settings.web_port}/healthz  /readyz  /metrics")
                if mailbox is not None:
                    click.echo(f"mailbox     smtp://127.0.0.1:{mailbox.port}, messages kept in {mailbox.folder}")
                if settings.twilio_api_url is not None and base.twilio_api_url is None:
                    click.echo(
                        f"twilio      {settings.twilio_api_url} (Twilio's API contract, local: no SMS leaves here)"
                    )
                click.echo(f"environment {env_file} (source it to point other commands at these services)")
                _wait_ready(settings, worker)
                if play_demo:
                    demo.report(settings, mailbox)
                click.echo("ready       (Ctrl-C stops the worker, then Kafka and PostgreSQL)")
                code = _wait_exit(worker)
                raise click.ClickException(f"the worker exited with code {code}:\n{worker.log_tail()}")
            finally:
                worker.stop(signal.SIGTERM, timeout=WORKER_STOP_TIMEOUT)
    except KeyboardInterrupt:
        click.echo("stopped")


def _with_secret_key(settings: Settings) -> Settings:
    """``settings`` with a secret key: STREAMAPP_SECRET_KEY, else one kept in the data dir (made once).

    Losing the key loses the credentials it sealed, so it is kept with the data it protects,
    readable by this user only, and never printed.
    """
    if settings.secret_key is not None:
        return settings
    path = settings.data_dir / "secret-key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(crypto.generate_key())
    return settings.model_copy(update={"secret_key": SecretStr(path.read_text().strip())})


@cli.command()
def services() -> None:
    """Start embedded Kafka and PostgreSQL (with migrations and topics) and wait for Ctrl-C."""
    _raise_on_sigterm()
    try:
        with EmbeddedStack(common.settings()) as started:
            settings = _with_secret_key(started)
            _prepare(settings)
            env_file = _write_env_file(settings)
            click.echo(f"broker      {settings.kafka_bootstrap_servers}")
            click.echo(f"environment {env_file}")
            click.echo("ready       (Ctrl-C stops them)")
            signal.pause()
    except KeyboardInterrupt:
        click.echo("stopped")


@cli.command()
@click.option(
    "--role",
    type=click.Choice(["all", "counting", "sinks"]),
    help="What this worker runs (default: STREAMAPP_ROLE, else all): every agent; the deciding agents "
    "(no database); or the sinks alone, in consumer group <app_id>-sinks.",
)
def worker(role: str | None) -> None:
    """Run one worker against KAFKA_BOOTSTRAP_SERVERS (creates missing topics first)."""
    if role is not None:
        # The app is built from the environment when it is imported below.
        os.environ["STREAMAPP_ROLE"] = role
        get_settings.cache_clear()
    settings = common.settings()
    common.require_kafka(settings)
    if settings.role != "counting":  # a counting worker performs no action: no database, no provider keys
        common.require_database(settings)
        if settings.secret_key is None:
            # SMS actions would wait (never lost) until a worker with the key performs them.
            logger.warning("STREAMAPP_SECRET_KEY is not set: this worker cannot send SMS for shops with Twilio")
        else:
            crypto.check_key(settings)  # a malformed key fails now, not at the first SMS
    asyncio.run(_ensure_topics(settings))
    # Imported here: building the app reads the environment, which must be validated first.
    from streamapp.app import app  # noqa: PLC0415

    faust.Worker(app, loglevel=_faust_level(settings.log_level)).execute_from_commandline()


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target migration.")
def db_upgrade(revision: str) -> None:
    """Apply schema migrations to DATABASE_URL."""
    upgrade(common.require_database(common.settings()), revision)
    click.echo(f"database at {revision}")


@cli.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("create")
def topics_create() -> None:
    """Create missing topics on KAFKA_BOOTSTRAP_SERVERS; check the partition count of existing ones."""
    settings = common.settings()
    common.require_kafka(settings)
    created = asyncio.run(_ensure_topics(settings))
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


async def _ensure_topics(settings: Settings) -> list[str]:
    return await ensure_topics(settings)


def _prepare(settings: Settings) -> None:
    upgrade(common.require_database(settings))
    asyncio.run(_ensure_topics(settings))


def _faust_level(level: str) -> str:
    return {"warning": "warn", "critical": "crit"}.get(level.lower(), level.lower())


def _write_env_file(settings: Settings) -> Path:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "embedded.env"
    # The file holds the throwaway database's password: readable by this user only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"export {key}='{value}'\n" for key, value in service_env(settings).items())
    return path


def _spawn_worker(settings: Settings) -> ChildProcess:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **service_env(settings),
        "STREAMAPP_WEB_PORT": str(settings.web_port),
        "STREAMAPP_SMTP_HOST": settings.smtp_host,
        "STREAMAPP_SMTP_PORT": str(settings.smtp_port),
        "STREAMAPP_TICK_SECONDS": str(settings.tick_seconds),
    }
    return ChildProcess(
        "worker",
        [sys.executable, "-m", "streamapp", "worker"],
        log_path=settings.data_dir / "worker.log",
        env=env,
        # SIGKILL, not SIGTERM: when `run` dies, its broker dies with it, and a Faust worker
        # told to stop gracefully without a broker can wait forever. Nothing is lost: offsets
        # are committed only after the effects (at-least-once); Ctrl-C still stops it gracefully.
        death_signal=signal.SIGKILL,
    )


def _wait_ready(settings: Settings, worker: ChildProcess) -> None:
    url = f"http://{settings.web_host}:{settings.web_port}/readyz"
    deadline = time.monotonic() + WORKER_READY_TIMEOUT
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise click.ClickException(f"the worker exited during start-up:\n{worker.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise click.ClickException(f"the worker was not ready within {WORKER_READY_TIMEOUT:.0f}s:\n{worker.log_tail()}")


def _wait_exit(worker: ChildProcess) -> int:
    while (code := worker.poll()) is None:
        time.sleep(0.5)
    return code


def main() -> None:
    """Entry point: run the CLI, turning expected errors into one-line messages."""
    try:
        cli(standalone_mode=True)
    except ConfigurationError as exc:
        click.echo(f"streamapp: error: {exc}", err=True)
        sys.exit(2)
    except StreamappError as exc:
        click.echo(f"streamapp: error: {exc}", err=True)
        sys.exit(1)
