"""One test's settings, and the environment under which a subprocess builds the same ones.

Every test that starts a worker or a command builds its environment here, so a new setting
is passed to subprocesses in one place.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from streamapp.settings import Settings


def isolated_settings(
    name: str, kafka_bootstrap: str, data_dir: Path, *, run: str | None = None, **overrides: Any
) -> Settings:
    """Settings of one test: its own app id (consumer group) and topic prefix, named after ``name``
    and ``run`` (default: a fresh id); ``overrides`` win, and a plain-string secret becomes a ``SecretStr``."""
    run = run or uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "app_id": f"{name}-{run}",
        "topic_prefix": f"{name}{run}.",
        "kafka_bootstrap_servers": kafka_bootstrap,
        "data_dir": data_dir,
        **overrides,
    }
    for secret in ("database_url", "secret_key"):
        if isinstance(values.get(secret), str):
            values[secret] = SecretStr(values[secret])
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment under which a subprocess builds the same settings."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "STREAMAPP_APP_ID": settings.app_id,
        "STREAMAPP_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMAPP_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "STREAMAPP_DATA_DIR": str(settings.data_dir),
        "STREAMAPP_COMMIT_INTERVAL_SECONDS": str(settings.commit_interval_seconds),
        "STREAMAPP_SESSION_TIMEOUT_SECONDS": str(settings.session_timeout_seconds),
        "STREAMAPP_SMTP_HOST": settings.smtp_host,
        "STREAMAPP_SMTP_PORT": str(settings.smtp_port),
        "STREAMAPP_CLOCK": settings.clock,
        "STREAMAPP_TICK_SECONDS": str(settings.tick_seconds),
        "STREAMAPP_PROVIDER_TIMEOUT_SECONDS": str(settings.provider_timeout_seconds),
        "STREAMAPP_ROLE": settings.role,
    }
    if settings.database_url is not None:
        env["DATABASE_URL"] = settings.database_url.get_secret_value()
    if settings.secret_key is not None:
        env["STREAMAPP_SECRET_KEY"] = settings.secret_key.get_secret_value()
    if settings.twilio_api_url is not None:
        env["STREAMAPP_TWILIO_API_URL"] = settings.twilio_api_url
    if settings.stripe_api_url is not None:
        env["STREAMAPP_STRIPE_API_URL"] = settings.stripe_api_url
    return env


def command_env(settings: Settings) -> dict[str, str]:
    """The whole environment of a ``streamapp`` command run with ``settings``: this process's, then theirs."""
    return {**os.environ, **settings_env(settings)}
