"""Run ``streamapp`` commands as users do, without paying for Python's imports on every command.

A zygote process imports the command line once, then forks a fresh process for each command,
which runs ``streamapp.cli.main.main()`` (the console script) with that command's arguments,
environment and output files, and exits with its status. Each command is still its own
process (its own settings, logging, event loop and exit code); only the imports are shared,
which saves one to two seconds of start-up per command on a loaded two-core machine.

A command may use 1 GiB more address space than the zygote: a regression that allocates
gigabytes fails with MemoryError instead of taking the machine's memory. The zygote is
single-threaded (so forking it is safe) and exits when its standard input closes, so it never
outlives the test process.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.harness.services import REPO_ROOT

#: How long one command may take before the test fails (and the command is killed).
COMMAND_TIMEOUT = 60.0


def serve() -> None:
    """The zygote: one JSON request per line in, the child's pid then its exit status out."""
    import resource  # noqa: PLC0415 - the zygote's own imports, not the test process's
    import traceback  # noqa: PLC0415

    import streamapp.cli.main  # noqa: PLC0415

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            in_use = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
            resource.setrlimit(resource.RLIMIT_AS, (in_use + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = ["streamapp", *request["args"]]
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(request["out"], os.O_WRONLY), 1)
            os.dup2(os.open(request["err"], os.O_WRONLY), 2)
            code = 0
            try:
                streamapp.cli.main.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            except BaseException:  # noqa: BLE001 - what escapes main() is printed, as the interpreter would
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        print(json.dumps(pid), flush=True)
        print(json.dumps(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])), flush=True)


class Zygote:
    """The test side of a zygote (see the module docstring); output files go under ``tmp``.
    Not thread-safe: one per thread."""

    def __init__(self, tmp: Path, timeout: float = COMMAND_TIMEOUT) -> None:
        self.tmp = tmp
        self.timeout = timeout
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        self._pending = b""

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _answer(self, deadline: float) -> Any:
        """The zygote's next line, or None once ``deadline`` (monotonic) has passed."""
        assert self.process.stdout is not None
        while b"\n" not in self._pending:
            ready, _, _ = select.select([self.process.stdout], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                return None
            chunk = os.read(self.process.stdout.fileno(), 4096)
            assert chunk, "the zygote exited"
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, args: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """``streamapp *args`` under ``env``, in a fresh forked process; fails after ``timeout`` seconds."""
        assert self.process.stdin is not None
        out, err = (self.tmp / f"command-{uuid.uuid4().hex}.{name}" for name in ("out", "err"))
        out.touch()
        err.touch()
        request = {"args": list(args), "env": env, "out": str(out), "err": str(err)}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + self.timeout
        pid = self._answer(deadline)
        code = self._answer(deadline)
        if code is None:
            os.kill(pid, signal.SIGKILL)
            self._answer(time.monotonic() + 10)
            raise AssertionError(f"streamapp {' '.join(args)[:200]} did not finish within {self.timeout:.0f}s")
        done = subprocess.CompletedProcess(list(args), code, out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return done

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


if __name__ == "__main__":
    serve()
