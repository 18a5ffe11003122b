"""Bad input on the command line gets one precise line and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness.services import REPO_ROOT


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}}
    return subprocess.run(
        [sys.executable, "-m", "streamapp", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ("topics", "create"),
            {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "STREAMAPP_TOPIC_PARTITIONS": "many"},
            "streamapp: error: invalid setting: topic_partitions: Input should be a valid integer",
        ),
        (
            ("topics", "create"),
            {"STREAMAPP_TOPIC_PARTITIONS": "0"},
            "streamapp: error: invalid setting: topic_partitions: Input should be greater than or equal to 1",
        ),
        (("worker",), {}, "streamapp: error: KAFKA_BOOTSTRAP_SERVERS is not set"),
        (("topics", "create"), {}, "streamapp: error: KAFKA_BOOTSTRAP_SERVERS is not set"),
        (("db", "upgrade"), {}, "streamapp: error: DATABASE_URL is not set"),
        (
            ("db", "upgrade"),
            {"DATABASE_URL": "mysql://u:p@h/db"},
            "streamapp: error: DATABASE_URL must look like postgresql://user:password@host:port/database",
        ),
    ],
)
def test_bad_settings_give_one_line_and_exit_2(args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    done = run_cli(*args, **env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_option_is_a_usage_error() -> None:
    done = run_cli("run", "--web-port", "70000")
    assert done.returncode == 2
    assert "Invalid value for '--web-port': 70000 is not in the range 0<=x<=65535." in done.stderr
    assert "Traceback" not in done.stderr


def test_secret_database_url_is_not_echoed_in_errors() -> None:
    done = run_cli("db", "upgrade", DATABASE_URL="mysql://user:hunter2@h/db")
    assert "hunter2" not in done.stderr + done.stdout
