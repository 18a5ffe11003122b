"""Stripe's API served locally by stripe-mock, for the payment-link tests and ``streamapp run``.

stripe-mock is Stripe's own mock server: a Go program that embeds Stripe's OpenAPI document
and fixtures. :func:`ensure_stripe_mock` builds the pinned version with ``go install`` into
``<cache_dir>/stripe-mock-<version>/`` once, like the Kafka jars; :class:`EmbeddedStripe`
runs it on 127.0.0.1.

What stripe-mock checks, and what it does not (measured against v0.203.0):

* a request that breaks the document (an unknown parameter, a wrong type, a missing
  required one) gets HTTP 400 with an ``invalid_request_error``; a key that is not shaped
  ``sk_test_x``/``rk_test_x`` (live keys too) gets 401, whose message quotes the
  Authorization header it refused, key included;
* values are not judged beyond their type: a negative ``unit_amount`` or a ``success_url``
  that is not a URL pass;
* a valid request gets the document's fixture, with some scalar parameters reflected
  (``customer_email``, ``mode``), but not ``metadata`` or amounts: every Checkout Session
  has the same id and URL;
* ``Idempotency-Key`` is only echoed back: a second request with the same key creates
  "another" session. Idempotency has to be proved by counting requests, not by asking it;
* its document is of API version 2026-08-26.dahlia (stripe 16.1.0 sends 2026-10-28.endive);
  it is not started with ``-strict-version-check``, which would refuse every request.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from streamapp.embedded.process import ChildProcess, EmbeddedService, free_port
from streamapp.errors import ConfigurationError, ServiceStartError

logger = logging.getLogger(__name__)

STRIPE_MOCK_MODULE = "github.com/stripe/stripe-mock"
#: Pinned for reproducible tests: a new stripe-mock brings a new API document and new fixtures.
STRIPE_MOCK_VERSION = "v0.203.0"

#: A key of the shape stripe-mock accepts, for the readiness probe.
_PROBE_KEY = "sk_test_probe"


def _go() -> str:
    path = shutil.which("go")
    if path is None:
        raise ConfigurationError(
            "'go' is not on PATH; the local Stripe API (stripe-mock) is built with Go 1.22+ "
            "(or set STREAMAPP_STRIPE_API_URL to a running one)"
        )
    return path


def go_environment(work: Path) -> dict[str, str]:
    """The environment of ``go install``: its module and build caches inside ``work``, deleted afterwards.

    Not the user's ``~/go`` and ``~/.cache/go-build``: they may not be writable (CI, a service
    account), and a build must not depend on what they hold. ``-modcacherw`` because Go makes
    its module cache read-only, which would stop the clean-up. ``CGO_ENABLED=0``: a static
    binary that needs no C compiler. The rest of the environment (GOPROXY, GOFLAGS, proxies)
    is kept.
    """
    env = dict(os.environ)
    env.update(
        GOPATH=str(work / "gopath"),
        GOMODCACHE=str(work / "gopath" / "pkg" / "mod"),
        GOCACHE=str(work / "gocache"),
        GOFLAGS=" ".join(filter(None, (env.get("GOFLAGS", ""), "-modcacherw"))),
        CGO_ENABLED="0",
        GO111MODULE="on",
    )
    return env


def ensure_stripe_mock(cache_dir: Path, version: str = STRIPE_MOCK_VERSION) -> Path:
    """The stripe-mock binary of ``version``, building it with ``go install`` on first use.

    Kept in ``<cache_dir>/stripe-mock-<version>/``. Safe to call from several processes at
    once (a file lock serialises them). The Go module and build caches of the install are
    deleted afterwards: only the binary (about 33 MB) stays. Raises ServiceStartError with
    Go's output when the build fails.
    """
    root = cache_dir / f"stripe-mock-{version}"
    binary = root / "stripe-mock"
    marker = root / ".complete"
    if marker.exists() and binary.is_file():
        return binary
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".stripe-mock.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and binary.is_file():
            return binary
        go = _go()
        staging = Path(tempfile.mkdtemp(prefix="stripe-mock-", dir=cache_dir))
        try:
            logger.info("Building stripe-mock %s with %s into %s", version, go, root)
            env = go_environment(staging)
            env["GOBIN"] = str(staging / "bin")
            done = subprocess.run(  # noqa: S603 - argv is built by us, never a shell
                [
                    go,
                    "install",
                    "-trimpath",
                    "-ldflags",
                    f"-X main.version={version}",
                    f"{STRIPE_MOCK_MODULE}@{version}",
                ],
                cwd=staging,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=900,
            )
            built = staging / "bin" / "stripe-mock"
            if done.returncode != 0 or not built.is_file():
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
                raise ServiceStartError(
                    f"go install could not build stripe-mock {version} (exit {done.returncode}):\n{tail}"
                )
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            built.rename(binary)
            marker.touch()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return binary


def _probe(url: str) -> int | None:
    """The HTTP status of reading the balance from ``url``, None while nothing answers."""
    request = urllib.request.Request(f"{url}/v1/balance")  # noqa: S310 - our own http URL
    request.add_header("Authorization", f"Bearer {_PROBE_KEY}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


class EmbeddedStripe(EmbeddedService):
    """stripe-mock serving Stripe's API on 127.0.0.1 over HTTP, validating every request.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. The process is
    SIGKILLed by the kernel if the starting process dies first. :attr:`start_seconds`
    says how long the last start took.

    stripe-mock opens HTTPS on ``[::]:12112`` as well unless told otherwise, and
    ``-http-addr`` does not tell it (only ``-http``/``-http-port``, which bind every
    interface): so HTTPS goes to a unix socket in this instance's own folder, which keeps
    it off the network and lets several instances run side by side.
    """

    stop_signal = signal.SIGTERM
    stop_timeout = 10.0

    def __init__(self, binary: Path, *, keep_dir: bool = False) -> None:
        self.binary = binary
        self.keep_dir = keep_dir
        self.workdir = Path(tempfile.mkdtemp(prefix="streamapp-stripe-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_seconds: float | None = None
        self._proc: ChildProcess | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start stripe-mock and wait until it answers a balance read."""
        started = time.monotonic()
        argv = [
            str(self.binary),
            "-http-addr",
            f"127.0.0.1:{self.port}",
            "-https-unix",
            str(self.workdir / "https.sock"),
        ]
        self._proc = ChildProcess("stripe-mock", argv, log_path=self.workdir / "stripe-mock.log", cwd=self.workdir)
        deadline = started + timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise ServiceStartError(
                    f"stripe-mock exited with code {code} during start-up:\n{self._proc.log_tail()}"
                )
            status = _probe(self.url)
            if status == 200:
                self.start_seconds = time.monotonic() - started
                logger.info("Stripe API (stripe-mock) up on %s in %.2fs", self.url, self.start_seconds)
                return
            if status is not None:
                tail = self._proc.log_tail()
                self.stop()
                raise ServiceStartError(f"stripe-mock answered the balance probe with HTTP {status}:\n{tail}")
            time.sleep(0.05)
        tail = self._proc.log_tail()
        self.stop()
        raise ServiceStartError(f"stripe-mock did not answer within {timeout:.0f}s:\n{tail}")
