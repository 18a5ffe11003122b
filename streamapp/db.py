"""Database access: schema migrations (Alembic) and asyncpg connections.

Alembic because it is the maintained migration tool of the Python/PostgreSQL
world; it runs here on SQLAlchemy's asyncpg dialect, so asyncpg stays the only driver.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from streamapp.errors import ConfigurationError
from streamapp.queries import Queryable

MIGRATIONS = "streamapp:migrations"


def sqlalchemy_url(database_url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's asyncpg URL."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
        raise ConfigurationError("DATABASE_URL must look like postgresql://user:password@host:port/database")
    return f"postgresql+asyncpg://{rest}"


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for ``database_url``, without an alembic.ini on disk."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    # Passed as an attribute, not a main option: ini interpolation would mangle a '%' in a password.
    config.attributes["sqlalchemy_url"] = sqlalchemy_url(database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Must not be called from a running event loop."""
    command.upgrade(alembic_config(database_url), revision)


async def durability_warnings(conn: Queryable) -> list[str]:
    """What in the server's settings can lose an effect the sinks were told was committed.

    The sinks tell Kafka an action is done once PostgreSQL acknowledged its commit. With
    ``synchronous_commit`` off, a server crash forgets the last commits it acknowledged
    (the reliability suite lost credits that way), and with ``fsync`` off a machine crash does.
    """
    warnings = []
    for setting, consequence in (
        ("synchronous_commit", "a PostgreSQL crash can lose credits and delivery records it acknowledged"),
        ("fsync", "a machine crash can lose credits and delivery records"),
    ):
        if await conn.fetchval(f"SHOW {setting}") == "off":
            warnings.append(f"{setting} is off: {consequence}; effects may then be lost or sent twice")
    return warnings
