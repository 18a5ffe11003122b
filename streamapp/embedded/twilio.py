"""Twilio's REST API contract served locally by Prism, for the SMS tests and ``streamapp run``.

``tools/twilio/package-lock.json`` pins Stoplight's Prism (an OpenAPI mock server that
validates every request against the document) and ``@twilio-alpha/mcp``, which ships
Twilio's own OpenAPI documents (``twilio-oai``). :func:`ensure_prism` runs ``npm ci`` into
``<cache_dir>/twilio-<lock digest>/`` once, like the Kafka jars; :class:`EmbeddedTwilio`
runs ``prism mock`` on the 2010-04-01 API (Accounts, Messages) on 127.0.0.1.

What Prism checks, and what it does not (the document decides):

* a request that breaks the contract (missing ``To``, a malformed account or messaging
  service SID in the path or form body, a wrong type or enum, no Basic auth) gets
  HTTP 422 (401 for auth) with an RFC 9457 problem body listing the violations;
* ``To`` and ``From`` carry ``format: phone-number``, which Prism does not know and skips:
  any string passes there, as does a Basic auth of any account for any path;
* a valid request gets the document's first example (status 201, sid ``SMaaaa...``),
  whatever was sent: the response does not echo the request.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
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

REPO_ROOT = Path(__file__).resolve().parents[2]
TWILIO_TOOLS = REPO_ROOT / "tools" / "twilio"

#: Inside the installed folder: Prism's command-line entry point and Twilio's 2010-04-01 API document.
PRISM_JS = Path("node_modules/@stoplight/prism-cli/dist/index.js")
TWILIO_SPEC = Path("node_modules/@twilio-alpha/mcp/twilio-oai/spec/json/twilio_api_v2010.json")

#: An account SID of the document's shape, for the readiness probe (Prism accepts any Basic auth).
_PROBE_ACCOUNT = "AC" + "0" * 32


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ConfigurationError(
            f"'{tool}' is not on PATH; the local Twilio API (Prism) needs Node.js 20+ and npm "
            "(or set STREAMAPP_TWILIO_API_URL to a running one)"
        )
    return path


def ensure_prism(cache_dir: Path, tools: Path = TWILIO_TOOLS) -> Path:
    """The folder holding ``node_modules`` with Prism and Twilio's document, running ``npm ci`` on first use.

    Keyed by the digest of ``package-lock.json``: changing a pinned version installs a new
    folder. Safe to call from several processes at once (a file lock serialises them).
    Install scripts are not run (none of the packages needs one). Raises ServiceStartError
    with npm's output when the install fails.
    """
    lock_file = tools / "package-lock.json"
    if not lock_file.is_file() or not (tools / "package.json").is_file():
        raise ConfigurationError(
            f"package.json / package-lock.json not found in {tools}; run streamapp from its repository"
        )
    digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()[:12]
    root = cache_dir / f"twilio-{digest}"
    marker = root / ".complete"
    if marker.exists():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".twilio.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return root
        npm = _require("npm")
        _require("node")
        staging = Path(tempfile.mkdtemp(prefix="twilio-mock-", dir=cache_dir))
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(tools / name, staging / name)
        logger.info("Installing Prism and Twilio's OpenAPI documents from %s into %s", lock_file, root)
        done = subprocess.run(  # noqa: S603 - argv is built by us, never a shell
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=staging,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not (staging / PRISM_JS).is_file() or not (staging / TWILIO_SPEC).is_file():
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise ServiceStartError(
                f"npm ci could not install Prism and Twilio's documents (exit {done.returncode}):\n{tail}"
            )
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
        marker.touch()
    return root


def _probe(url: str) -> int | None:
    """The HTTP status of fetching an account from ``url``, None while nothing answers."""
    request = urllib.request.Request(f"{url}/2010-04-01/Accounts/{_PROBE_ACCOUNT}.json")  # noqa: S310 - our own http URL
    basic = base64.b64encode(f"{_PROBE_ACCOUNT}:probe".encode()).decode()
    request.add_header("Authorization", f"Basic {basic}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


class EmbeddedTwilio(EmbeddedService):
    """Prism mocking Twilio's 2010-04-01 API on 127.0.0.1, validating every request.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. The Node.js process
    is SIGKILLed by the kernel if the starting process dies first. :attr:`start_seconds`
    says how long the last start took (Prism parses a 2 MB document first).
    """

    stop_signal = signal.SIGTERM
    stop_timeout = 10.0

    def __init__(self, root: Path, *, keep_dir: bool = False) -> None:
        self.root = root
        self.keep_dir = keep_dir
        self.workdir = Path(tempfile.mkdtemp(prefix="streamapp-twilio-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_seconds: float | None = None
        self._proc: ChildProcess | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start Prism and wait until it answers an account fetch."""
        started = time.monotonic()
        argv = [
            _require("node"),
            str(self.root / PRISM_JS),
            "mock",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            # Static answers: the document's examples, the same for every run.
            "--dynamic=false",
            "--errors",
            str(self.root / TWILIO_SPEC),
        ]
        self._proc = ChildProcess("prism", argv, log_path=self.workdir / "prism.log", cwd=self.workdir)
        deadline = started + timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise ServiceStartError(f"Prism exited with code {code} during start-up:\n{self._proc.log_tail()}")
            status = _probe(self.url)
            if status == 200:
                self.start_seconds = time.monotonic() - started
                logger.info("Twilio API (Prism) up on %s in %.1fs", self.url, self.start_seconds)
                return
            if status is not None:
                tail = self._proc.log_tail()
                self.stop()
                raise ServiceStartError(f"Prism answered the account probe with HTTP {status}:\n{tail}")
            time.sleep(0.1)
        tail = self._proc.log_tail()
        self.stop()
        raise ServiceStartError(f"Prism did not answer within {timeout:.0f}s:\n{tail}")
