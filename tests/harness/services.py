"""Helpers shared by integration tests: workers as subprocesses, process trees, HTTP probes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
import uuid
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Generic, TypeVar

from streamapp.embedded.process import ChildProcess, free_port
from tests.harness.waits import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
S = TypeVar("S", bound=AbstractAsyncContextManager[Any])


def new_database(server_url: str) -> str:
    """Create an empty database on the server of ``server_url``; returns its URL."""
    import asyncpg  # noqa: PLC0415 - keep this module importable without the driver loaded

    name = f"t_{uuid.uuid4().hex[:16]}"

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def http_get(url: str) -> tuple[int, Any] | None:
    """(status, JSON body) of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, following /proc parent links."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class Worker:
    """A Faust worker subprocess of app module ``app`` with its own web port."""

    def __init__(self, app: str, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **env, "STREAMAPP_WEB_PORT": str(self.port), "PYTHONPATH": str(REPO_ROOT)}
        self.process = ChildProcess(
            "worker",
            [sys.executable, "-m", "faust", "-A", app, "worker", "-l", "info"],
            log_path=log_path,
            cwd=REPO_ROOT,
            env=full_env,
        )

    def get(self, path: str) -> tuple[int, Any] | None:
        return http_get(self.base_url + path)

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.poll()}:\n{self.process.log_tail()}")
            answer = self.get("/readyz")
            return answer is not None and answer[0] == 200

        try:
            wait_for(ready, timeout=timeout, what="worker /readyz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.process.log_tail()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        return self.process.stop(sig, timeout=timeout)


class InThread(Generic[S]):
    """An async context manager (a fault proxy, say) entered on its own event loop in a thread,
    for tests that are not async: ``with InThread(TwilioFaultProxy(url)) as proxy: ...``.

    Only plain attribute reads and writes of the object are safe from the test's thread.
    """

    def __init__(self, inner: S) -> None:
        self.inner = inner
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=type(inner).__name__, daemon=True)

    def __enter__(self) -> S:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.inner.__aenter__(), self.loop).result(10)
        return self.inner

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.inner.__aexit__(None, None, None), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
