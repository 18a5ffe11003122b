"""The one settings object every component reads.

Every field has an environment name: ``STREAMAPP_<FIELD>``, except the two that
the wider ecosystem already names (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``).
Leaving those two unset means "use the embedded broker and database"
(see :mod:`streamapp.embedded`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "streamapp"


class Settings(BaseSettings):
    """Frozen configuration; build it once per process with :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="STREAMAPP_", frozen=True, extra="ignore", populate_by_name=True)

    app_id: str = Field("streamapp", description="Faust application id: consumer group and changelog prefix.")
    kafka_bootstrap_servers: str | None = Field(
        None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "STREAMAPP_KAFKA_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port]; unset means the embedded broker.",
    )
    database_url: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "STREAMAPP_DATABASE_URL"),
        description="postgresql://user:password@host:port/db; unset means the embedded PostgreSQL.",
    )
    topic_prefix: str = Field("", description="Prefix of every topic name (isolates tests and environments).")
    topic_partitions: int = Field(4, ge=1, description="Partitions of every topic streamapp creates.")
    topic_replication_factor: int = Field(1, ge=1, description="Replication factor of created topics.")
    commit_interval_seconds: float = Field(
        2.8, gt=0, le=60, description="How often a worker commits consumed offsets (after flushing its sends)."
    )
    producer_linger_ms: float = Field(
        5.0, ge=0, le=1000, description="How long a worker's producer waits to batch messages (latency for throughput)."
    )
    session_timeout_seconds: float = Field(
        30.0, ge=6, le=300, description="How long a silent worker keeps its partitions before they move."
    )
    web_host: str = Field("127.0.0.1", description="Bind address of the worker's HTTP endpoints.")
    web_port: int = Field(6066, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics.")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field("info", description="Worker log level.")
    data_dir: Path = Field(Path(".streamapp"), description="Worker state folder (Faust data dir).")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Where resolved Kafka jars are kept.")
    smtp_host: str = Field("127.0.0.1", description="SMTP server host.")
    smtp_port: int = Field(1025, ge=1, le=65535, description="SMTP server port.")
    smtp_username: str | None = Field(None, description="SMTP login, if the server wants one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_from: str = Field("shop@streamapp.local", description="Envelope sender of customer emails.")
    provider_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=300,
        description="How long a sink waits on SMTP, Twilio or Stripe for one answer before it counts a failed attempt.",
    )
    postgres_bin_dir: Path | None = Field(None, description="Folder of initdb/postgres for the embedded database.")
    secret_key: SecretStr | None = Field(
        None, description="Key that seals provider credentials at rest (`streamapp secret-key` makes one)."
    )
    twilio_api_url: str | None = Field(
        None, description="Base URL of Twilio's REST API; unset means https://api.twilio.com (tests use a local one)."
    )
    stripe_api_url: str | None = Field(
        None, description="Base URL of Stripe's API; unset means https://api.stripe.com (tests use stripe-mock)."
    )
    clock: Literal["wall", "external"] = Field(
        "wall",
        description="wall: the worker ticks the invoice schedule with the wall clock; "
        "external: something else sends the ticks (tests drive a controlled clock).",
    )
    tick_seconds: float = Field(60.0, gt=0, le=3600, description="How often the wall clock ticks.")
    invoice_retention_days: int = Field(
        180,
        ge=1,
        le=36500,
        description="How long a paid or voided invoice is kept (counted from the event that closed it) "
        "before a tick removes it; late events for it are ignored from then on.",
    )
    role: Literal["all", "counting", "sinks"] = Field(
        "all",
        description="What a worker runs. all: every agent, in consumer group <app_id>. counting: the agents of "
        "orders, job-status, payments and invoices (decisions, tables; no database), in group <app_id>. "
        "sinks: the actions agent alone (email, SMS, payment links, PostgreSQL), in group <app_id>-sinks. "
        "Run counting and sinks workers side by side, each scaled on its own; not next to an all worker.",
    )
    toast_ttl_seconds: int = Field(600, ge=1, le=86400, description="How long a toast shows after its event.")
    allow_unverified_faust: bool = Field(
        False,
        description="Start even if faust-streaming, mode-streaming or aiokafka is not the version the Faust "
        "workarounds were verified with (a loud warning names each); for testing an upgrade, never in production.",
    )

    @field_validator("twilio_api_url", "stripe_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
