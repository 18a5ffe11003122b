"""The project's exception hierarchy: one base, retryable versus permanent below it."""

from __future__ import annotations


class StreamappError(Exception):
    """Base class of every error streamapp raises on purpose."""


class ConfigurationError(StreamappError):
    """A setting or command-line value is missing or invalid; fix the input, then retry."""


class UnverifiedDependencyError(ConfigurationError):
    """An installed dependency is not the one streamapp's workarounds were verified with; install the pinned one."""


class RetryableError(StreamappError):
    """A transient failure (network, broker, provider throttling); the same call may succeed later."""


class PermanentError(StreamappError):
    """A failure that retrying cannot fix; the input is recorded with its reason."""


class ServiceStartError(StreamappError):
    """An embedded service (Kafka, PostgreSQL) did not come up; the message carries its log tail."""
