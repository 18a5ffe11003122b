"""Start whatever the settings leave unset: the broker, the database, or both."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from types import TracebackType

from pydantic import SecretStr

from streamapp.embedded.kafka import EmbeddedKafka, ensure_kafka_libs
from streamapp.embedded.postgres import EmbeddedPostgres
from streamapp.settings import Settings

logger = logging.getLogger(__name__)


class EmbeddedStack:
    """Context manager yielding settings that point at a running broker and database.

    A service whose setting is present (``KAFKA_BOOTSTRAP_SERVERS``,
    ``DATABASE_URL``) is used as it is; a missing one is started here and stopped
    on exit, in reverse order of start.
    """

    def __init__(self, settings: Settings) -> None:
        self.base = settings
        self.kafka: EmbeddedKafka | None = None
        self.postgres: EmbeddedPostgres | None = None
        self._stack = ExitStack()

    def __enter__(self) -> Settings:
        updates: dict[str, object] = {}
        try:
            if not self.base.kafka_bootstrap_servers:
                libs = ensure_kafka_libs(self.base.cache_dir)
                self.kafka = self._stack.enter_context(EmbeddedKafka(libs))
                updates["kafka_bootstrap_servers"] = self.kafka.bootstrap_servers
            if self.base.database_url is None:
                self.postgres = self._stack.enter_context(EmbeddedPostgres(self.base.postgres_bin_dir))
                updates["database_url"] = SecretStr(self.postgres.url())
        except BaseException:
            self._stack.close()
            raise
        return self.base.model_copy(update=updates)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that points another process at the same broker and database."""
    env: dict[str, str] = {}
    if settings.kafka_bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    if settings.database_url is not None:
        env["DATABASE_URL"] = settings.database_url.get_secret_value()
    if settings.secret_key is not None:
        env["STREAMAPP_SECRET_KEY"] = settings.secret_key.get_secret_value()
    if settings.twilio_api_url is not None:
        env["STREAMAPP_TWILIO_API_URL"] = settings.twilio_api_url
    return env
