"""HTTP endpoints of a worker: liveness and readiness for orchestrators."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import faust
from faust.tables.manager import TableManager
from faust.web import Request, Response, View


def is_ready(app: faust.App, checks: Sequence[Callable[[], bool]] = ()) -> bool:
    """True once table recovery has completed, no rebalance is under way and every check passes."""
    # The abstract TableManagerT does not declare .recovery; the concrete manager has it.
    recovery_done = cast(TableManager, app.tables).recovery.completed.is_set()
    return bool(recovery_done and not app.rebalancing and not app.in_recovery and all(c() for c in checks))


def install_health_views(app: faust.App, checks: Sequence[Callable[[], bool]] = ()) -> None:
    """Add ``/healthz`` (the process serves HTTP) and ``/readyz`` (503 until ready)."""

    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        ready = is_ready(app, checks)
        body: dict[str, Any] = {
            "ready": ready,
            "rebalancing": bool(app.rebalancing),
            "recovering": bool(app.in_recovery),
        }
        return web.json(body, status=200 if ready else 503)
