"""A throwaway PostgreSQL cluster from the installed server binaries.

``initdb`` and ``postgres`` refuse to run as root, so when we are root they run
as ``nobody`` in a folder that account owns. The cluster listens on 127.0.0.1
only, with password authentication, and is deleted on stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path

import asyncpg

from streamapp.embedded.process import ChildProcess, EmbeddedService, free_port, port_open, run_once, unprivileged_user
from streamapp.errors import ConfigurationError, ServiceStartError

logger = logging.getLogger(__name__)

_DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_postgres_bindir(explicit: Path | None = None) -> Path:
    """The folder holding ``initdb`` and ``postgres``: explicit, on PATH, or Debian's newest."""
    if explicit is not None:
        candidates = [explicit]
    else:
        on_path = shutil.which("initdb")
        candidates = [Path(on_path).parent] if on_path else []
        candidates += sorted(Path("/").glob(_DEBIAN_BINDIRS.lstrip("/")), key=_major, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise ConfigurationError(
        "PostgreSQL server binaries (initdb, postgres) not found; install them "
        "(Debian: apt-get install postgresql), set STREAMAPP_POSTGRES_BIN_DIR, or set DATABASE_URL"
    )


def _major(path: Path) -> int:
    try:
        return int(path.parent.name)
    except ValueError:
        return 0


class EmbeddedPostgres(EmbeddedService):
    """One PostgreSQL server on 127.0.0.1 with a database ``streamapp``.

    ``durable=False`` (the default) turns fsync off: fast, and fine for data
    that is deleted on stop anyway.
    """

    stop_signal = signal.SIGINT
    stop_timeout = 15.0

    user_name = "streamapp"
    database = "streamapp"

    def __init__(self, bindir: Path | None = None, *, durable: bool = False) -> None:
        self.bindir = find_postgres_bindir(bindir)
        self.durable = durable
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        self.workdir = Path(tempfile.mkdtemp(prefix="streamapp-pg-"))
        self._os_user = unprivileged_user()
        if self._os_user is not None:
            os.chown(self.workdir, self._os_user.pw_uid, self._os_user.pw_gid)
        self._proc: ChildProcess | None = None

    def url(self, database: str | None = None) -> str:
        """The libpq URL of ``database`` (default ``streamapp``) on this server."""
        return f"postgresql://{self.user_name}:{self.password}@127.0.0.1:{self.port}/{database or self.database}"

    def start(self, timeout: float = 60.0) -> None:
        """initdb, start the server, create the ``streamapp`` database."""
        started = time.monotonic()
        data = self.workdir / "data"
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._os_user is not None:
            os.chown(pwfile, self._os_user.pw_uid, self._os_user.pw_gid)
        init = run_once(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                self.user_name,
                "--pwfile",
                str(pwfile),
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user=self._os_user,
            timeout=timeout,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise ServiceStartError(f"initdb failed (exit {init.returncode}):\n{init.stdout}{init.stderr}")
        self._launch(started + timeout)

    def restart(self, *, down_seconds: float = 0.0, sig: int = signal.SIGQUIT, timeout: float = 60.0) -> None:
        """Stop the server with ``sig`` (SIGQUIT: an immediate shutdown, as a crash would; SIGINT: a fast
        one), keep its data, wait ``down_seconds``, start it again on the same port. For fault tests."""
        if self._proc is not None:
            self._proc.stop(sig, timeout=self.stop_timeout)
            self._proc = None
        time.sleep(down_seconds)
        self._launch(time.monotonic() + timeout)

    def _launch(self, deadline: float) -> None:
        """Start ``postgres`` on the cluster in the work folder; return once it takes connections."""
        started = time.monotonic()
        argv = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.workdir / "data"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.workdir),
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=64MB",
        ]
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        # SIGQUIT on parent death: PostgreSQL's immediate shutdown, which also ends its backends.
        self._proc = ChildProcess(
            "postgres", argv, log_path=self.workdir / "postgres.log", user=self._os_user, death_signal=signal.SIGQUIT
        )
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise ServiceStartError(f"PostgreSQL exited with code {code}:\n{self._proc.log_tail()}")
            if not port_open(self.port):
                time.sleep(0.05)
                continue
            try:
                asyncio.run(self._create_database(self.database))
            except (OSError, asyncpg.PostgresError) as exc:
                last_error = exc
                time.sleep(0.1)
                continue
            logger.info("PostgreSQL up on 127.0.0.1:%d in %.1fs", self.port, time.monotonic() - started)
            return
        self.stop()
        raise ServiceStartError(f"PostgreSQL did not accept connections in time ({last_error!r})")

    async def _create_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.url("postgres"), timeout=5)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    def create_database(self, name: str) -> str:
        """Create database ``name`` if missing and return its URL (tests use one per test)."""
        if not _DB_NAME.match(name):
            raise ConfigurationError(f"invalid database name {name!r}: use lower-case letters, digits and _")
        asyncio.run(self._create_database(name))
        return self.url(name)
