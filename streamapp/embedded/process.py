"""Child processes that die with their parent, stop within a bound and keep a log."""

from __future__ import annotations

import abc
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

_PR_SET_PDEATHSIG = 1
_UNPRIVILEGED_USER = "nobody"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def unprivileged_user() -> pwd.struct_passwd | None:
    """The account to run servers as when we are root (PostgreSQL refuses root); else None."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(_UNPRIVILEGED_USER)


def _child_setup(death_signal: int, user: pwd.struct_passwd | None, parent: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        # Own session: a Ctrl-C in the terminal reaches the supervisor, which stops
        # children in order, rather than every child at once.
        os.setsid()
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        # After setuid: a credential change clears the parent-death signal.
        libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return setup


class ChildProcess:
    """One server process with its output in ``log_path``.

    The process is spawned from the calling thread; the kernel delivers
    ``death_signal`` to it when that thread exits, so spawn from a long-lived
    thread (the main thread in practice).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        user: pwd.struct_passwd | None = None,
        death_signal: int = signal.SIGKILL,
    ) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - argv is built by us, never a shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                preexec_fn=_child_setup(death_signal, user, os.getpid()),  # noqa: PLW1509
            )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> int | None:
        """The exit code, or None while running."""
        return self._proc.poll()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process (the fault tests freeze and wake workers with SIGSTOP and SIGCONT)."""
        self._proc.send_signal(sig)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the process's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code."""
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                return self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        return self._proc.wait()


def run_once(
    argv: Sequence[str], *, user: pwd.struct_passwd | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion (as ``user`` if given), capturing its output."""
    return subprocess.run(  # noqa: S603 - argv is built by us, never a shell
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        preexec_fn=_child_setup(signal.SIGKILL, user, os.getpid()),
    )


class EmbeddedService(abc.ABC):
    """A service run as one child process in a throwaway folder: ``start`` it, ``stop`` it (its
    signal, then SIGKILL after ``stop_timeout`` seconds; the folder is removed unless
    ``keep_dir``), or use it as a context manager."""

    #: How the service is asked to stop, and how long it gets before SIGKILL.
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 10.0
    #: Keep the folder after stopping (to read its logs).
    keep_dir: bool = False
    workdir: Path
    _proc: ChildProcess | None

    @abc.abstractmethod
    def start(self) -> None:
        """Start the service and wait until it answers; ServiceStartError if it does not."""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def process(self) -> ChildProcess | None:
        """The running service's process; None before start and after stop."""
        return self._proc

    def stop(self) -> None:
        """Stop the process (see the class docstring) and remove its folder."""
        if self._proc is not None:
            self._proc.stop(self.stop_signal, timeout=self.stop_timeout)
            self._proc = None
        if not self.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
