"""What every command of the ``streamapp`` CLI shares: settings, running, option types, output.

Commands import this module and the layers below it, never each other (like ``faust/cli/base.py``).
Bad input raises ConfigurationError (one line, exit 2); an unreachable service raises
RetryableError (one line, exit 1). Results go to stdout, errors to stderr.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import asyncpg
import click
from aiokafka.errors import KafkaError
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.common import Identifier
from streamapp.db import sqlalchemy_url
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.settings import Settings, get_settings

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)
_IDENTIFIER = TypeAdapter[str](Identifier)
#: Model field -> the command-line option that sets it, for error messages.
_OPTION_OF = {
    "shop_id": "--shop",
    "rule_id": "RULE_ID",
    "key": "--key",
    "template_key": "--template",
    "amount_cents": "--amount (in cents)",
}


def quiet_libraries() -> None:
    """Keep stderr for this command's own errors: library chatter shows only with --log-level debug."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # asyncio too: it reports a client that a failed start left unclosed, after our one-line error.
        # The provider SDKs log each request at INFO.
        for name in ("aiokafka", "asyncio", "streamapp.shop_config", "stripe", "twilio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def now() -> datetime:
    return datetime.now(UTC)


def settings(*, kafka: bool = False, database: bool = False) -> Settings:
    """The validated settings; ConfigurationError if they are invalid or a service this command needs is not set."""
    try:
        found = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"invalid setting: {problems}") from None
    if kafka:
        require_kafka(found)
    if database:
        require_database(found)
    return found


def require_kafka(settings: Settings) -> str:
    """The bootstrap servers; ConfigurationError when none are configured."""
    if not settings.kafka_bootstrap_servers:
        raise ConfigurationError("KAFKA_BOOTSTRAP_SERVERS is not set (or use `streamapp run` for embedded services)")
    return settings.kafka_bootstrap_servers


def require_database(settings: Settings) -> str:
    """The database URL; ConfigurationError when none is configured."""
    if settings.database_url is None:
        raise ConfigurationError("DATABASE_URL is not set (or use `streamapp run` for embedded services)")
    return settings.database_url.get_secret_value()


def run(work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work`` to completion; a broker failure becomes a one-line RetryableError."""
    try:
        return asyncio.run(work)
    except KafkaError as exc:
        raise RetryableError(f"Kafka is not reachable: {exc}") from None


class IdentifierType(click.ParamType):
    """An id in the schemas' pattern; a bad one is a ConfigurationError naming the option (one line, exit 2)."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return _IDENTIFIER.validate_python(value)
        except ValidationError as exc:
            where = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name if param else "id"
            raise ConfigurationError(f"{where} {value!r}: {exc.errors()[0]['msg']}") from None


ID = IdentifierType()


def build(model: type[_M], **fields: Any) -> _M:
    """``model(**fields)``, its validation errors turned into one line naming the options."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            where = _OPTION_OF.get(field, f"--{field.replace('_', '-')}") if field else model.__name__
            value = f" {err['input']!r}" if field in _OPTION_OF else ""
            problems.append(f"{where}{value}: {err['msg']}")
        raise ConfigurationError("; ".join(problems)) from None


def parse_amount(text: str) -> int:
    """Dollars (``20``, ``20.50``, ``$20.5``) as integer cents, exactly; ConfigurationError otherwise."""
    try:
        amount = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        raise ConfigurationError(f"--amount {text!r} is not a number of dollars (like 20 or 20.50)") from None
    if not amount.is_finite():
        raise ConfigurationError(f"--amount {text!r} is not a number of dollars (like 20 or 20.50)")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise ConfigurationError(f"--amount {text!r} has more than 2 decimal places; give whole cents")
    if amount <= 0:
        raise ConfigurationError(f"--amount {text!r} must be more than zero")
    return int(amount * 100)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` as left-aligned columns under ``header``."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


shop_option = click.option("--shop", "shop", type=ID, required=True, metavar="SHOP", help="Shop id.")


async def query(settings: Settings, work: Callable[[Any], Awaitable[_T]]) -> _T:
    """Open one connection to DATABASE_URL, ``await work(connection)``, close it.

    A connection or query failure becomes a one-line RetryableError (without the URL: it holds the password).
    """
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    sqlalchemy_url(url)  # refuses a URL that is not PostgreSQL's, with the usual message
    try:
        conn = await asyncpg.connect("postgresql://" + url.partition("://")[2], timeout=10)
        try:
            return await work(conn)
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise RetryableError(f"database: {exc}") from None
